"""Dashboard speed with 100,000 cases and 1,000,000 messages in PostgreSQL (target < 1 s).

Fills a fresh database with generate_series SQL (seconds, not minutes), then times
`payrescue.reports.compute` alone and the whole page — log-in session, figures, charts and
template — through the real console over HTTP, for the 7-, 30- and 90-day and 365-day views.
Prints medians of several runs. Run: `python -m benchmarks dashboard`
(PAYRESCUE_BENCH_POSTGRES_URL, default postgresql+asyncpg://postgres@127.0.0.1:5432/test,
names the server; a scratch database is created there and dropped afterwards).
"""

from __future__ import annotations

import re
import statistics
import time
from datetime import UTC, datetime

from aiohttp import ClientSession, CookieJar, web
from aiohttp.test_utils import TestServer

from benchmarks._postgres import migrate_and_fill, scratch_database
from payrescue.agents import add_agent
from payrescue.app import init_app
from payrescue.clock import Clock
from payrescue.config import load_settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.reports import Period, compute

CASES, MESSAGES, MEMBERS, CONVERSATIONS = 100_000, 1_000_000, 20_000, 20_000
SIZES = {"members": MEMBERS, "cases": CASES, "conversations": CONVERSATIONS,
         "messages": MESSAGES}
RUNS = 7
PASSWORD = "benchmark password 123"

FILL = [
    "SELECT setseed(0.42)",
    """INSERT INTO members (id, email, name, language, opted_out, unreachable, created_at)
        SELECT g, 'm' || g || '@example.org', 'Member ' || g,
               CASE WHEN g % 3 = 0 THEN 'en' ELSE 'de' END, false, false,
               now() - interval '400 days'
        FROM generate_series(1, :members) g""",
    """INSERT INTO subscriptions (id, member_id, provider, external_id, amount_minor, currency,
                                   status, started_at, created_at)
        SELECT g, g, 'stripe', 'sub_' || g, 1900 + (g % 5) * 1000, 'EUR', 'active',
               now() - interval '400 days', now() - interval '400 days'
        FROM generate_series(1, :members) g""",
    """INSERT INTO recovery_cases (id, member_id, subscription_id, provider, invoice_ref,
            status, amount_minor, currency, attempt_count, decline_category, action_required,
            held, dunning_stage, opened_at, last_failure_at, recovered_at,
            recovered_amount_minor, attribution, lost_at, updated_at)
        SELECT g, 1 + g % :members, 1 + g % :members, 'stripe', 'in_' || g,
               CASE WHEN r < 0.55 THEN 'recovered' WHEN r < 0.8 THEN 'lost' ELSE 'open' END,
               1900 + (g % 5) * 1000, CASE WHEN g % 10 = 0 THEN 'USD' ELSE 'EUR' END, 1,
               (ARRAY['insufficient_funds','expired_card','issuer_declined','wrong_details',
                      'authentication_required','processing_error','fraud','unknown'])
                   [1 + g % 8],
               false, false, 0, opened, opened,
               CASE WHEN r < 0.55 THEN opened + r * interval '20 days' END, NULL,
               CASE WHEN r < 0.55 THEN (ARRAY['no_contact','bot','agent'])[1 + g % 3] END,
               CASE WHEN r >= 0.55 AND r < 0.8 THEN opened + interval '21 days' END, opened
        FROM (SELECT g, random() AS r, now() - random() * interval '365 days' AS opened
              FROM generate_series(1, :cases) g) s""",
    """INSERT INTO update_links (token_id, case_id, created_at, expires_at, first_opened_at,
                                 open_count)
       SELECT 't' || id, id, opened_at + interval '1 hour', opened_at + interval '8 days',
              CASE WHEN id % 2 = 0 THEN opened_at + interval '5 hours' END, id % 2
       FROM recovery_cases WHERE id % 5 <> 0""",
    """INSERT INTO agents (id, email, name, password_hash, role, language, available, max_open,
                            failed_logins, created_at)
        SELECT g, 'agent' || g || '@example.org', 'Agent ' || g, 'x', 'agent', 'de', false, 5,
               0, now() - interval '400 days'
        FROM generate_series(1, 10) g""",
    """INSERT INTO conversations (id, member_id, case_id, status, priority, handoff_reasons,
            not_understood, assigned_agent_id, resolved_at, rating, created_at, updated_at)
        SELECT g, g, g, 'resolved', 0, '[]', 0, NULL, t + interval '3 hours',
               CASE WHEN g % 3 = 0 THEN 1 + g % 5 END, t, t
        FROM (SELECT g, now() - random() * interval '365 days' AS t
              FROM generate_series(1, :conversations) g) s""",
    """INSERT INTO handoffs (conversation_id, reasons, priority, requested_at, claimed_at,
                             agent_id, first_response_at, ended_at, outcome)
       SELECT id, CASE WHEN id % 3 = 0 THEN '["asked_for_human"]'
                       WHEN id % 3 = 1 THEN '["not_understood", "large_amount"]'
                       ELSE '["needs_human"]' END::json,
              0, created_at, created_at + interval '10 minutes', 1 + id % 10,
              created_at + interval '10 minutes', created_at + interval '3 hours', 'resolved'
       FROM conversations WHERE id % 4 <> 0""",
    """INSERT INTO messages (conversation_id, sender, kind, text, created_at)
        SELECT 1 + g % :conversations, (ARRAY['member','bot','agent'])[1 + g % 3], 'text',
               'Nachricht ' || g, now() - (g % 525600) * interval '1 minute'
        FROM generate_series(1, :messages) g""",
]
SEQUENCES = ("members", "subscriptions", "recovery_cases", "update_links", "agents",
             "conversations", "handoffs", "messages")




