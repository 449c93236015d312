"""Duties that must run in one process at a time, whichever processes are running.

Telegram polling (Telegram answers a second poller with 409 Conflict), the dunning scheduler
and the console's watcher (auto-assignment, first-response alarms) would only do double work,
or fail, when every process of a scaled-out deployment ran them. So each has a lease: a row in
`leases` naming its holder and until when. A process takes the row when it is free or has run
out (one atomic `UPDATE … WHERE holder = me OR expires_at < now`, an `INSERT` the very first
time), renews it every third of `leader_lease_seconds`, and gives it up on a clean stop, so
another process takes over at once. A process that dies (kill -9) stops renewing, and another
takes over once the lease has run out. A holder that cannot renew (the database is away) stops
the duty before its lease can run out, so two processes never run it at once.

The row works the same on SQLite and PostgreSQL; with one process, the usual SQLite case, that
process simply always holds every lease. The lease's times come from the app's clock (tests
move a fake one); the pace of renewals is real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue.clock import Clock
from payrescue.db.models import Lease
from payrescue.outage import DATABASE, OutageLog

log = logging.getLogger(__name__)

# this process, as lease holders see it (host and pid help an operator; the suffix keeps
# two runs in one process, as in tests, apart)
PROCESS_NAME = f"{socket.gethostname()[:60]}:{os.getpid()}"


def holder_name() -> str:
    return f"{PROCESS_NAME}:{uuid.uuid4().hex[:8]}"


async def take(session: AsyncSession, name: str, holder: str, now: datetime,
               lease: timedelta) -> bool:
    """Take or renew the lease `name` for `holder`; False while another holder has it."""
    renewed = await session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, expires_at=now + lease)
        .execution_options(synchronize_session=False)
    )
    if renewed.rowcount:
        await session.commit()
        return True
    if await session.scalar(select(Lease.name).where(Lease.name == name)) is not None:
        await session.commit()
        return False
    try:
        async with session.begin_nested():  # the first holder ever: two may try at once
            session.add(Lease(name=name, holder=holder, expires_at=now + lease))
    except IntegrityError:
        await session.commit()
        return False
    await session.commit()
    return True


async def holders(session: AsyncSession, prefix: str, now: datetime) -> int:
    """How many unexpired leases have a name starting with `prefix` (at least 1)."""
    count = await session.scalar(
        select(func.count()).where(Lease.name.startswith(prefix), Lease.expires_at >= now))
    await session.commit()
    return max(int(count or 0), 1)


async def give_up(session: AsyncSession, name: str, holder: str) -> None:
    await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
    await session.commit()


class Leadership:
    """Runs `duty` in this process only while it holds the lease `name`."""

    def __init__(self, name: str, duty: Callable[[], Awaitable[None]], *,
                 sessionmaker: async_sessionmaker[AsyncSession], clock: Clock,
                 lease_seconds: float) -> None:
        self.name = name
        self.duty = duty
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.holder = holder_name()
        self.leading = asyncio.Event()  # set while this process runs the duty
        self._task: asyncio.Task[None] | None = None
        self._started_once = False  # said "runs in this process" (not again after a pause)
        self._outage = OutageLog(log, down=f"cannot renew the lease of {name}; retrying",
                                 back=f"the lease of {name} works again after %d failed tries",
                                 group=DATABASE)

    async def run(self) -> None:
        """Until cancelled: take the lease whenever it is free, run the duty while held."""
        loop = asyncio.get_running_loop()
        interval = self.lease.total_seconds() / 3
        confirmed = loop.time()  # when the lease was last known to be ours
        told_waiting = False
        try:
            while True:
                try:
                    async with self.sessionmaker() as session:
                        held = await take(session, self.name, self.holder, self.clock.now(),
                                          self.lease)
                except Exception as exc:
                    # the database is away: carry on while the lease is surely still ours,
                    # then pause the duty (it needs the database anyway); the outage itself
                    # is logged once for the whole process
                    self._outage.failed(exc)
                    if self._task is not None and loop.time() - confirmed >= 2 * interval:
                        log.debug("%s paused: its lease cannot be renewed", self.name)
                        await self._stop()
                else:
                    self._outage.succeeded()
                    if held:
                        confirmed = loop.time()
                        self._start()
                        told_waiting = False
                    else:
                        if self._task is not None:
                            log.warning("%s stops here: another process holds it now",
                                        self.name)
                            await self._stop()
                            self._started_once = False
                        if not told_waiting:
                            log.info("%s runs in another process; this one stands by",
                                     self.name)
                            told_waiting = True
                await asyncio.sleep(interval)
        finally:
            await self._stop()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5), self.sessionmaker() as session:
                    await give_up(session, self.name, self.holder)

    def _start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        if self._task is not None:  # the duty ended by itself: a bug; it starts again
            error = None if self._task.cancelled() else self._task.exception()
            log.error("%s ended unexpectedly; starting it again", self.name, exc_info=error)
        elif not self._started_once:
            log.info("%s runs in this process", self.name)
            self._started_once = True
        self._task = asyncio.create_task(self.duty(), name=self.name)
        self.leading.set()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        self.leading.clear()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
