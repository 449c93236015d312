from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from payrescue.hours import BusinessHours, DailyWindow, quiet_until

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
QUIET = DailyWindow.parse("21:00-08:00")


def test_a_message_due_at_23_local_waits_for_8_local() -> None:
    due = datetime(2026, 1, 14, 22, 0, tzinfo=UTC)  # 23:00 in Berlin
    assert quiet_until(due, QUIET, BERLIN) == datetime(2026, 1, 15, 7, 0, tzinfo=UTC)


def test_quiet_hours_follow_the_members_zone_not_the_servers() -> None:
    due = datetime(2026, 1, 14, 22, 0, tzinfo=UTC)  # 17:00 in New York: fine to send
    assert quiet_until(due, QUIET, NEW_YORK) == due
    early = datetime(2026, 1, 15, 3, 0, tzinfo=UTC)  # 22:00 in New York
    assert quiet_until(early, QUIET, NEW_YORK) == datetime(2026, 1, 15, 13, 0, tzinfo=UTC)


def test_quiet_hours_across_a_dst_change() -> None:
    # the night clocks go forward in Berlin (29 March 2026): 08:00 CEST is 06:00 UTC
    due = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)
    assert quiet_until(due, QUIET, BERLIN) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)


def test_business_hours_open_and_next_open() -> None:
    hours = BusinessHours.parse("mon-fri 09:00-17:00", BERLIN)
    friday_evening = datetime(2026, 1, 16, 18, 0, tzinfo=UTC)
    assert not hours.is_open(friday_evening)
    assert hours.next_open(friday_evening) == datetime(2026, 1, 19, 8, 0, tzinfo=UTC)
    monday_ten = datetime(2026, 1, 19, 9, 0, tzinfo=UTC)
    assert hours.is_open(monday_ten)
    assert hours.open_seconds_between(friday_evening, monday_ten) == 3600