async def _fill(url: str) -> None:
    seconds = await migrate_and_fill(url, FILL, SIZES, SEQUENCES)
    print(f"filled {CASES:,} cases, {MESSAGES:,} messages in "
              f"{seconds:.1f} s")


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:7.1f} ms"


async def _time_compute(url: str) -> None:
    settings = load_settings(database_url=url, demo=True)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    now = Clock().now()
    try:
        for days in (7, 30, 90, 365):
            period = Period.last_days(days, now, settings.zone)
            samples = []
            for _ in range(RUNS):
                started = time.perf_counter()
                async with sessions() as session:
                    figures = await compute(session, period, settings.hours, "en")
                samples.append(time.perf_counter() - started)
            print(f"figures, {days:3d} days ({figures.opened:6,} cases opened): "
                  f"median {_median_ms(samples)}")
    finally:
        await engine.dispose()


async def _time_page(url: str, data_dir: str) -> None:
    settings = load_settings(database_url=url, demo=True, data_dir=data_dir)
    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session, session.begin():
        await add_agent(session, email="owner@example.org", name="Owner", role="admin",
                        password=PASSWORD, now=datetime.now(UTC), language="de")
    app: web.Application = init_app(settings, engine=engine, with_bot=False)
    server = TestServer(app)
    await server.start_server()
    try:
        jar = CookieJar(unsafe=True)  # keep the session cookie of 127.0.0.1
        async with ClientSession(base_url=str(server.make_url("")), cookie_jar=jar) as browser:
            page = await (await browser.get("/console/login")).text()
            token = re.search(r'name="csrf-token" content="([^"]+)"', page)
            assert token, "no CSRF token on the log-in page"  # noqa: S101
            response = await browser.post("/console/login", data={
                "email": "owner@example.org", "password": PASSWORD,
                "csrf_token": token.group(1)}, allow_redirects=False)
            assert response.status == 303, response.status  # noqa: S101
            for days in (7, 30, 90):
                samples = []
                for _ in range(RUNS):
                    started = time.perf_counter()
                    response = await browser.get(f"/console/dashboard?days={days}")
                    body = await response.read()
                    samples.append(time.perf_counter() - started)
                    assert response.status == 200, response.status  # noqa: S101
                print(f"dashboard page over HTTP, {days:2d} days ({len(body) // 1024} KiB): "
                      f"median {_median_ms(samples)}")
    finally:
        await server.close()
        await engine.dispose()


async def main() -> None:
    import tempfile

    async with scratch_database() as url:
        await _fill(url)
        await _time_compute(url)
        with tempfile.TemporaryDirectory() as data_dir:
            await _time_page(url, data_dir)
