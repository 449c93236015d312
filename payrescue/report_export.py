"""The figures as rows, text table, JSON and CSV — the same rows for the CLI, the CSV and JSON.

`figure_rows()` turns `Figures` into labelled rows in the current language; the outputs only
format them: for people (`format_value`, the table), for spreadsheets (CSV: UTF-8 with a BOM
so Excel detects it, a header row, plain numbers — amounts in major units — and optionally a
decimal comma with `;` between fields for German spreadsheets) and for programs (JSON with
stable English keys and minor units).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import babel.dates
import babel.numbers

from payrescue import handoff_rules
from payrescue.billing import declines
from payrescue.billing.cases import attribution_label, status_label
from payrescue.i18n import _, babel_locale, format_money, lazy_gettext, ngettext
from payrescue.reports import CaseRow, Figures

COUNT, MONEY, PERCENT, DURATION, AVERAGE = "count", "money", "percent", "duration", "average"
BOM = "\ufeff"

ATTRIBUTION_LABELS = {
    "no_contact": lazy_gettext("Recovered without contact"),
    "bot": lazy_gettext("Recovered after bot messages only"),
    "agent": lazy_gettext("Recovered after an agent helped"),
    "unknown": lazy_gettext("Recovered, attribution unknown"),
}
LANGUAGE_LABELS = {"de": lazy_gettext("German"), "en": lazy_gettext("English")}


def label(table: dict[str, str], key: str) -> str:
    """A translated label for a stored key; keys we do not know yet read as words."""
    return _(table[key]) if key in table else key.replace("_", " ")


@dataclass(frozen=True)
class Row:
    section: str
    name: str
    kind: str
    value: float | int | None
    currency: str = ""


def figure_rows(figures: Figures) -> list[Row]:
    """Every figure as one labelled row (amounts: one row per currency)."""
    rows: list[Row] = []
    _failed_payments(figures, rows)
    section = _("By decline category")
    for group in figures.by_category:
        name = declines.label(group.key)
        rows += [Row(section, _("%(name)s: opened") % {"name": name}, COUNT, group.opened),
                 Row(section, _("%(name)s: recovered") % {"name": name}, COUNT,
                     group.recovered),
                 Row(section, _("%(name)s: recovery rate") % {"name": name}, PERCENT,
                     group.rate)]
    _links_and_conversations(figures, rows)
    section = _("Churn")
    rows += [Row(section, _("Subscriptions lost to failed payments"), COUNT, figures.churned),
             Row(section, _("Subscriptions active at the start"), COUNT,
                 figures.active_at_start),
             Row(section, _("Involuntary churn rate"), PERCENT, figures.churn_rate)]
    rows += _per_currency(section, _("Monthly recurring revenue saved"), figures.mrr_saved,
                          _usual_currency(figures))
    section = _("By language")
    for group in figures.by_language:
        name = label(LANGUAGE_LABELS, group.key)
        rows += [Row(section, _("%(name)s: opened") % {"name": name}, COUNT, group.opened),
                 Row(section, _("%(name)s: recovered") % {"name": name}, COUNT,
                     group.recovered),
                 Row(section, _("%(name)s: recovery rate") % {"name": name}, PERCENT,
                     group.rate)]
    _reach(figures, rows)
    return rows


def _per_currency(section: str, name: str, amounts: dict[str, int],
                  usual: str = "") -> list[Row]:
    """One row per currency; none at all reads as zero in the usual currency."""
    if not amounts:
        return [Row(section, name, MONEY, 0, usual)]
    return [Row(section, name, MONEY, amounts[c], c) for c in sorted(amounts)]


def _usual_currency(figures: Figures) -> str:
    return figures.currencies[0] if figures.currencies else ""


def _failed_payments(figures: Figures, rows: list[Row]) -> None:
    section = _("Failed payments")
    usual = _usual_currency(figures)
    rows.append(Row(section, _("Failed payments (cases opened)"), COUNT, figures.opened))
    rows += _per_currency(section, _("Amount at risk"), figures.at_risk, usual)
    rows.append(Row(section, _("Recovered cases"), COUNT, figures.recovered))
    rows += _per_currency(section, _("Recovered amount"), figures.recovered_amount, usual)
    rows.append(Row(section, _("Recovery rate of the cases opened"), PERCENT,
                    figures.recovery_rate))
    rows.append(Row(section, _("Lost cases"), COUNT, figures.lost))
    rows += _per_currency(section, _("Lost amount"), figures.lost_amount, usual)
    for key, count in figures.attribution.items():
        rows.append(Row(section, label(ATTRIBUTION_LABELS, key), COUNT, count))
    rows.append(Row(section, _("Median time to recovery"), DURATION,
                    figures.recovery_seconds_median))
    rows.append(Row(section, _("Time to recovery, 90th percentile"), DURATION,
                    figures.recovery_seconds_p90))


CHANNEL_LABELS = {"telegram": lazy_gettext("Telegram"), "email": lazy_gettext("E-mail"),
                  "none": lazy_gettext("no contact")}


def _reach(figures: Figures, rows: list[Row]) -> None:
    reach = figures.reach
    section = _("Reach")
    rows += [Row(section, _("Members"), COUNT, reach.members),
             Row(section, _("Members linked to Telegram"), COUNT, reach.linked),
             Row(section, _("Share linked to Telegram"), PERCENT, reach.linked_share),
             Row(section, _("Members no channel reaches"), COUNT, reach.unreached)]
    for channel, count in sorted(reach.reached_by_channel.items()):
        rows.append(Row(section, _("Members reached by %(channel)s") % {
            "channel": label(CHANNEL_LABELS, channel)}, COUNT, count))
    rows += [Row(section, _("E-mails sent"), COUNT, reach.emails_sent),
             Row(section, _("Update links opened from e-mails"), COUNT,
                 reach.email_links_opened),
             Row(section, _("E-mails bounced"), COUNT, reach.emails_bounced)]
    for channel, (opened, won) in sorted(reach.by_first_channel.items()):
        rows.append(Row(section, _("Recovery rate, first contact by %(channel)s") % {
            "channel": label(CHANNEL_LABELS, channel)}, PERCENT,
            won / opened if opened else None))


def _links_and_conversations(figures: Figures, rows: list[Row]) -> None:
    section = _("Update links")
    rows += [Row(section, _("Update links sent"), COUNT, figures.links_sent),
             Row(section, _("Update links opened"), COUNT, figures.links_opened),
             Row(section, _("Share of recoveries after an opened link"), PERCENT,
                 figures.share_after_open)]
    section = _("Conversations")
    rows.append(Row(section, _("Handoffs to a person"), COUNT, figures.handoffs))
    for reason, count in figures.handoff_reasons.items():
        rows.append(Row(section, _("Reason: %(reason)s") % {
            "reason": handoff_rules.label(reason)}, COUNT, count))
    rows += [Row(section, _("Median first response (business hours)"), DURATION,
                 figures.first_response_median),
             Row(section, _("Median resolution time (business hours)"), DURATION,
                 figures.resolution_median),
             Row(section, _("Satisfaction ratings"), COUNT, figures.csat_count),
             Row(section, _("Average satisfaction (1–5)"), AVERAGE, figures.csat_average)]
    for stars, count in figures.csat_distribution.items():
        rows.append(Row(section, ngettext("Rated %(num)d star", "Rated %(num)d stars", stars)
                        % {"num": stars}, COUNT, count))
    for load in figures.per_agent:
        rows.append(Row(section, _("Conversations of %(agent)s") % {"agent": load.name},
                        COUNT, load.conversations))


def format_percent(value: float | None, language: str | None = None, digits: int = 1) -> str:
    if value is None:
        return "–"
    pattern = "#,##0" + ("." + "0" * digits if digits else "") + "\xa0%"  # never wraps
    return babel.numbers.format_percent(value, pattern, locale=babel_locale(language))


def format_number(value: float | int, language: str | None = None, digits: int = 0) -> str:
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return babel.numbers.format_decimal(value, pattern, locale=babel_locale(language))


def format_duration(seconds: float | None, language: str | None = None) -> str:
    """35 min, 26.5 h, 13.0 days — the unit a person reads best for the size."""
    if seconds is None:
        return "–"
    if seconds < 3600:
        return _("%(n)s min") % {"n": format_number(round(seconds / 60), language)}
    if seconds < 48 * 3600:
        return _("%(n)s h") % {"n": format_number(seconds / 3600, language, 1)}
    return _("%(n)s days") % {"n": format_number(seconds / 86400, language, 1)}


def format_value(row: Row, language: str | None = None) -> str:
    if row.kind == MONEY:
        return format_money(int(row.value or 0), row.currency or "EUR", language) \
            if row.currency else format_number(0, language)
    if row.kind == PERCENT:
        return format_percent(row.value, language)
    if row.kind == DURATION:
        return format_duration(row.value, language)
    if row.kind == AVERAGE:
        return "–" if row.value is None else format_number(row.value, language, 2)
    return format_number(row.value or 0, language)


def period_title(figures: Figures, language: str | None = None) -> str:
    period = figures.period
    return _("%(first)s to %(last)s (%(zone)s)") % {
        "first": babel.dates.format_date(period.first, "medium", locale=babel_locale(language)),
        "last": babel.dates.format_date(period.last, "medium", locale=babel_locale(language)),
        "zone": period.zone.key,
    }


def render_table(figures: Figures, language: str | None = None) -> str:
    """A plain-text table for the terminal: section headings, figure, value."""
    rows = figure_rows(figures)
    width = max(len(row.name) for row in rows) + 2
    lines = [_("Recovery figures: %(period)s") % {"period": period_title(figures, language)}]
    if figures.empty:
        lines.append(_("Nothing happened in this period yet: no failed payments, "
                       "recoveries or conversations."))
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines += ["", section, "-" * len(section)]
        lines.append(f"{row.name:<{width}}{format_value(row, language)}")
    return "\n".join(lines) + "\n"


def figures_json(figures: Figures) -> dict[str, Any]:
    """Machine-readable: English keys, amounts in minor units, durations in seconds."""
    period = figures.period
    return {
        "period": {"first_day": period.first.isoformat(), "last_day": period.last.isoformat(),
                   "time_zone": period.zone.key, "start": period.start.isoformat(),
                   "end": period.end.isoformat()},
        "cases": {
            "opened": figures.opened, "at_risk_minor": figures.at_risk,
            "recovered": figures.recovered, "recovered_minor": figures.recovered_amount,
            "recovered_of_opened": figures.cohort_recovered,
            "recovery_rate": figures.recovery_rate,
            "lost": figures.lost, "lost_minor": figures.lost_amount,
            "attribution": figures.attribution,
            "time_to_recovery_seconds": {"median": figures.recovery_seconds_median,
                                         "p90": figures.recovery_seconds_p90},
        },
        "by_decline_category": [
            {"category": g.key, "opened": g.opened, "recovered": g.recovered, "rate": g.rate}
            for g in figures.by_category
        ],
        "update_links": {"sent": figures.links_sent, "opened": figures.links_opened,
                         "recovered_after_open": figures.recovered_after_open,
                         "share_of_recoveries_after_open": figures.share_after_open},
        "conversations": {
            "handoffs": figures.handoffs, "reasons": figures.handoff_reasons,
            "first_response_business_seconds_median": figures.first_response_median,
            "resolution_business_seconds_median": figures.resolution_median,
            "csat": {"count": figures.csat_count, "average": figures.csat_average,
                     "distribution": {str(k): v for k, v in figures.csat_distribution.items()}},
            "per_agent": [{"agent_id": a.agent_id, "name": a.name,
                           "conversations": a.conversations} for a in figures.per_agent],
        },
        "churn": {"lost_subscriptions": figures.churned,
                  "active_at_start": figures.active_at_start, "rate": figures.churn_rate,
                  "mrr_saved_minor": figures.mrr_saved},
        "by_language": [
            {"language": g.key, "opened": g.opened, "recovered": g.recovered, "rate": g.rate}
            for g in figures.by_language
        ],
        "reach": {
            "members": figures.reach.members, "linked_to_telegram": figures.reach.linked,
            "linked_share": figures.reach.linked_share, "unreached": figures.reach.unreached,
            "reached_by_channel": figures.reach.reached_by_channel,
            "emails_sent": figures.reach.emails_sent,
            "emails_bounced": figures.reach.emails_bounced,
            "email_links_opened": figures.reach.email_links_opened,
            "by_first_channel": {
                channel: {"opened": opened, "recovered": won,
                          "rate": won / opened if opened else None}
                for channel, (opened, won) in figures.reach.by_first_channel.items()},
        },
        "series": {
            "recovery_rate": [{"first_day": b.first.isoformat(), "opened": b.opened,
                               "recovered": b.recovered, "rate": b.rate}
                              for b in figures.rate_series],
            "weekly_amounts_currency": figures.chart_currency,
            "weekly_amounts_minor": [{"week": w.first.isoformat(), "recovered": w.recovered,
                                      "lost": w.lost} for w in figures.weekly_amounts],
        },
    }


def _spreadsheet_number(value: float | int | Decimal | None, decimal_comma: bool) -> str:
    if value is None:
        return ""
    text = str(value)
    return text.replace(".", ",") if decimal_comma else text


def _csv_value(row: Row) -> float | int | Decimal | None:
    if row.value is None:
        return None
    if row.kind == MONEY:
        return _major(int(row.value), row.currency)
    if row.kind == PERCENT:
        return round(row.value * 100, 1)
    if row.kind == DURATION:
        return round(row.value / 3600, 2)
    if row.kind == AVERAGE:
        return round(row.value, 2)
    return row.value


def _major(amount_minor: int, currency: str) -> Decimal:
    digits = babel.numbers.get_currency_precision(currency.upper()) if currency else 2
    return Decimal(amount_minor).scaleb(-digits)


def _unit(row: Row) -> str:
    return {MONEY: row.currency, PERCENT: "%", DURATION: _("hours")}.get(row.kind, "")


def _write_csv(header: list[str], rows: Iterable[list[str]], decimal_comma: bool) -> bytes:
    buffer = io.StringIO()
    buffer.write(BOM)
    writer = csv.writer(buffer, delimiter=";" if decimal_comma else ",", lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def figures_csv(figures: Figures, decimal_comma: bool = False) -> bytes:
    """One figure per line: section, figure, unit, value (plain number)."""
    header = [_("Section"), _("Figure"), _("Unit"), _("Value")]
    rows = ([row.section, row.name, _unit(row),
             _spreadsheet_number(_csv_value(row), decimal_comma)] for row in figure_rows(figures))
    return _write_csv(header, rows, decimal_comma)


def cases_csv(cases: Iterable[CaseRow], zone: ZoneInfo, decimal_comma: bool = False) -> bytes:
    """The cases list: ids, never names or e-mail addresses; times local, ISO 8601."""
    header = [_("Case"), _("Member"), _("Provider"), _("Status"), _("Decline category"),
              _("Amount"), _("Currency"), _("Opened"), _("Recovered"), _("Recovered amount"),
              _("Attribution"), _("Lost")]

    def when(moment: Any) -> str:
        return moment.astimezone(zone).isoformat(timespec="seconds") if moment else ""

    def amount(value: int | None, currency: str) -> str:
        return "" if value is None else _spreadsheet_number(_major(value, currency),
                                                             decimal_comma)

    # values in the reader's language, like the header: a German sheet reads "gerettet"
    rows = ([str(c.case_id), str(c.member_id), c.provider, status_label(c.status),
             declines.label(c.decline_category), amount(c.amount_minor, c.currency),
             c.currency, when(c.opened_at), when(c.recovered_at),
             amount(c.recovered_amount_minor, c.currency), attribution_label(
                 c.attribution), when(c.lost_at)] for c in cases)
    return _write_csv(header, rows, decimal_comma)

