"""Drains the outbox into Telegram through the real aiogram `Bot`.

Limits are kept on our side (a global token bucket, default 30/s, and one per chat, default
1/s with a burst of 3) so Telegram rarely has to say 429; when it does, every send pauses
for `retry_after`. Rows are claimed in priority order (agent replies before reminders), at
most a few per chat, never a chat that already has a row in flight, so one chat's messages
go out in order. Temporary faults (network, 5xx) are retried with backoff, first in place,
then by queueing the row again; a 403 marks the member unreachable. A crash leaves claimed
rows in "sending" and `payrescue.outbox.release_expired_leases` brings them back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import (
    EditMessageReplyMarkup,
    EditMessageText,
    SendChatAction,
    SendDocument,
    SendMessage,
    SendPhoto,
    SendSticker,
    SendVoice,
    TelegramMethod,
)
from aiogram.types import Message as TelegramMessage
from aiohttp import web
from aiolimiter import AsyncLimiter
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.keys import BOT
from bot.routers.relay import follow_console
from payrescue import dunning, outbox
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db.models import Member, Message, Outbox
from payrescue.events import Bus, Event
from payrescue.keys import BUS, CLOCK, SESSIONMAKER, SETTINGS
from payrescue.outage import OutageLog

log = logging.getLogger(__name__)

METHODS: dict[str, type[TelegramMethod[Any]]] = {
    "sendMessage": SendMessage,
    "editMessageText": EditMessageText,
    "editMessageReplyMarkup": EditMessageReplyMarkup,
    "sendPhoto": SendPhoto,
    "sendDocument": SendDocument,
    "sendVoice": SendVoice,
    "sendSticker": SendSticker,
    "sendChatAction": SendChatAction,
}
TRIES_IN_PLACE = 4  # network/5xx retries before the row is queued again for later
MAX_ATTEMPTS = 8  # claims of one row before it is given up as failed
MAX_FLOOD_WAITS = 20  # 429 answers tolerated for one row in one claim
IDLE_POLL_SECONDS = 2.0
RECORD_EVERY_SECONDS = 0.02
STOP_WRITE_SECONDS = 5
GLOBAL_HEADROOM = 0.99
BURST_SECONDS = 0.2  # re-check even without a wake-up (a missed event costs latency only)
MAX_CHAT_LIMITERS = 10_000
RECONCILE_ON = {"case.changed", "member.card_expiring"}  # besides the periodic tick
RETRY_FIRST_SECONDS, RETRY_LONGEST_SECONDS = 1.0, 30.0  # pauses after a failed run


class PermitPacer:
    """Hands out send permits at `rate` per second, holding at most `burst` unused ones.

    One timer tops up a queue of permits and each sender takes one; waiting senders are
    woken in order by the queue itself. (A per-call limiter such as aiolimiter wakes one
    waiter per timer callback and, with thousands waiting, falls well short of 1,000/s.)
    """

    TICK_SECONDS = 0.01

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self._permits: asyncio.Queue[None] = asyncio.Queue(maxsize=max(1, int(burst)))

    async def permit(self) -> None:
        await self._permits.get()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last, owed = loop.time(), 1.0
        while True:
            now = loop.time()
            owed = min(owed + (now - last) * self.rate, float(self._permits.maxsize))
            last = now
            while owed >= 1 and not self._permits.full():
                self._permits.put_nowait(None)
                owed -= 1
            await asyncio.sleep(self.TICK_SECONDS)


TAKES_PARSE_MODE = {"sendMessage", "editMessageText", "sendPhoto", "sendDocument", "sendVoice"}


def build_method(row: Outbox) -> TelegramMethod[Any]:
    """The Bot API call for a row. A payload without `parse_mode` is plain text: the bot's
    default (HTML) must not turn an agent's "<" or "&" into markup or a refused message."""
    payload = dict(row.payload)
    if row.method in TAKES_PARSE_MODE:
        payload.setdefault("parse_mode", None)
    return METHODS[row.method](chat_id=row.chat_id, **payload)


