"""The dashboard page and its CSV downloads, through the real console (log-in, roles, CSP)."""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from payrescue.agents import hash_password
from payrescue.app import init_app
from payrescue.clock import FakeClock
from payrescue.config import Settings
from payrescue.db.models import Agent
from payrescue.events import Bus
from tests.handoff.conftest import PASSWORD, log_in
from tests.reports.scenario import seed, utc

PERIOD = "from=2026-03-23&to=2026-04-05"


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)  # argon2 is slow on purpose: hash once for the module


@pytest.fixture
async def console(aiohttp_client, settings: Settings, engine: AsyncEngine,  # noqa: ANN001
                  session) -> AsyncIterator[TestClient]:  # noqa: ANN001
    await seed(session)
    clock = FakeClock(utc("2026-04-05T12:00"))
    async with session.begin():
        for email, name, role, language in (("owner@example.org", "Olga <Owner>", "admin", "de"),
                                            ("agent@example.org", "Ali", "agent", "en")):
            session.add(Agent(email=email, name=name, role=role, language=language,
                              password_hash=_password_hash(), created_at=clock.now()))
    app = init_app(settings, clock=clock, bus=Bus(), engine=engine, with_bot=False)
    yield await aiohttp_client(app)


async def test_signed_out_readers_are_sent_to_the_log_in(console: TestClient) -> None:
    response = await console.get("/console/dashboard", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/console/login")
    assert (await console.get("/console/dashboard/cases.csv",
                              allow_redirects=False)).status == 303


async def test_admin_reads_every_figure_in_german(console: TestClient) -> None:
    await log_in(console, "owner@example.org")
    response = await console.get(f"/console/dashboard?{PERIOD}")
    assert response.status == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    page = await response.text()
    assert "Rettungsquote" in page or "Dashboard" in page
    for figure in ("165,00\xa0€", "158,00\xa0€", "50,0\xa0%", "107,00\xa0€", "40,0\xa0%",
                   "66,7\xa0%", "18 Min.", "1,5 Std.", "3,67", "Petra", "Jonas"):
        assert figure in page, figure
    assert page.count("<svg") == 3 and "<script" not in page.split("</head>")[1]
    assert "figures.csv" in page and "cases.csv" in page


async def test_admin_sees_ratings_per_agent_and_comments(console: TestClient) -> None:
    await log_in(console, "owner@example.org")
    page = await (await console.get(f"/console/dashboard?{PERIOD}")).text()
    assert "3,5 ★ (2)" in page and "4,0 ★ (1)" in page  # Petra and Jonas, in German
    comments = page[page.index('id="rating-comments"'):]
    assert "Das hat &lt;b&gt;zu&lt;/b&gt; lange gedauert" in comments
    assert '/console/conversations/3"' in comments


async def test_agents_see_figures_but_no_exports_or_colleagues(console: TestClient) -> None:
    await log_in(console, "agent@example.org")
    page = await (await console.get(f"/console/dashboard?{PERIOD}")).text()
    assert "€158.00" in page and "50.0\xa0%" in page
    assert "cases.csv" not in page and "Petra" not in page
    assert (await console.get(f"/console/dashboard/cases.csv?{PERIOD}")).status == 403
    assert (await console.get(f"/console/dashboard/figures.csv?{PERIOD}")).status == 403


async def test_an_empty_period_shows_zeros_and_a_note(console: TestClient) -> None:
    await log_in(console, "agent@example.org")
    response = await console.get("/console/dashboard?from=2025-01-01&to=2025-01-31")
    assert response.status == 200
    page = await response.text()
    assert "Nothing happened in this period yet" in page
    assert "No data in this period" in page


async def test_a_bad_period_is_explained_and_the_default_shown(console: TestClient) -> None:
    await log_in(console, "agent@example.org")
    for query in ("days=12", "from=2026-04-05&to=2026-03-01", "from=yesterday&to=2026-03-01",
                  "from=2026-03-01"):
        response = await console.get(f"/console/dashboard?{query}")
        assert response.status == 400, query
        page = await response.text()
        assert 'role="alert"' in page and "Last 30 days" in page


async def test_figures_csv_for_german_spreadsheets(console: TestClient) -> None:
    await log_in(console, "owner@example.org")
    response = await console.get(f"/console/dashboard/figures.csv?{PERIOD}&comma=1")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "payrescue-figures-2026-03-23_2026-04-05.csv" in response.headers[
        "Content-Disposition"]
    body = await response.read()
    assert body.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["Bereich", "Kennzahl", "Einheit", "Wert"]
    values = {(r[1], r[2]): r[3] for r in rows[1:]}
    assert values[("Gefährdeter Betrag", "EUR")] == "165,00"
    assert values[("Geretteter Betrag", "EUR")] == "158,00"
    assert values[("Rettungsquote der eröffneten Fälle", "%")] == "50,0"
    assert values[("Quote der unfreiwilligen Abwanderung", "%")] == "40,0"


async def test_cases_csv_with_filters(console: TestClient) -> None:
    await log_in(console, "owner@example.org")
    response = await console.get(
        f"/console/dashboard/cases.csv?{PERIOD}&status=recovered&comma=0")
    rows = list(csv.reader(io.StringIO((await response.read()).decode("utf-8-sig"))))
    assert rows[0][:3] == ["Fall", "Mitglied", "Anbieter"]
    assert [(r[0], r[5], r[9], r[10]) for r in rows[1:]] == [
        ("3", "29.00", "31.00", "Team"), ("2", "49.00", "", "ohne Kontakt"),
        ("1", "29.00", "", "Bot")]
    assert {r[3] for r in rows[1:]} == {"gerettet"}  # values in German too, not "recovered"
    assert rows[1][7] == "2026-03-28T21:00:00+01:00"  # local time, with its offset
    assert "example.org" not in (await response.read()).decode()
    for bad in ("status=paid", "currency=euro", "attribution=magic", "category=Robert'); --"):
        response = await console.get(f"/console/dashboard/cases.csv?{PERIOD}&{bad}")
        assert response.status == 400, bad
