"""Members writing while the database is away: nothing lost, one apology, a quiet log.

PostgreSQL only: the outage is real — a TCP proxy between the service and the server is cut
(connections drop, new ones are refused) and restored. SQLite is a file inside the process
with no connection to cut; its only "outage" is a write lock held past the 30 s busy timeout,
which a test cannot reach without waiting 30 s per try.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.keys import BOT_RUNNER
from bot.middlewares import MemberContextMiddleware
from bot.polling import MAX_PAUSE
from payrescue.clock import FakeClock
from payrescue.db import create_engine, create_sessionmaker
from payrescue.db.models import Conversation, Message
from payrescue.events import Event
from payrescue.keys import BUS
from tests.dbproxy import TcpProxy
from tests.harness import RunningService, eventually, running_service

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
MEMBERS = 3
MESSAGES = 4  # each member writes this many while the database is away
APOLOGY = "Sorry – something went wrong on our side just now"
# what a drill found: stored texts by member, apologies by chat, log lines, relay events
Drill = tuple[dict[int, list[str]], dict[int, int], list[logging.LogRecord], list[Event]]


@pytest.fixture
async def proxy(engine: AsyncEngine) -> AsyncIterator[TcpProxy]:
    url = engine.url
    async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy


async def _service(proxy: TcpProxy, engine: AsyncEngine, clock: FakeClock, tmp_path: Path,
                   *, webhook: bool) -> AsyncIterator[RunningService]:
    behind_proxy = create_engine(proxy.url_for(engine.url.render_as_string(hide_password=False)))
    try:
        async with running_service(engine=behind_proxy, clock=clock, data_dir=tmp_path,
                                   webhook=webhook) as svc:
            yield svc
    finally:
        await behind_proxy.dispose()


def _member_context(svc: RunningService) -> MemberContextMiddleware:
    [middleware] = [m for m in svc.app[BOT_RUNNER].dispatcher.update.outer_middleware
                    if isinstance(m, MemberContextMiddleware)]
    return middleware


async def _members_with_a_human(svc: RunningService) -> list[int]:
    """Linked members whose chat a human owns: every message they write is stored."""
    chats = []
    for number in range(MEMBERS):
        member = await svc.add_member(name=f"Member {number}", language="en")
        user = svc.create_user(f"Member{number}", language_code="en")
        await svc.link(member, user)
        before = len(svc.emulator.sent_messages(user["id"]))
        await svc.emulator.send_text(user["id"], "/human")
        await svc.emulator.wait_for_messages(user["id"], before + 1)
        chats.append(user["id"])
    async with svc.sessionmaker() as session:
        statuses = (await session.scalars(select(Conversation.status))).all()
    assert sorted(statuses) == ["waiting"] * MEMBERS
    # each "/human" is on the timeline once its update committed, just after the answer
    async with asyncio.timeout(5):
        while True:
            async with svc.sessionmaker() as session:
                if await session.scalar(select(func.count()).select_from(Message).where(
                        Message.sender == "member", Message.text == "/human")) >= MEMBERS:
                    break
            await asyncio.sleep(0.02)
    return chats


async def _stored(engine: AsyncEngine) -> dict[int, list[str]]:
    """Member messages in the database by Telegram chat, in the order they were stored."""
    async with create_sessionmaker(engine)() as session:
        rows = (await session.execute(
            select(Message.text, Conversation.member_id).join(Conversation)
            .where(Message.sender == "member").order_by(Message.id))).all()
    by_member: dict[int, list[str]] = {}
    for text, member_id in rows:
        by_member.setdefault(member_id, []).append(text)
    return by_member


async def _outage_drill(svc: RunningService, proxy: TcpProxy, engine: AsyncEngine,
                        clock: FakeClock, caplog: pytest.LogCaptureFixture, *,
                        tick: float, tried_at_once: int) -> Drill:
    chats = await _members_with_a_human(svc)
    stored_before = await _stored(engine)
    apologies_before = {c: _apologies(svc, c) for c in chats}
    middleware = _member_context(svc)
    async with svc.app[BUS].subscribe() as events:
        caplog.clear()
        await proxy.cut()
        for number in range(MESSAGES):
            for chat in chats:
                await svc.emulator.send_text(chat, f"message {number} from {chat}")
        # Telegram (or our poller) tries the waiting updates three times while it is away;
        # the poller's pauses run on the app's clock, which `tick` moves on meanwhile
        await eventually(lambda: middleware.outage.failures >= 3 * tried_at_once,
                          "updates retried", clock=clock, tick=tick)
        stored_during = await _stored(engine)
        await proxy.restore()
        everything = MEMBERS * MESSAGES
        relayed: list[Event] = []

        def all_relayed() -> bool:
            while not events.empty():
                event = events.get_nowait()
                if event.topic == "message.created":
                    relayed.append(event)
            return len(relayed) >= everything

        await eventually(all_relayed, "every message relayed", clock=clock, tick=tick)
    assert stored_during == stored_before  # nothing was written while it was away
    apologies = {c: _apologies(svc, c) - apologies_before[c] for c in chats}
    # the whole process: bot, notifier, scheduler, leases, probes say it together
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    return await _stored(engine), apologies, records, relayed


def _apologies(svc: RunningService, chat: int) -> int:
    return sum(APOLOGY in (m["plain_text"] or "") for m in svc.emulator.sent_messages(chat))


async def test_polling_loses_nothing_while_the_database_is_away(
    proxy: TcpProxy, engine: AsyncEngine, clock: FakeClock, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async for svc in _service(proxy, engine, clock, tmp_path, webhook=False):
        stored, apologies, records, relayed = await _outage_drill(
            svc, proxy, engine, clock, caplog, tick=MAX_PAUSE,  # the poller's pause
            tried_at_once=MEMBERS)  # every chat's first message
    _assert_nothing_lost(stored, relayed)
    # each member's first message failed and was apologised for once, however often it came
    # again; their later messages waited behind it (a chat's order) and never failed
    assert list(apologies.values()) == [1] * MEMBERS
    assert len(records) <= 5, [r.getMessage() for r in records]


async def test_webhook_loses_nothing_while_the_database_is_away(
    proxy: TcpProxy, engine: AsyncEngine, clock: FakeClock, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async for svc in _service(proxy, engine, clock, tmp_path, webhook=True):
        stored, apologies, records, relayed = await _outage_drill(
            svc, proxy, engine, clock, caplog, tick=0,  # Telegram retries on its own clock
            tried_at_once=MEMBERS)  # each chat's first update: Telegram sends chats side by side
    _assert_nothing_lost(stored, relayed)
    # Telegram keeps a chat's updates in order and repeats the first that failed: each member
    # heard the apology once, however often it came again; their later messages waited
    assert list(apologies.values()) == [1] * MEMBERS
    assert len(records) <= 5, [r.getMessage() for r in records]


def _assert_nothing_lost(stored: dict[int, list[str]], relayed: list[Event]) -> None:
    assert len(stored) == MEMBERS
    for texts in stored.values():
        chat = int(texts[-1].rsplit(" ", 1)[1])
        # every message once, in the order written, after what came before the outage
        assert texts[-MESSAGES:] == [f"message {n} from {chat}" for n in range(MESSAGES)]
        assert not any(t.startswith("message") for t in texts[:-MESSAGES])
    assert len(relayed) == MEMBERS * MESSAGES
    assert len({e.data["message_id"] for e in relayed}) == len(relayed)