@dataclass
class NotifierStats:
    sent: int = 0
    too_many_requests: int = 0
    retried: int = 0
    failed: int = 0
    blocked: int = 0


class Notifier:
    def __init__(
        self,
        bot: Bot,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: Bus,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self.bot = bot
        self.sessionmaker = sessionmaker
        self.bus = bus
        self.clock = clock
        self.settings = settings
        self.worker = f"notifier-{uuid.uuid4().hex[:12]}"
        self.stats = NotifierStats()
        rate = settings.telegram_rate_per_second
        # a little under the limit and in small bursts: requests reach Telegram with some
        # jitter, and a bucket kept exactly full on both sides turns jitter into 429s
        self._global = PermitPacer(rate * GLOBAL_HEADROOM, burst=rate * BURST_SECONDS)
        self._chat_limiters: dict[int, AsyncLimiter] = {}
        self._in_flight: dict[int, asyncio.Task[None]] = {}  # chat id → its delivery task
        self._max_in_flight = max(10, int(rate * 2))
        self._claim_batch = max(10, int(rate / 2))  # small claims: the first sends start soon
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._sent: list[tuple[Outbox, int | None]] = []  # delivered, not yet recorded
        self._sent_waiting = asyncio.Event()
        self._writing: asyncio.Future[dict[int, int]] | None = None
        self._resume_at = 0.0  # loop time before which nothing is sent (after a 429)

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled; cancelling mid-batch loses nothing (see module doc)."""
        async with self.bus.subscribe() as events:
            watcher = asyncio.create_task(self._watch(events))
            recorder = asyncio.create_task(self._record_sent())
            pacer = asyncio.create_task(self._global.run())
            renewer = asyncio.create_task(self._renew_leases())
            try:
                await self._release_leases()
                while True:
                    # refill at half capacity: one claim query per batch, not per message
                    if len(self._in_flight) > self._max_in_flight // 2:
                        self._slot_freed.clear()
                        await self._slot_freed.wait()
                        continue
                    if not await self._claim_and_start():
                        await self._idle()
            finally:
                watcher.cancel()
                recorder.cancel()
                pacer.cancel()
                renewer.cancel()
                tasks = [watcher, recorder, pacer, renewer, *self._in_flight.values()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._record_on_stop()

    def wake(self) -> None:
        self._wake.set()

    async def _watch(self, events: asyncio.Queue[Event]) -> None:
        while True:
            event = await events.get()
            if event.topic == "outbox.queued":
                self._wake.set()

    async def _renew_leases(self) -> None:
        """Keep our claims fresh while rows wait out a long flood pause or retries, so
        another worker never takes a row this one is still sending."""
        interval = self.settings.outbox_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.sessionmaker() as session:
                    await outbox.renew_leases(session, self.worker, self.clock.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not renew outbox leases; retrying")

    async def _release_leases(self) -> None:
        lease = timedelta(seconds=self.settings.outbox_lease_seconds)
        async with self.sessionmaker() as session:
            released = await outbox.release_expired_leases(session, self.clock.now(), lease)
        if released:
            log.warning("re-queued rows left in sending", extra={"rows": released})

    async def _claim_and_start(self) -> bool:
        self._wake.clear()
        async with self.sessionmaker() as session:
            rows = await outbox.claim(
                session,
                self.worker,
                self.clock.now(),
                min(self._claim_batch, self._max_in_flight - len(self._in_flight)),
                per_chat=self.settings.telegram_chat_burst,
                exclude_chats=list(self._in_flight),
            )
        by_chat: dict[int, list[Outbox]] = {}
        for row in rows:
            by_chat.setdefault(row.chat_id, []).append(row)
        for chat_id, chat_rows in by_chat.items():
            task = asyncio.create_task(self._deliver_chat(chat_rows))
            self._in_flight[chat_id] = task
            task.add_done_callback(lambda _t, chat=chat_id: self._chat_done(chat))
        return bool(rows)

    def _chat_done(self, chat_id: int) -> None:
        self._in_flight.pop(chat_id, None)
        self._slot_freed.set()

    async def _idle(self) -> None:
        async with self.sessionmaker() as session:
            due = await outbox.next_due(session)
        self._slot_freed.clear()
        helpers = [asyncio.create_task(self._wake.wait())]
        if self._in_flight:  # a chat finishing may have more rows waiting
            helpers.append(asyncio.create_task(self._slot_freed.wait()))
        if due is not None:
            seconds = max((due - self.clock.now()).total_seconds(), 0)
            helpers.append(asyncio.create_task(self.clock.sleep(seconds)))
        try:
            await asyncio.wait(helpers, timeout=IDLE_POLL_SECONDS,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for helper in helpers:
                helper.cancel()
        await self._release_leases()

    # --- one chat, one row --------------------------------------------------------------

    async def _deliver_chat(self, rows: list[Outbox]) -> None:
        for row in rows:
            try:
                await self._deliver(row)
            except asyncio.CancelledError:
                raise
            except Exception:
                # the row stays in "sending" and comes back when its lease runs out
                log.exception("delivery bookkeeping failed", extra={"outbox_id": row.id})

    async def _deliver(self, row: Outbox) -> None:
        try:
            method = build_method(row)
        except (KeyError, ValidationError, TypeError) as exc:
            await self._finish_failed(row, f"cannot build {row.method}: {exc.__class__.__name__}")
            return
        tries = floods = 0
        while True:
            await self._pace(row.chat_id)
            try:
                result = await self.bot(method)
            except TelegramRetryAfter as exc:
                self.stats.too_many_requests += 1
                floods += 1
                self._pause(exc.retry_after)
                if floods < MAX_FLOOD_WAITS:
                    continue
                await self._retry_later(row, "flood wait")
                return
            except TelegramForbiddenError:
                await self._blocked(row)
                return
            except TelegramBadRequest as exc:
                if "not modified" in exc.message:  # an edit that was already applied
                    await self._finish_sent(row, None)
                else:
                    await self._finish_failed(row, exc.message)
                return
            except (TelegramNetworkError, TelegramServerError, TimeoutError) as exc:
                tries += 1
                self.stats.retried += 1
                if tries >= TRIES_IN_PLACE:
                    await self._retry_later(row, f"{exc.__class__.__name__}: {exc}")
                    return
                await asyncio.sleep(self.settings.outbox_retry_seconds * 2 ** (tries - 1))
                continue
            await self._finish_sent(row, result)
            return

    async def _pace(self, chat_id: int) -> None:
        loop = asyncio.get_running_loop()
        # a loop, not one sleep: another 429 during the pause may push `_resume_at` further
        while (pause := self._resume_at - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(pause)
        await self._chat_limiter(chat_id).acquire()
        await self._global.permit()

    def _pause(self, retry_after: int) -> None:
        loop = asyncio.get_running_loop()
        self._resume_at = max(self._resume_at, loop.time() + retry_after)

    def _chat_limiter(self, chat_id: int) -> AsyncLimiter:
        limiter = self._chat_limiters.get(chat_id)
        if limiter is None:
            if len(self._chat_limiters) >= MAX_CHAT_LIMITERS:
                self._forget_idle_chats()
            burst = self.settings.telegram_chat_burst
            limiter = AsyncLimiter(burst, burst / self.settings.telegram_chat_rate_per_second)
            self._chat_limiters[chat_id] = limiter
        return limiter

    def _forget_idle_chats(self) -> None:
        burst = self.settings.telegram_chat_burst
        for chat_id, limiter in list(self._chat_limiters.items()):
            if limiter.has_capacity(burst):
                del self._chat_limiters[chat_id]

    # --- outcomes -----------------------------------------------------------------------

    async def _finish_sent(self, row: Outbox, result: Any) -> None:
        """Note the delivery; `_record_sent` writes a batch of them in one transaction."""
        message_id = result.message_id if isinstance(result, TelegramMessage) else None
        self._sent.append((row, message_id))
        self._sent_waiting.set()
        self.stats.sent += 1

    async def _record_sent(self) -> None:
        """Mark delivered rows "sent" in batches: one commit for many rows keeps up with
        1,000 messages a second. A crash before the commit leaves them in "sending", so
        they count as in flight and are sent again: never lost."""
        while True:
            await self._sent_waiting.wait()
            await asyncio.sleep(RECORD_EVERY_SECONDS)  # let a batch gather
            self._sent_waiting.clear()
            batch, self._sent = self._sent, []
            # shielded: a stop while writing must not abandon a half-done transaction (on
            # SQLite it would hold the write lock); _record_on_stop waits for it instead
            self._writing = asyncio.ensure_future(self._write_sent(batch))
            try:
                lines = await asyncio.shield(self._writing)
            except Exception:
                log.exception("could not record %d sent rows; retrying", len(batch))
                self._sent = batch + self._sent
                self._sent_waiting.set()
                await asyncio.sleep(1)
                continue
            for row, _ in batch:
                await self._published(row, outbox.SENT, lines.get(row.id))
                await asyncio.sleep(0)  # let subscribers drain: a batch may be large

    async def _record_on_stop(self) -> None:
        """On an orderly stop, record what was delivered so it is not sent again."""
        batch, self._sent = self._sent, []
        try:
            async with asyncio.timeout(STOP_WRITE_SECONDS):
                if self._writing is not None:
                    await self._writing
                if batch:
                    await self._write_sent(batch)
        except (Exception, TimeoutError):
            log.exception("delivered rows stay in sending and will be sent again")

    async def _write_sent(self, batch: list[tuple[Outbox, int | None]]) -> dict[int, int]:
        """Record the batch; returns outbox id → transcript line id for rows that have one."""
        now = self.clock.now()
        async with self.sessionmaker() as session:
            await outbox.mark_sent_many(session, now, batch)
            ids = [row.id for row, _ in batch]
            result = await session.execute(
                select(Message.outbox_id, Message.id).where(Message.outbox_id.in_(ids)))
            lines = {outbox_id: line_id for outbox_id, line_id in result}
            delivered = dict((row.id, message_id) for row, message_id in batch)
            for outbox_id, line_id in lines.items():
                await session.execute(
                    update(Message).where(Message.id == line_id)
                    .values(telegram_message_id=delivered[outbox_id])
                )
            await session.commit()
        return {outbox_id: line_id for outbox_id, line_id in lines.items() if outbox_id}

    async def _finish_failed(self, row: Outbox, error: str) -> None:
        log.error("outbox row failed", extra={"outbox_id": row.id, "error": error})
        async with self.sessionmaker() as session:
            await outbox.mark_failed(session, row.id, error)
            await session.commit()
        self.stats.failed += 1
        await self._published(row, outbox.FAILED, None)

    async def _retry_later(self, row: Outbox, error: str) -> None:
        if row.attempts >= MAX_ATTEMPTS:
            await self._finish_failed(row, f"gave up after {row.attempts} attempts: {error}")
            return
        delay = timedelta(seconds=min(60 * 2 ** (row.attempts - 1), 3600))
        log.warning("outbox row retried later", extra={"outbox_id": row.id, "error": error})
        async with self.sessionmaker() as session:
            await outbox.requeue(session, row.id, self.clock.now() + delay, error)
            await session.commit()
        await self._published(row, outbox.QUEUED, None)

    async def _blocked(self, row: Outbox) -> None:
        self.stats.blocked += 1
        async with self.sessionmaker() as session:
            await outbox.mark_failed(session, row.id, "blocked by the member")
            if row.member_id is not None:
                await session.execute(
                    update(Member).where(Member.id == row.member_id).values(unreachable=True)
                )
            await session.commit()
        log.warning("member blocked the bot", extra={"member_id": row.member_id})
        await self._published(row, outbox.FAILED, None)
        if row.member_id is not None:
            await self.bus.publish(Event("member.unreachable", {"member_id": row.member_id}))

    async def _published(self, row: Outbox, status: str, line_id: int | None) -> None:
        data: dict[str, Any] = {"outbox_id": row.id, "status": status}
        if line_id is not None:
            data["message_id"] = line_id
        await self.bus.publish(Event("outbox.updated", data))


async def run_until_cancelled(notifier: Notifier) -> None:
    """The notifier as a background task that survives its own bugs and a lost database
    (logged, restarted after a pause that grows while it keeps failing at once)."""
    pause = 0.0
    while True:
        started = asyncio.get_running_loop().time()
        try:
            await notifier.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("notifier crashed; restarting")
            if asyncio.get_running_loop().time() - started > RETRY_LONGEST_SECONDS:
                pause = 0.0  # it ran well for a while: this is a new fault
            pause = min(max(pause * 2, RETRY_FIRST_SECONDS), RETRY_LONGEST_SECONDS)
            await asyncio.sleep(pause)


# --- wiring into the application ----------------------------------------------------------


def setup_notifier(app: web.Application) -> None:
    """Background tasks of a bot process: the outbox notifier and the dunning scheduler.

    Call after `setup_bot`, so the bot exists when these start; without a bot (no token)
    the scheduler still keeps the outbox up to date and rows wait for the bot.
    """
    app.cleanup_ctx.append(_background_tasks)


NOTIFIER = web.AppKey("notifier", Notifier)


async def _background_tasks(app: web.Application) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(run_scheduler(app), name="dunning-scheduler")]
    bot = app.get(BOT)
    if bot is not None:
        notifier = Notifier(bot, app[SESSIONMAKER], app[BUS], app[CLOCK], app[SETTINGS])
        app[NOTIFIER] = notifier
        tasks.append(asyncio.create_task(run_until_cancelled(notifier), name="notifier"))
        tasks.append(asyncio.create_task(
            follow_console(bot, app[SESSIONMAKER], app[BUS], app[CLOCK], app[SETTINGS]),
            name="console-follower",
        ))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_scheduler(app: web.Application) -> None:
    """Run `dunning.reconcile` on every `case.changed` (or expiring card) and every tick."""
    settings, bus, clock = app[SETTINGS], app[BUS], app[CLOCK]
    outage = OutageLog(log, down="dunning reconcile failed; retrying with a growing pause",
                       back="dunning reconcile works again after %d failed tries")
    pause = 0.0
    async with bus.subscribe() as events:
        while True:
            try:
                async with app[SESSIONMAKER]() as session:
                    queued = await dunning.reconcile(session, settings, clock.now())
                for row_id in queued:
                    await bus.publish(Event("outbox.queued", {"outbox_id": row_id}))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # the database may be away: try again after a pause that grows, not at
                # every event that queued up meanwhile
                outage.failed(exc)
                pause = min(max(pause * 2, RETRY_FIRST_SECONDS), settings.dunning_tick_seconds)
                await asyncio.sleep(pause)
            else:
                outage.succeeded()
                pause = 0.0
            await _next_reason_to_reconcile(events, clock, settings.dunning_tick_seconds)


async def _next_reason_to_reconcile(
    events: asyncio.Queue[Event], clock: Clock, tick: float
) -> None:
    """Wait for a case change or the tick. One reconcile covers every case, so the changes
    that queued up during the last one are taken together."""
    async def case_changed() -> None:
        while (await events.get()).topic not in RECONCILE_ON:
            pass
        while not events.empty():
            events.get_nowait()

    waits = [asyncio.create_task(case_changed()), asyncio.create_task(clock.sleep(tick))]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
