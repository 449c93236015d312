"""Background duties of the console: auto-assignment and first-response alarms.

Runs on every `conversation.waiting` / `conversation.updated` event and on a periodic tick,
so a missed event or a restart delays the work but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue import assignment
from payrescue.config import Settings
from payrescue.conversations import ASSIGNED, WAITING
from payrescue.db.models import Conversation, Outbox
from payrescue.events import Bus, Event
from payrescue.i18n import ngettext, use_language
from payrescue.keys import BUS, CLOCK, SESSIONMAKER, SETTINGS
from payrescue.leader import Leadership
from payrescue.outage import DATABASE, DATABASE_ERRORS, OutageLog, is_database_unavailable

log = logging.getLogger(__name__)
TICK_SECONDS = 30
WAKE_TOPICS = {"conversation.waiting", "conversation.updated"}
WATCHER = web.AppKey("console_watcher", asyncio.Task)


async def assign_waiting(db: AsyncSession, now: datetime) -> list[int]:
    """Hand waiting conversations, oldest first, to available agents with room."""
    assigned = []
    waiting = (await db.scalars(
        select(Conversation.id).where(Conversation.status == WAITING)
        .order_by(Conversation.priority.desc(), Conversation.waiting_since, Conversation.id)
        .limit(50)
    )).all()
    for conversation_id in waiting:
        if await assignment.auto_assign(db, conversation_id, now) is None:
            break  # nobody has room left
        assigned.append(conversation_id)
    return assigned


async def announce_overdue(db: AsyncSession, admin_chat_id: int, target: timedelta,
                           language: str, now: datetime) -> list[int]:
    """One admin-chat message per waiting spell past the first-response target (outbox ids)."""
    overdue = (await db.scalars(
        select(Conversation).where(Conversation.status == WAITING,
                                   Conversation.waiting_since < now - target)
    )).all()
    announced = []
    for conversation in overdue:
        assert conversation.waiting_since is not None  # noqa: S101 - the query says so
        key = f"overdue:{conversation.id}:{int(conversation.waiting_since.timestamp())}"
        if await db.scalar(select(Outbox.id).where(Outbox.dedupe_key == key)):
            continue
        minutes = int((now - conversation.waiting_since).total_seconds() // 60)
        with use_language(language):
            text = ngettext("Conversation #%(id)s has been waiting for %(num)d minute.",
                            "Conversation #%(id)s has been waiting for %(num)d minutes.",
                            minutes) % {"id": conversation.id, "num": minutes}
        row = Outbox(chat_id=admin_chat_id, kind="alert", priority=1, method="sendMessage",
                     payload={"text": text}, status="queued",
                     not_before=now, dedupe_key=key, created_at=now)
        db.add(row)
        await db.flush()
        announced.append(row.id)
    return announced


async def run_once(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
                   now: datetime, bus: Bus) -> None:
    """One round: assign what can be assigned, announce what waited too long."""
    events: list[Event] = []
    async with sessionmaker() as db, db.begin():
        if settings.auto_assign:
            for conversation_id in await assign_waiting(db, now):
                conversation = await db.get(Conversation, conversation_id)
                if conversation is not None and conversation.status == ASSIGNED:
                    events.append(assignment.updated_event(conversation))
        if settings.admin_chat_id is not None:
            queued = await announce_overdue(
                db, settings.admin_chat_id,
                timedelta(minutes=settings.first_response_minutes),
                settings.default_language, now)
            events.extend(Event("outbox.queued", {"outbox_id": o}) for o in queued)
    for event in events:
        await bus.publish(event)


async def _watch(app: web.Application) -> None:
    outage = OutageLog(log, down="console watcher: database unavailable; retrying on each tick",
                       back="console watcher: database back after %d failed runs", group=DATABASE)
    async with app[BUS].subscribe() as events:
        while True:
            try:
                await run_once(app[SESSIONMAKER], app[SETTINGS], app[CLOCK].now(), app[BUS])
            except DATABASE_ERRORS as exc:
                # a lost database is said once per outage; any other database error each time
                if is_database_unavailable(exc):
                    outage.failed(exc)
                else:
                    log.exception("console watcher: database error; retrying on the next tick")
            else:
                outage.succeeded()
            await _wait_for_work(app, events)


async def _wait_for_work(app: web.Application, events: asyncio.Queue[Event]) -> None:
    tick = asyncio.ensure_future(app[CLOCK].sleep(TICK_SECONDS))
    try:
        while not tick.done():
            getter = asyncio.ensure_future(events.get())
            done, _pending = await asyncio.wait({tick, getter},
                                                return_when=asyncio.FIRST_COMPLETED)
            if getter in done and getter.result().topic in WAKE_TOPICS:
                return
            if getter not in done:
                getter.cancel()
    finally:
        tick.cancel()


async def watcher_lifetime(app: web.Application):  # noqa: ANN201 - an aiohttp cleanup context
    settings = app[SETTINGS]
    if not settings.auto_assign and settings.admin_chat_id is None:
        yield
        return
    # one process at a time, with several: each would assign and alarm again
    leadership = Leadership("console-watcher", lambda: _watch(app),
                            sessionmaker=app[SESSIONMAKER], clock=app[CLOCK],
                            lease_seconds=settings.leader_lease_seconds)
    app[WATCHER] = asyncio.create_task(leadership.run(), name="console-watcher-lease")
    yield
    app[WATCHER].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app[WATCHER]
