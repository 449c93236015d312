"""Money and times as a reader of each language expects them."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from payrescue.i18n import format_money, format_when, use_language


@pytest.mark.parametrize(("minor", "currency", "language", "expected"), [
    (2900, "EUR", "de", "29,00\xa0€"),
    (2900, "EUR", "en", "€29.00"),
    (1500, "USD", "en", "$15.00"),  # not British English's "US$15.00"
    (1500, "USD", "de", "15,00\xa0$"),
    (2900, "GBP", "en", "£29.00"),
    (1000, "JPY", "en", "¥1,000"),
])
def test_money_has_the_right_symbol_per_currency_and_language(
        minor: int, currency: str, language: str, expected: str) -> None:
    assert format_money(minor, currency, language) == expected


@pytest.mark.parametrize(("language", "expected"), [
    ("de", "am Montag um 9:00 Uhr (Ortszeit Berlin)"),
    ("en", "on Monday at 9:00 (Berlin time)"),
])
def test_a_time_says_whose_clock_it_is(language: str, expected: str) -> None:
    with use_language(language):
        assert format_when(datetime(2026, 3, 9, 8, 0, tzinfo=UTC),
                           ZoneInfo("Europe/Berlin")) == expected
