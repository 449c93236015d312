"""Drains the outbox into Telegram through the real aiogram `Bot`.

Limits are kept on our side (a global token bucket, default 30/s, and one per chat, default
1/s with a burst of 3) so Telegram rarely has to say 429; when it does, nothing more is sent
until `retry_after` has passed — also not by senders that were already waiting for a permit
(Telegram lengthens the ban of a bot that keeps sending). Rows are claimed in priority order
(agent replies before reminders), at most a few per chat, never a chat that has a row in
flight anywhere (see `payrescue.outbox`), so one chat's messages go out in order. Temporary
faults (network, 5xx) are retried with backoff, first in place, then by queueing the row
again; a 403 marks the member unreachable and cancels what waits for them.

A crash of the whole process leaves claimed rows in "sending" and
`payrescue.outbox.release_expired_leases` brings them back once their lease runs out. When
only a run fails (the database went away) and `payrescue.outage.keep_running` starts the next one,
each run has its own worker name: the new run first records what the failed one delivered
(kept in memory, so it is not sent twice) and queues the rest again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from bot.team.follower import follow_for_team
from bot.team.poster import TopicPoster
from payrescue import dunning, leader, outbox
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db.models import Message, Outbox
from payrescue.events import Bus, Event
from payrescue.keys import BUS, CLOCK, SESSIONMAKER, SETTINGS
from payrescue.leader import Leadership
from payrescue.outage import DATABASE, OutageLog, keep_running

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
RECORD_EVERY_SECONDS = 0.02
STOP_WRITE_SECONDS = 5
GLOBAL_HEADROOM = 0.99
BURST_SECONDS = 0.2  # re-check even without a wake-up (a missed event costs latency only)
MAX_CHAT_LIMITERS = 10_000
MAX_IN_FLIGHT = 200  # rows one process sends at once: 4,000 a second at 50 ms per round trip
PEERS = "notifier:"  # lease names of the running notifiers (see _share_the_rate)
# besides the periodic tick; a member who blocked the bot may get the step by e-mail
RECONCILE_ON = {"case.changed", "member.card_expiring", "member.unreachable"}
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

    def drain(self) -> None:
        """Drop the permits handed out in advance (after a 429 nothing should go at once)."""
        while not self._permits.empty():
            self._permits.get_nowait()

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
        self.worker = ""  # named afresh by each run(): see the module doc
        self._ended_runs: list[str] = []  # worker names of earlier runs, rows to release
        self._held: set[int] = set()  # ids this run claimed and has not finished
        # a run that fails (the database went away) is said once, not at every restart
        self.outage = OutageLog(log, down="the notifier stopped; restarting with growing pauses",
                                back="the notifier works again after %d failed runs",
                                group=DATABASE)
        self.stats = NotifierStats()
        rate = settings.telegram_rate_per_second
        # a little under the limit and in small bursts: requests reach Telegram with some
        # jitter, and a bucket kept exactly full on both sides turns jitter into 429s
        self._global = PermitPacer(rate * GLOBAL_HEADROOM, burst=rate * BURST_SECONDS)
        self.peers = 1  # notifiers sharing the bot's rate, this one included
        self._chat_limiters: dict[int, AsyncLimiter] = {}
        self._in_flight: dict[int, asyncio.Task[None]] = {}  # chat id → its delivery task
        # two seconds' worth at the bot's rate, within bounds: enough sends under way to hide
        # Telegram's round trips, and never the whole queue in one process, which would
        # leave the other processes nothing to claim (a chat's rows follow its first)
        self._max_in_flight = min(max(10, int(rate * 2)), MAX_IN_FLIGHT)
        # refilled at half (see run): one claim tops it up again; at the default rate of 30
        # a claim of 15, so that the first sends start soon
        self._claim_batch = max(10, min(int(rate / 2), self._max_in_flight // 2))
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._sent: list[tuple[Outbox, int | None]] = []  # delivered, not yet recorded
        self._sent_waiting = asyncio.Event()
        self._writing: asyncio.Future[dict[int, int]] | None = None
        self._writing_batch: list[tuple[Outbox, int | None]] = []
        self._resume_at = 0.0  # loop time before which nothing is sent (after a 429)

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled; cancelling mid-batch loses nothing (see module doc)."""
        self.worker = f"notifier-{uuid.uuid4().hex[:12]}"
        self._held = set()
        async with self.bus.subscribe() as events:
            watcher = asyncio.create_task(self._watch(events))
            recorder = asyncio.create_task(self._record_sent())
            pacer = asyncio.create_task(self._global.run())
            renewer = asyncio.create_task(self._renew_leases())
            try:
                await self._settle_ended_runs()
                await self._share_the_rate()
                await self._release_leases()
                self.outage.succeeded()
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
                self._ended_runs.append(self.worker)
                await self._record_on_stop()
                await self._leave_the_rate()

    def wake(self) -> None:
        self._wake.set()

    async def _watch(self, events: asyncio.Queue[Event]) -> None:
        while True:
            event = await events.get()
            # a row recorded as sent or failed (by any worker) may free its chat's next row
            if event.topic in ("outbox.queued", "outbox.updated"):
                self._wake.set()

    async def _renew_leases(self) -> None:
        """Keep our claims fresh while rows wait out a long flood pause or retries, so
        another worker never takes a row this one is still sending."""
        interval = self.settings.outbox_lease_seconds / 3
        outage = OutageLog(log, down="could not renew outbox leases; retrying",
                           back="outbox leases renewed again after %d failed tries", group=DATABASE)
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.sessionmaker() as session:
                    await outbox.renew_leases(session, self.worker, set(self._held),
                                              self.clock.now())
                await self._share_the_rate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outage.failed(exc)
            else:
                outage.succeeded()

    async def _share_the_rate(self) -> None:
        """Telegram's limit is per bot, not per process: with several notifiers running (one
        per worker process), each sends at its share of `telegram_rate_per_second`. Each
        announces itself with a lease row that outlives it by one outbox lease."""
        lease = timedelta(seconds=self.settings.outbox_lease_seconds)
        async with self.sessionmaker() as session:
            await leader.take(session, f"{PEERS}{self.worker}", self.worker, self.clock.now(),
                              lease)
            peers = await leader.holders(session, PEERS, self.clock.now())
        self._global.rate = self.settings.telegram_rate_per_second * GLOBAL_HEADROOM / peers
        self.peers = peers

    async def _leave_the_rate(self) -> None:
        """An orderly stop gives this run's share back at once."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_WRITE_SECONDS), self.sessionmaker() as session:
                await leader.give_up(session, f"{PEERS}{self.worker}", self.worker)

    async def _settle_ended_runs(self) -> None:
        """Before claiming: record what an ended run delivered, and queue again at once what
        it held but had not delivered (its worker is gone; no lease needs to run out)."""
        if self._sent:
            batch, self._sent = self._sent, []
            try:
                await self._write_sent(batch)
            except BaseException:
                self._sent = batch + self._sent
                raise
        async with self.sessionmaker() as session:
            released = await outbox.release_worker(session, self._ended_runs)
        self._ended_runs.clear()
        if released:
            log.info("re-queued rows of an ended notifier run", extra={"rows": released})

    async def _release_leases(self) -> None:
        lease = timedelta(seconds=self.settings.outbox_lease_seconds)
        async with self.sessionmaker() as session:
            released = await outbox.release_expired_leases(session, self.clock.now(), lease,
                                                           caller=self.worker)
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
            )
        self._held.update(row.id for row in rows)
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
        self._slot_freed.clear()
        # a chat finishing may have more rows waiting
        wakers = (self._wake, self._slot_freed) if self._in_flight else (self._wake,)
        await outbox.wait_for_work(self.sessionmaker, self.clock, outbox.TELEGRAM, *wakers)
        await self._release_leases()

    # --- one chat, one row --------------------------------------------------------------

    async def _deliver_chat(self, rows: list[Outbox]) -> None:
        for position, row in enumerate(rows):
            try:
                delivered = await self._deliver(row)
            except asyncio.CancelledError:
                raise
            except Exception:
                # the row stays in "sending" and comes back when its lease runs out; the
                # chat's later rows wait with it, so they cannot overtake it
                log.exception("delivery bookkeeping failed", extra={"outbox_id": row.id})
                self._held.discard(row.id)
                self._held.difference_update(later.id for later in rows[position + 1:])
                return
            if not delivered:
                await self._give_back(rows[position + 1:])
                return

    async def _give_back(self, rows: list[Outbox]) -> None:
        """An earlier row of the chat is not sent now: its later rows go back to the queue
        (the claim lets them out only after it), instead of overtaking it."""
        if not rows:
            return
        async with self.sessionmaker() as session:
            await outbox.give_back(session, [row.id for row in rows])
            await session.commit()
        self._held.difference_update(row.id for row in rows)

    async def _deliver(self, row: Outbox) -> bool:
        """Send one row; True when the chat may go on with its next row (the row was sent,
        or failed for good on its own account), False when the chat must wait."""
        if not await self._still_wanted(row):
            return True
        try:
            method = build_method(row)
        except (KeyError, ValidationError, TypeError) as exc:
            await self._finish_failed(row, f"cannot build {row.method}: {exc.__class__.__name__}")
            return True
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
                return False
            except TelegramForbiddenError:
                await self._blocked(row)
                return False
            except TelegramBadRequest as exc:
                if "not modified" in exc.message:  # an edit that was already applied
                    await self._finish_sent(row, None)
                else:
                    await self._finish_failed(row, exc.message)
                return True
            except (TelegramNetworkError, TelegramServerError, TimeoutError) as exc:
                tries += 1
                self.stats.retried += 1
                if tries >= TRIES_IN_PLACE:
                    await self._retry_later(row, f"{exc.__class__.__name__}: {exc}")
                    return False
                await asyncio.sleep(self.settings.outbox_retry_seconds * 2 ** (tries - 1))
                continue
            await self._finish_sent(row, result)
            return True

    async def _still_wanted(self, row: Outbox) -> bool:
        """A dunning message is re-checked against its case just before it goes: a late
        payment event may have changed the past since it was queued."""
        if row.case_id is None:
            return True
        async with self.sessionmaker() as session:
            if await dunning.still_wanted(session, row):
                return True
            await outbox.cancel_claimed(session, row.id, "no longer wanted by its case")
            await session.commit()
        self._held.discard(row.id)
        log.info("dunning message withdrawn before sending",
                 extra={"outbox_id": row.id, "case_id": row.case_id})
        return False

    async def _pace(self, chat_id: int) -> None:
        """Wait for the chat's and the bot's permits, then for any flood pause. The pause is
        checked last: a sender that waited for a permit while a 429 came in must not go out
        during the pause it was told of (Telegram lengthens the ban of a bot that does)."""
        loop = asyncio.get_running_loop()
        await self._chat_limiter(chat_id).acquire()
        while True:
            await self._global.permit()
            pause = self._resume_at - loop.time()
            if pause <= 0:
                return
            # then a fresh permit: the senders that waited out the pause go at the rate,
            # not all at once
            await asyncio.sleep(pause)

    def _pause(self, retry_after: int) -> None:
        loop = asyncio.get_running_loop()
        self._resume_at = max(self._resume_at, loop.time() + retry_after)
        self._global.drain()

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
        self._sent.append((row, message_id))  # still held (and renewed) until recorded
        self._sent_waiting.set()
        self.stats.sent += 1

    async def _record_sent(self) -> None:
        """Mark delivered rows "sent" in batches: one commit for many rows keeps up with
        1,000 messages a second. A crash before the commit leaves them in "sending", so
        they count as in flight and are sent again: never lost."""
        outage = OutageLog(log, down="could not record sent rows; retrying",
                           back="sent rows recorded again after %d failed tries", group=DATABASE)
        while True:
            await self._sent_waiting.wait()
            await asyncio.sleep(RECORD_EVERY_SECONDS)  # let a batch gather
            self._sent_waiting.clear()
            batch, self._sent = self._sent, []
            # shielded: a stop while writing must not abandon a half-done transaction (on
            # SQLite it would hold the write lock); _record_on_stop waits for it instead
            self._writing_batch = batch
            self._writing = asyncio.ensure_future(self._write_sent(batch))
            try:
                lines = await asyncio.shield(self._writing)
            except Exception as exc:
                outage.failed(exc)
                self._writing = None
                self._sent = batch + self._sent
                self._sent_waiting.set()
                await asyncio.sleep(1)
                continue
            self._writing = None
            outage.succeeded()
            self._held.difference_update(row.id for row, _ in batch)
            for row, _ in batch:
                await self._published(row, outbox.SENT, lines.get(row.id))
                await asyncio.sleep(0)  # let subscribers drain: a batch may be large

    async def _record_on_stop(self) -> None:
        """On a stop, record what was delivered so it is not sent again. If the database is
        away, the deliveries stay in memory: the next run records them first (a process
        that ends for good leaves them in "sending", and they are sent again)."""
        unrecorded: list[tuple[Outbox, int | None]] = []
        writing, self._writing = self._writing, None
        batch, self._sent = self._sent, []
        try:
            async with asyncio.timeout(STOP_WRITE_SECONDS):
                if writing is not None:
                    try:
                        await asyncio.shield(writing)
                    except Exception:
                        unrecorded += self._writing_batch
                if batch:
                    await self._write_sent(batch)
        except (Exception, TimeoutError):
            unrecorded += batch
        if unrecorded:
            self._sent = unrecorded + self._sent
            log.warning("delivered rows not recorded yet", extra={"rows": len(self._sent)})

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
        self._held.discard(row.id)
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
        self._held.discard(row.id)
        await self._published(row, outbox.QUEUED, None)

    async def _blocked(self, row: Outbox) -> None:
        """The member blocked the bot: this row failed, and nothing else waiting for them is
        tried (each try would only earn another 403)."""
        self.stats.blocked += 1
        async with self.sessionmaker() as session:
            await outbox.mark_failed(session, row.id, outbox.BLOCKED_REASON)
            cancelled = 0
            if row.member_id is not None:
                cancelled = await outbox.cancel_for_blocked_member(session, row.member_id,
                                                                   self.worker)
            await session.commit()
        self._held.discard(row.id)
        log.warning("member blocked the bot",
                    extra={"member_id": row.member_id, "cancelled": cancelled})
        await self._published(row, outbox.FAILED, None)
        if row.member_id is not None:
            await self.bus.publish(Event("member.unreachable", {"member_id": row.member_id}))

    async def _published(self, row: Outbox, status: str, line_id: int | None) -> None:
        data: dict[str, Any] = {"outbox_id": row.id, "status": status}
        if line_id is not None:
            data["message_id"] = line_id
        await self.bus.publish(Event("outbox.updated", data))


# --- wiring into the application ----------------------------------------------------------


def setup_notifier(app: web.Application) -> None:
    """Background tasks of a bot process: the outbox notifier and the dunning scheduler.

    Call after `setup_bot`, so the bot exists when these start; without a bot (no token)
    the scheduler still keeps the outbox up to date and rows wait for the bot.
    """
    app.cleanup_ctx.append(_background_tasks)


NOTIFIER = web.AppKey("notifier", Notifier)
TOPIC_POSTER = web.AppKey("topic_poster", TopicPoster)


async def _background_tasks(app: web.Application) -> AsyncIterator[None]:
    # one scheduler for the whole deployment: several would only wait on each other's locks
    scheduler = Leadership("dunning-scheduler", lambda: run_scheduler(app),
                           sessionmaker=app[SESSIONMAKER], clock=app[CLOCK],
                           lease_seconds=app[SETTINGS].leader_lease_seconds)
    tasks = [asyncio.create_task(scheduler.run(), name="dunning-scheduler-lease")]
    bot = app.get(BOT)
    if bot is not None:
        notifier = Notifier(bot, app[SESSIONMAKER], app[BUS], app[CLOCK], app[SETTINGS])
        app[NOTIFIER] = notifier
        tasks.append(asyncio.create_task(keep_running(notifier), name="notifier"))
        tasks.append(asyncio.create_task(
            follow_console(bot, app[SESSIONMAKER], app[BUS], app[CLOCK], app[SETTINGS]),
            name="console-follower",
        ))
        # the team group: topics follow the conversations, posts go out at the group's pace
        poster = TopicPoster(bot, app[SESSIONMAKER], app[BUS], app[CLOCK], app[SETTINGS])
        app[TOPIC_POSTER] = poster
        tasks.append(asyncio.create_task(keep_running(poster), name="team-poster"))
        tasks.append(asyncio.create_task(
            follow_for_team(app[SESSIONMAKER], app[BUS], app[CLOCK], app[SETTINGS]),
            name="team-follower",
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
                       back="dunning reconcile works again after %d failed tries", group=DATABASE)
    pause = 0.0
    async with bus.subscribe() as events:
        while True:
            try:
                async with app[SESSIONMAKER]() as session:
                    news = await dunning.reconcile(session, settings, clock.now())
                for event in news:
                    await bus.publish(event)
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
