"""Keeps the team group's topics in step: every bus event about a conversation runs
`payrescue.teamgroup.reconcile` for it, and a periodic sweep covers events that were
missed or dropped (the bus is a wake-up call, the database the truth).

Until a team group is connected (most deployments never connect one) events are skipped
without touching the database: a query and a transaction per member message would cost the
relay a third of its speed on SQLite. The sweep notices a group (at start, every
SWEEP_SECONDS, and at once on `team.connected`) and catches up what was skipped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue import teamgroup
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.events import Bus, Event
from payrescue.outage import DATABASE, OutageLog

log = logging.getLogger(__name__)
TOPICS = ("conversation.waiting", "conversation.updated", "message.created")
SWEEP_BATCH = 50  # conversations per transaction
SWEEP_SECONDS = 15.0  # one cheap query (`teamgroup.lagging`) when nothing lags


async def follow_for_team(sessionmaker: async_sessionmaker[AsyncSession], bus: Bus,
                          clock: Clock, settings: Settings) -> None:
    outage = OutageLog(log, down="team topics not kept in step; retrying",
                       back="team topics kept in step again after %d failures", group=DATABASE)
    turns = asyncio.Lock()
    group = _GroupWatch()
    async with bus.subscribe() as events:
        sweep = asyncio.create_task(_sweeps(sessionmaker, bus, clock, settings, turns, group))
        try:
            while True:
                # what queued up meanwhile is taken together, each conversation once: one
                # reconcile covers all of its news
                waiting = [await events.get()]
                while not events.empty():
                    waiting.append(events.get_nowait())
                if any(event.topic == teamgroup.CONNECTED for event in waiting):
                    group.look_again.set()
                if not group.connected:
                    continue  # the sweep catches up once a group is connected
                ids = dict.fromkeys(
                    event.data["conversation_id"] for event in waiting
                    if event.topic in TOPICS and isinstance(event.data.get("conversation_id"),
                                                            int))
                if not ids:
                    continue
                try:
                    await step(sessionmaker, bus, clock, settings, ids, turns)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the next event or sweep starts afresh
                    outage.failed(exc)
                else:
                    outage.succeeded()
        finally:
            sweep.cancel()
            await asyncio.gather(sweep, return_exceptions=True)


async def step(sessionmaker: async_sessionmaker[AsyncSession], bus: Bus, clock: Clock,
               settings: Settings, conversation_ids: Iterable[int],
               turns: asyncio.Lock | None = None) -> None:
    """Reconcile these conversations' topics in one transaction, commit, wake the poster.
    `turns` keeps this process's event handling and sweep from racing each other."""
    turns = turns or asyncio.Lock()
    ids = list(conversation_ids)
    for _attempt in range(3):  # another process won the race for a line: start again
        try:
            async with turns, sessionmaker() as session:
                group = await teamgroup.current_group(session)
                rows = []
                if group is not None:
                    for conversation_id in ids:
                        rows += await teamgroup.reconcile(session, conversation_id, settings,
                                                          clock.now(), group)
                await session.commit()
            break
        except IntegrityError:
            continue
    else:
        return
    for row in rows:
        await bus.publish(Event("outbox.queued", {"outbox_id": row.id}))


class _GroupWatch:
    """Whether a team group is connected, as the last sweep saw it. A group, once there,
    stays (connecting another one replaces it), so the answer only ever turns to yes."""

    def __init__(self) -> None:
        self.connected = False
        self.look_again = asyncio.Event()  # a group was just connected: sweep now

    async def pause(self, clock: Clock, seconds: float) -> None:
        """SWEEP_SECONDS on the app's clock, cut short by `look_again`."""
        await clock.sleep_unless(seconds, self.look_again)
        self.look_again.clear()


async def _sweeps(sessionmaker: async_sessionmaker[AsyncSession], bus: Bus, clock: Clock,
                  settings: Settings, turns: asyncio.Lock, group: _GroupWatch) -> None:
    """At start and then every SWEEP_SECONDS: each conversation whose topic lags behind."""
    outage = OutageLog(log, down="team topic sweep failed; trying again",
                       back="team topic sweep works again after %d failures", group=DATABASE)
    while True:
        try:
            async with sessionmaker() as session:
                group.connected = group.connected or (
                    await teamgroup.current_group(session) is not None)
                ids = await teamgroup.lagging(session) if group.connected else []
            for start in range(0, len(ids), SWEEP_BATCH):
                await step(sessionmaker, bus, clock, settings, ids[start:start + SWEEP_BATCH],
                           turns)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database went away: said once for the process
            outage.failed(exc)
        else:
            outage.succeeded()
        await group.pause(clock, SWEEP_SECONDS)
