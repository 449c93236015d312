"""Small SVG charts drawn on the server: no chart library, no CDN, no script.

Each function returns one `<svg>` element as a string, ready to place in a page (it is
built from escaped text only, so it is marked safe with `markupsafe.Markup`). Styling uses
presentation attributes, not `style=`, so the console's Content-Security-Policy holds.
Numbers and dates are formatted for the reader's language; every bar and point carries a
`<title>` so hovering (or a screen reader) tells the exact figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape

import babel.dates
from markupsafe import Markup

from payrescue.i18n import _, babel_locale, format_money
from payrescue.report_export import format_number, format_percent
from payrescue.reports import RateBucket, WeekAmounts

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40
INK, MUTED, GRID = "#1d2330", "#6b7385", "#e2e5ec"
RECOVERED, LOST, ACCENT = "#1f8a4c", "#c8372d", "#2f5bd3"


@dataclass(frozen=True)
class _Frame:
    """The plotting area inside the margins."""

    left: float = LEFT
    top: float = TOP
    width: float = WIDTH - LEFT - RIGHT
    height: float = HEIGHT - TOP - BOTTOM

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def y(self, value: float, top_value: float) -> float:
        share = value / top_value if top_value else 0
        return self.bottom - share * self.height


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _text(x: float, y: float, content: str, *, anchor: str = "middle", size: int = 11,
          fill: str = MUTED) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{fill}">{escape(content)}</text>')


def _svg(label: str, body: list[str], height: int = HEIGHT) -> Markup:
    # every text and attribute in `body` went through escape() where it was built
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-label="{_attr(label)}" class="chart" font-family="system-ui, '
        f'sans-serif"><title>{escape(label)}</title>{"".join(body)}</svg>'
    )


def _day(day: date) -> str:
    return babel.dates.format_skeleton("MMMd", day, locale=babel_locale())


def _nice_top(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 2.5, 5 × 10^n)."""
    if value <= 0:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _label_every(count: int, room: int = 10) -> int:
    return max(1, -(-count // room))


def _no_data(label: str) -> Markup:
    frame = _Frame()
    return _svg(label, [_text(WIDTH / 2, frame.top + frame.height / 2,
                              _("No data in this period"), size=13)])


def recovery_rate_chart(series: Sequence[RateBucket]) -> Markup:
    """The share of cases opened in each day/week that are recovered so far (0–100 %)."""
    label = _("Recovery rate over time")
    if not any(bucket.opened for bucket in series):
        return _no_data(label)
    frame = _Frame()
    body = []
    for share in (0, 0.25, 0.5, 0.75, 1):
        y = frame.y(share, 1)
        body.append(f'<line x1="{frame.left}" x2="{frame.left + frame.width}" y1="{y:.1f}" '
                    f'y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_text(frame.left - 6, y + 4, format_percent(share, digits=0),
                          anchor="end"))
    step = frame.width / max(1, len(series))
    every = _label_every(len(series))
    points = []
    for index, bucket in enumerate(series):
        x = frame.left + step * (index + 0.5)
        if index % every == 0:
            body.append(_text(x, frame.bottom + 16, _day(bucket.first)))
        if bucket.rate is None:
            continue
        y = frame.y(bucket.rate, 1)
        points.append(f"{x:.1f},{y:.1f}")
        tip = _("%(day)s: %(rate)s of %(opened)s cases recovered") % {
            "day": _day(bucket.first), "rate": format_percent(bucket.rate),
            "opened": format_number(bucket.opened)}
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{ACCENT}">'
                    f'<title>{escape(tip)}</title></circle>')
    body.insert(0, f'<polyline points="{" ".join(points)}" fill="none" stroke="{ACCENT}" '
                   f'stroke-width="2"/>')
    return _svg(label, body)


def recovered_vs_lost_chart(weeks: Sequence[WeekAmounts], currency: str | None) -> Markup:
    """Two bars per week: amount recovered (green) and amount lost (red), in one currency."""
    label = _("Recovered and lost amount per week")
    if currency is None or not any(w.recovered or w.lost for w in weeks):
        return _no_data(label)
    frame = _Frame(height=HEIGHT - TOP - BOTTOM - 18)
    top = _nice_top(max(max(w.recovered, w.lost) for w in weeks))
    body = []
    for share in (0, 0.5, 1):
        y = frame.y(share * top, top)
        body.append(f'<line x1="{frame.left}" x2="{frame.left + frame.width}" y1="{y:.1f}" '
                    f'y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_text(frame.left - 6, y + 4, format_money(int(share * top), currency),
                          anchor="end", size=10))
    slot = frame.width / len(weeks)
    bar = min(28.0, slot * 0.35)
    for index, week in enumerate(weeks):
        middle = frame.left + slot * (index + 0.5)
        for offset, amount, colour, text in (
            (-bar, week.recovered, RECOVERED, _("recovered")),
            (0, week.lost, LOST, _("lost")),
        ):
            y = frame.y(amount, top)
            tip = _("Week of %(day)s: %(amount)s %(what)s") % {
                "day": _day(week.first), "amount": format_money(amount, currency), "what": text}
            body.append(f'<rect x="{middle + offset:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                        f'height="{frame.bottom - y:.1f}" fill="{colour}">'
                        f'<title>{escape(tip)}</title></rect>')
        if index % _label_every(len(weeks), 8) == 0:
            body.append(_text(middle, frame.bottom + 16, _day(week.first)))
    legend_y = HEIGHT - 8
    for x, colour, text in ((frame.left, RECOVERED, _("Recovered")),
                            (frame.left + 140, LOST, _("Lost"))):
        body.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" '
                    f'fill="{colour}"/>')
        body.append(_text(x + 18, legend_y, text, anchor="start", fill=INK))
    return _svg(label, body)


def reasons_chart(reasons: dict[str, int], labels: dict[str, str]) -> Markup:
    """Horizontal bars: how often each reason led to a handoff (`labels` translate keys)."""
    label = _("Reasons for handoff")
    if not reasons:
        return _no_data(label)
    row, label_width = 28, 250
    height = TOP + row * len(reasons) + 8
    top = max(reasons.values())
    room = WIDTH - label_width - RIGHT - 48
    body = []
    for index, (reason, count) in enumerate(reasons.items()):
        y = TOP + row * index
        length = room * count / top if top else 0
        name = labels.get(reason, reason.replace("_", " "))
        short = name if len(name) <= 36 else name[:35] + "…"  # the bar's title has it whole
        body.append(_text(label_width - 8, y + 15, short, anchor="end", size=12, fill=INK))
        body.append(f'<rect x="{label_width}" y="{y + 4}" width="{length:.1f}" height="16" '
                    f'fill="{ACCENT}"><title>{escape(f"{name}: {format_number(count)}")}'
                    f'</title></rect>')
        body.append(_text(label_width + length + 6, y + 16, format_number(count),
                          anchor="start", size=12, fill=INK))
    return _svg(label, body, height=height)
