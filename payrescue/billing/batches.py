"""Group commit: deliveries that arrive together are acted on in one transaction.

A webhook costs little in the database and much in the driver and SQLAlchemy around each
statement, and on SQLite every transaction waits for the single write lock and a disk sync.
So each request hands its event to one writer task and waits for the answer; the writer takes
everything that queued up meanwhile (up to `max_batch`) and stores it with `ingest_batch`.
Under load a batch holds many events, so its dozen statements and its commit are shared;
alone, an event is a batch of one and waits for nothing.

A batch never holds two events that concern the same member, subscription, invoice or event id:
such an event waits for the next batch (and so does every later one that shares a key with
it), so events about one thing are still acted on one after the other, in arrival order.
If a batch fails, each of its events is tried alone, so one bad event costs the others nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue.billing import signals as s
from payrescue.billing.ingest import Outcome, ingest_batch
from payrescue.billing.known import email_of
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.events import Bus
from payrescue.outage import is_database_unavailable

log = logging.getLogger(__name__)
_ATTEMPTS = 3  # a race with another process creating the same row is retried from the start


def keys_of(signal: s.Signal) -> frozenset[tuple[str, ...]]:
    """What an event may change; two events sharing a key never share a batch."""
    keys = {("event", signal.provider, signal.event_id)}
    if signal.member.customer_id:
        keys.add(("customer", signal.provider, signal.member.customer_id))
    email = email_of(signal.member)
    if email:
        keys.add(("email", email))
    if signal.subscription_ref:
        keys.add(("subscription", signal.provider, signal.subscription_ref))
    if signal.invoice_ref:
        keys.add(("invoice", signal.provider, signal.invoice_ref))
    return frozenset(keys)


@dataclass
class _Waiting:
    signal: s.Signal
    keys: frozenset[tuple[str, ...]]
    answer: asyncio.Future[Outcome]


def next_batch(waiting: list[_Waiting], limit: int) -> tuple[list[_Waiting], list[_Waiting]]:
    """The batch to write now and the events left for later, both in arrival order."""
    batch: list[_Waiting] = []
    later: list[_Waiting] = []
    taken: set[tuple[str, ...]] = set()
    held: set[tuple[str, ...]] = set()  # keys of events left behind: later ones wait too
    for item in waiting:
        if item.answer.done():  # its sender gave up (timed out); the provider will retry
            continue
        if len(batch) < limit and not (item.keys & taken or item.keys & held):
            batch.append(item)
            taken |= item.keys
        else:
            later.append(item)
            held |= item.keys
    return batch, later


def _report_stop(task: asyncio.Task[None]) -> None:
    """The writer only ends when the service stops; anything else is a bug to see at once
    (webhooks would then answer 503 until a restart)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("payment-event writer stopped", exc_info=task.exception())


class Ingestor:
    """The one writer of payment events in this process."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
                 clock: Clock, bus: Bus, *, timeout: float, max_batch: int = 50) -> None:
        self._sessionmaker, self._settings, self._clock, self._bus = (
            sessionmaker, settings, clock, bus)
        self._timeout, self._max_batch = timeout, max_batch
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="payment-event writer")
        self._task.add_done_callback(_report_stop)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            self._queue.get_nowait().answer.cancel()

    async def submit(self, signal: s.Signal) -> Outcome:
        """Store and act on one event; its bus events are published before this returns."""
        s.check_sizes(signal)
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Waiting(signal, keys_of(signal), answer))
        return await answer

    async def _run(self) -> None:
        waiting: list[_Waiting] = []
        while True:
            if not waiting:
                waiting.append(await self._queue.get())
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            batch, waiting = next_batch(waiting, self._max_batch)
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                outcomes = await self._ingest([item.signal for item in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests, never lost
            # the database itself failed: every event of the batch is answered with it
            # (503), since trying them one by one would only fail again, slower
            if len(batch) > 1 and not is_database_unavailable(exc):
                for item in batch:
                    await self._write([item])
                return
            for item in batch:
                if not item.answer.done():
                    item.answer.set_exception(exc)
            return
        try:
            for outcome in outcomes:
                for event in outcome.events:
                    await self._bus.publish(event)
        except Exception:  # committed already: answer the providers, and say what was missed
            log.exception("payment events stored, but their bus events not all published")
        for item, outcome in zip(batch, outcomes, strict=True):
            if not item.answer.done():
                item.answer.set_result(outcome)

    async def _ingest(self, signals: list[s.Signal]) -> list[Outcome]:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await ingest_batch(self._sessionmaker, signals, self._settings,
                                          self._clock.now())
            except IntegrityError:
                if attempt == _ATTEMPTS:
                    raise
                log.info("concurrent write, retrying events", extra={"events": len(signals)})
        raise AssertionError("unreachable")
