"""`payrescue report` prints the figures of the page; charts speak the reader's language."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from datetime import date

import pytest

from payrescue import charts
from payrescue.cli import main
from payrescue.i18n import use_language
from payrescue.reports import RateBucket, WeekAmounts
from tests.conftest import TEST_SECRET
from tests.reports.scenario import seed

FORTNIGHT = ["report", "--since", "2026-03-23", "--until", "2026-04-05"]


@pytest.fixture
async def seeded_env(session, database_url: str, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    await seed(session)
    monkeypatch.setenv("PAYRESCUE_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYRESCUE_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("PAYRESCUE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PAYRESCUE_CONFIG", raising=False)


async def _run(args: list[str], capsysbinary) -> tuple[int, bytes, str]:  # noqa: ANN001
    status = await asyncio.to_thread(main, args)  # the CLI runs its own event loop
    out, err = capsysbinary.readouterr()
    return status, out, err.decode()


async def test_table_in_german(seeded_env, capsysbinary) -> None:  # noqa: ANN001
    status, out, _err = await _run([*FORTNIGHT, "--language", "de"], capsysbinary)
    assert status == 0
    text = out.decode()
    assert "23.03.2026 bis 05.04.2026 (Europe/Berlin)" in text
    assert re.search(r"Fehlgeschlagene Zahlungen \(eröffnete Fälle\)\s+6\n", text)
    assert re.search(r"Geretteter Betrag\s+158,00\xa0€\n", text)
    assert re.search(r"Rettungsquote der eröffneten Fälle\s+50,0\xa0%\n", text)
    assert re.search(r"Typische Zeit bis zur Zahlung \(Median\)\s+31,2 Std\.\n", text)
    assert re.search(r"Gespräche von Petra\s+2\n", text)


async def test_json_carries_the_raw_figures(seeded_env, capsysbinary) -> None:  # noqa: ANN001
    status, out, _err = await _run([*FORTNIGHT, "--format", "json"], capsysbinary)
    figures = json.loads(out)
    assert status == 0
    assert figures["period"]["start"] == "2026-03-22T23:00:00+00:00"
    assert figures["cases"]["at_risk_minor"] == {"EUR": 16500, "USD": 1500}
    assert figures["cases"]["recovery_rate"] == 0.5
    assert figures["cases"]["time_to_recovery_seconds"] == {"median": 112500.0,
                                                            "p90": 1123200.0}
    assert figures["conversations"]["first_response_business_seconds_median"] == 1050.0
    assert figures["churn"]["rate"] == 0.4


async def test_csv_opens_in_spreadsheets(seeded_env, capsysbinary) -> None:  # noqa: ANN001
    status, out, _err = await _run([*FORTNIGHT, "--format", "csv"], capsysbinary)
    assert status == 0 and out.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(out.decode("utf-8-sig"))))
    assert rows[0] == ["Section", "Figure", "Unit", "Value"]
    values = {(r[1], r[2]): r[3] for r in rows[1:]}
    assert values[("Amount at risk", "EUR")] == "165.00"
    assert values[("Median first response (business hours)", "hours")] == "0.29"


async def test_an_unreadable_period_is_one_clear_line(seeded_env, capsysbinary) -> None:  # noqa: ANN001
    status, out, err = await _run(["report", "--since", "last month"], capsysbinary)
    assert status == 1 and out == b""
    assert err.startswith("payrescue: since: expected a number of days such as 30d")


async def test_an_empty_database_reports_zeros(seeded_env, capsysbinary) -> None:  # noqa: ANN001
    status, out, _err = await _run(["report", "--since", "7d"], capsysbinary)
    assert status == 0
    assert b"Nothing happened in this period yet" in out
    assert re.search(rb"Failed payments \(cases opened\)\s+0\n", out)


def test_charts_format_numbers_for_the_reader() -> None:
    series = [RateBucket(date(2026, 3, 23), 3, 2), RateBucket(date(2026, 3, 24), 0, 0)]
    weeks = [WeekAmounts(date(2026, 3, 23), 123456, 5000)]
    with use_language("de"):
        rate = str(charts.recovery_rate_chart(series))
        amounts = str(charts.recovered_vs_lost_chart(weeks, "EUR"))
    assert "23. März: 66,7\xa0% von 3 Fällen gerettet" in rate
    assert "1.234,56\xa0€ gerettet" in amounts
    with use_language("en"):
        rate = str(charts.recovery_rate_chart(series))
    assert "23 Mar: 66.7\xa0% of 3 cases recovered" in rate
    assert rate.startswith("<svg") and "style=" not in rate


def test_charts_escape_what_they_show() -> None:
    svg = str(charts.reasons_chart({"<script>alert(1)</script>": 2}, {}))
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_charts_without_data_say_so() -> None:
    with use_language("en"):
        assert "No data in this period" in charts.reasons_chart({}, {})
        assert "No data in this period" in charts.recovered_vs_lost_chart([], None)
