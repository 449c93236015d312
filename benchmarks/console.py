"""Agent console speed in PostgreSQL: the queue page with 10,000 open conversations and
1,000 members' histories (target p99 < 100 ms), and a member's message reaching an agent's
live stream while 200 streams are open (target p99 < 50 ms).

Fills a scratch database with generate_series SQL, serves the real console over HTTP and
measures from a client: page requests end to end (session, queries, template); for the
relay, from the moment the bot side starts storing the member's message (insert, commit,
`message.created` on the bus) until the line arrives in the agent's SSE stream.
Run: `python -m benchmarks console` (PAYRESCUE_BENCH_POSTGRES_URL names the server;
default postgresql+asyncpg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime

from aiohttp import ClientResponse, ClientSession, ClientTimeout, CookieJar, TCPConnector
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from benchmarks._postgres import migrate_and_fill, scratch_database
from payrescue.agents import add_agent
from payrescue.app import init_app
from payrescue.config import load_settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.db.models import Message
from payrescue.events import Event
from payrescue.keys import BUS, SESSIONMAKER

SIZES = {"members": 1_000, "conversations": 10_000, "history": 50}  # 50 lines per member
PAGE_RUNS = 200
STREAMS = 200
RELAYS = 300
PASSWORD = "benchmark password 123"
TOKEN = re.compile(r'name="csrf-token" content="([^"]+)"')

FILL = [
    "SELECT setseed(0.7)",
    """INSERT INTO members (id, email, name, language, opted_out, unreachable, created_at)
       SELECT g, 'm' || g || '@example.org', 'Member ' || g,
              CASE WHEN g % 3 = 0 THEN 'en' ELSE 'de' END, false, false,
              now() - interval '400 days'
       FROM generate_series(1, :members) g""",
    """INSERT INTO telegram_links (member_id, chat_id, telegram_user_id, linked_at)
       SELECT g, 900000 + g, 900000 + g, now() FROM generate_series(1, :members) g""",
    """INSERT INTO recovery_cases (id, member_id, provider, invoice_ref, status, amount_minor,
            currency, attempt_count, decline_category, action_required, held, dunning_stage,
            opened_at, last_failure_at, updated_at)
       SELECT g, g, 'stripe', 'in_' || g, 'open', 1900 + (g % 5) * 1000, 'EUR', 1 + g % 4,
              'insufficient_funds', false, false, g % 3, now() - interval '3 days',
              now() - interval '3 days', now()
       FROM generate_series(1, :members) g""",
    """INSERT INTO agents (id, email, name, password_hash, role, language, available, max_open,
            failed_logins, created_at)
       SELECT g, 'agent' || g || '@example.org', 'Agent ' || g, 'x', 'agent', 'de', false, 5, 0,
              now() FROM generate_series(2, 11) g""",
    # 10,000 open conversations: most waiting, every fifth assigned
    """INSERT INTO conversations (id, member_id, case_id, status, priority, handoff_reasons,
            not_understood, assigned_agent_id, waiting_since, created_at, updated_at)
       SELECT g, 1 + g % :members, 1 + g % :members,
              CASE WHEN g % 5 = 0 THEN 'assigned' ELSE 'waiting' END,
              (ARRAY[10, 20, 40, 80])[1 + g % 4],
              '["asked_for_human", "large_amount"]'::json, 0,
              CASE WHEN g % 5 = 0 THEN 2 + g % 10 END,
              now() - random() * interval '2 hours', now() - interval '1 day', now()
       FROM generate_series(1, :conversations) g""",
    # conversation c belongs to member 1 + c % members
    """INSERT INTO messages (conversation_id, member_id, sender, channel, kind, text,
            created_at)
       SELECT 1 + (g % :members), 1 + (1 + g % :members) % :members,
              (ARRAY['member', 'bot', 'agent'])[1 + g % 3], 'telegram', 'text',
              'Nachricht ' || g, now() - (g % 10000) * interval '1 minute'
       FROM generate_series(1, CAST(:members AS integer) * CAST(:history AS integer)) g""",
]
SEQUENCES = ("members", "recovery_cases", "agents", "conversations", "messages",
             "telegram_links")




async def _fill(url: str) -> None:
    seconds = await migrate_and_fill(url, FILL, SIZES, SEQUENCES)
    print(f"filled {SIZES['conversations']:,} open conversations, "
              f"{SIZES['members'] * SIZES['history']:,} messages of {SIZES['members']:,} "
              f"members in {seconds:.1f} s")


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"p50 {statistics.median(ordered) * 1000:6.1f} ms, "
            f"p99 {p99 * 1000:6.1f} ms ({len(ordered)} runs)")


async def _log_in(browser: ClientSession) -> None:
    token = TOKEN.search(await (await browser.get("/console/login")).text())
    assert token, "no CSRF token on the log-in page"  # noqa: S101
    response = await browser.post("/console/login", allow_redirects=False, data={
        "email": "agent@example.org", "password": PASSWORD, "csrf_token": token.group(1)})
    assert response.status == 303, response.status  # noqa: S101


async def _time_pages(browser: ClientSession) -> None:
    for label, path in (("queue, waiting", "/console/queue"),
                        ("queue, all open", "/console/queue?view=open"),
                        ("queue, search", "/console/queue?view=open&q=member%2042"),
                        ("conversation view", "/console/conversations/42")):
        samples = []
        for _ in range(PAGE_RUNS):
            started = time.perf_counter()
            response = await browser.get(path)
            await response.read()
            samples.append(time.perf_counter() - started)
            assert response.status == 200, response.status  # noqa: S101
        print(f"{label:18}: {_percentiles(samples)}")


async def _read_stream(response: ClientResponse, arrived: dict[int, asyncio.Future]) -> None:
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("id:"):
            future = arrived.get(int(line[3:].strip()))
            if future is not None and not future.done():
                future.set_result(time.perf_counter())


async def _time_relay(server: TestServer, browser: ClientSession) -> None:
    app = server.app
    sessions = app[SESSIONMAKER]
    arrived: dict[int, asyncio.Future] = {}
    readers = []
    streams = []
    async with sessions() as db:
        newest = await db.scalar(select(func.max(Message.id)))
    for conversation_id in range(1, STREAMS + 1):
        # after the newest line: no catch-up burst, only what arrives from now on
        response = await browser.get(
            f"/console/stream/conversations/{conversation_id}?after={newest}",
            headers={"Accept": "text/event-stream"}, timeout=ClientTimeout(total=None))
        streams.append(response)
        readers.append(asyncio.create_task(_read_stream(response, arrived)))
    print(f"{app[BUS].subscriber_count} live streams open")
    samples = []
    loop = asyncio.get_running_loop()
    for n in range(RELAYS):
        conversation_id = 1 + n % STREAMS
        started = time.perf_counter()
        async with sessions() as db, db.begin():
            message = Message(conversation_id=conversation_id,
                              member_id=1 + conversation_id % SIZES["members"],
                              sender="member", text=f"Frage {n}", created_at=datetime.now(UTC))
            db.add(message)
        arrived[message.id] = loop.create_future()
        await app[BUS].publish(Event("message.created", {
            "conversation_id": conversation_id, "message_id": message.id,
            "sender": "member"}))
        samples.append(await asyncio.wait_for(arrived[message.id], 10) - started)
    print(f"message → stream  : {_percentiles(samples)} with {STREAMS} streams open")
    for reader in readers:
        reader.cancel()
    for response in streams:
        response.close()


async def main() -> None:
    async with scratch_database() as url:
        await _fill(url)
        with tempfile.TemporaryDirectory() as data_dir:
            settings = load_settings(database_url=url, demo=True, data_dir=data_dir)
            engine = create_engine(url, pool_size=20)
            async with create_sessionmaker(engine)() as session, session.begin():
                await add_agent(session, email="agent@example.org", name="Agent", role="agent",
                                password=PASSWORD, now=datetime.now(UTC), language="de")
            server = TestServer(init_app(settings, engine=engine, with_bot=False))
            await server.start_server()
            try:
                async with ClientSession(base_url=str(server.make_url("")),
                                         cookie_jar=CookieJar(unsafe=True),
                                         connector=TCPConnector(limit=0)) as browser:
                    await _log_in(browser)
                    await _time_pages(browser)
                    await _time_relay(server, browser)
            finally:
                await server.close()
                await engine.dispose()
