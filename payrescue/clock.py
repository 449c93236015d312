"""One source of "now" for the whole service, so tests can move time instead of sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta


class Clock:
    """The real clock: aware UTC datetimes and real sleeps."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sleep_unless(self, seconds: float, event: asyncio.Event) -> None:
        """`sleep(seconds)`, cut short once `event` is set (a stop, a wake-up call)."""
        sleeping = asyncio.ensure_future(self.sleep(seconds))
        waking = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeping, waking}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            waking.cancel()


class FakeClock(Clock):
    """A clock that only moves when a test says so.

    `sleep()` parks the caller until `advance()` moves the time past its deadline, so a
    scenario spanning days runs in milliseconds and in a predictable order.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self._now + timedelta(seconds=seconds)
        heapq.heappush(self._sleepers, (deadline, next(self._order), future))
        await future

    async def advance(self, seconds: float = 0, *, to: datetime | None = None) -> None:
        """Move time forward and let every sleeper whose deadline passed run."""
        target = to if to is not None else self._now + timedelta(seconds=seconds)
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            # give the woken task a chance to run (and maybe sleep again) before moving on
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = max(self._now, target)
        for _ in range(5):
            await asyncio.sleep(0)
