"""Business hours and quiet hours, computed in the zone they belong to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPEC = re.compile(
    r"^\s*(?P<d1>[a-z]{3})(?:-(?P<d2>[a-z]{3}))?\s+"
    r"(?P<h1>\d{1,2}):(?P<m1>\d{2})-(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*$"
)


@dataclass(frozen=True)
class DailyWindow:
    """A time-of-day window; `start > end` means it runs over midnight (21:00-08:00)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> DailyWindow:
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
        if not match:
            raise ValueError("expected HH:MM-HH:MM, for example 21:00-08:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
            raise ValueError("hours run from 00:00 to 24:00")
        return cls(time(h1, m1), time(0, 0) if h2 == 24 else time(h2, m2))

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


@dataclass(frozen=True)
class BusinessHours:
    days: frozenset[int]
    window: DailyWindow
    zone: ZoneInfo

    @classmethod
    def parse(cls, text: str, zone: ZoneInfo) -> BusinessHours:
        match = _SPEC.match(text.lower())
        if not match or match["d1"] not in DAYS or (match["d2"] and match["d2"] not in DAYS):
            raise ValueError("expected days and hours such as 'mon-fri 09:00-17:00'")
        first = DAYS.index(match["d1"])
        last = DAYS.index(match["d2"] or match["d1"])
        days = frozenset(range(first, last + 1)) if first <= last else frozenset(
            [*range(first, 7), *range(0, last + 1)]
        )
        window = DailyWindow.parse(f"{match['h1']}:{match['m1']}-{match['h2']}:{match['m2']}")
        return cls(days, window, zone)

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        return local.weekday() in self.days and self.window.contains(local.time())

    def next_open(self, moment: datetime) -> datetime:
        """The first moment at or after `moment` when the team is at work (aware UTC)."""
        if self.is_open(moment):
            return moment
        local = moment.astimezone(self.zone)
        for offset in range(8):
            day = (local + timedelta(days=offset)).date()
            if day.weekday() not in self.days:
                continue
            opening = datetime.combine(day, self.window.start, self.zone)
            if opening >= local:
                return opening.astimezone(UTC)
        raise ValueError("business hours contain no working day")

    def open_seconds_between(self, start: datetime, end: datetime) -> float:
        """Seconds of business time between two moments (for response-time figures)."""
        total = 0.0
        cursor = start
        while cursor < end:
            if self.is_open(cursor):
                local = cursor.astimezone(self.zone)
                close = datetime.combine(local.date(), self.window.end, self.zone)
                if close <= local:
                    close += timedelta(days=1)
                stop = min(end, close.astimezone(UTC))
                total += (stop - cursor).total_seconds()
                cursor = stop
            else:
                cursor = self.next_open(cursor)
        return total


def quiet_until(moment: datetime, quiet: DailyWindow, zone: ZoneInfo) -> datetime:
    """When a message planned for `moment` may go out: at once, or when the quiet hours end."""
    local = moment.astimezone(zone)
    if not quiet.contains(local.time()):
        return moment
    wake = datetime.combine(local.date(), quiet.end, zone)
    if wake <= local:
        wake = datetime.combine(local.date() + timedelta(days=1), quiet.end, zone)
    return wake.astimezone(UTC)
