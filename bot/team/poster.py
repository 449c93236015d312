"""Drains the outbox's `team` rows into the team group's forum topics.

The rows (queued by `payrescue.teamgroup.reconcile` and by the group's own handlers) all
belong to one chat, the group, so `payrescue.outbox` hands them out one claim at a time
and in the order they were queued. Telegram allows a group about 20 messages a minute, so
posts are paced by the group's own bucket (`team_group_per_minute`, on the app's clock),
apart from the members' per-chat limits in `bot.notifier`. Each claim takes everything
waiting and does the first piece of work: when several member lines for one topic wait
(the group's budget is spent, or they came in a burst), they go out as one post, in order;
no line is ever dropped. The rest is given back untried for the next round.

Telegram's answers are handled, not feared: 429 waits `retry_after` and tries again; a
topic deleted by hand ("message thread not found") is created again, with a fresh first
post, and the post follows; a topic closed by hand is reopened first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import (
    CloseForumTopic,
    CreateForumTopic,
    EditMessageText,
    ReopenForumTopic,
    SendDocument,
    SendMessage,
    SendPhoto,
    SendSticker,
    SendVoice,
    TelegramMethod,
)
from aiogram.types import Message as TelegramMessage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.team import texts
from payrescue import outbox, teamgroup
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db.models import Agent, Conversation, Member, Message, Outbox, TeamTopic
from payrescue.events import Bus, Event
from payrescue.i18n import use_language
from payrescue.outage import DATABASE, DATABASE_ERRORS, OutageLog

log = logging.getLogger(__name__)
T = TypeVar("T")

CLAIM_AT_ONCE = 100  # rows looked at per round
ROUND_SECONDS = 2.0  # then the rest goes back, so rows queued meanwhile are seen
BATCH_CHARS = 3800  # a batched post stays under Telegram's 4096 (names and newlines added)
HEAD_CHARS = 60  # room for "Name: " before each line
TRIES_IN_PLACE = 4
MAX_ATTEMPTS = 8  # claims of one row before it is given up as failed
THREAD_GONE = "message thread not found"
TOPIC_CLOSED = "TOPIC_CLOSED"
NOT_MODIFIED = ("not modified", "TOPIC_NOT_MODIFIED")
MEDIA_SENDERS: dict[str, Callable[..., TelegramMethod[Any]]] = {
    "photo": SendPhoto, "document": SendDocument, "voice": SendVoice, "sticker": SendSticker,
}


class GroupPacer:
    """Telegram's per-group budget as a token bucket on the app's clock (so tests move a
    `FakeClock` instead of waiting minutes)."""

    def __init__(self, clock: Clock, per_minute: float, burst: int) -> None:
        self.clock = clock
        self.rate = per_minute / 60
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = clock.now()

    def _refill(self) -> None:
        now = self.clock.now()
        elapsed = max((now - self.updated).total_seconds(), 0.0)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now

    def wait_time(self) -> float:
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    async def ready(self) -> None:
        """Wait until a call may go."""
        while (wait := self.wait_time()) > 0:
            await self.clock.sleep(wait)

    async def permit(self) -> None:
        await self.ready()
        self.tokens -= 1

    def empty(self, retry_after: float) -> None:
        """Telegram said 429: nothing before `retry_after`."""
        self._refill()
        self.tokens = min(self.tokens, 0.0) - retry_after * self.rate


@dataclass
class PosterStats:
    posts: int = 0
    batched_lines: int = 0
    too_many_requests: int = 0
    recreated_topics: int = 0
    failed: int = 0


class GiveUp(Exception):
    """The row cannot be posted (Telegram refused it for good)."""


class TopicPoster:
    def __init__(self, bot: Bot, sessionmaker: async_sessionmaker[AsyncSession], bus: Bus,
                 clock: Clock, settings: Settings) -> None:
        self.bot = bot
        self.sessionmaker = sessionmaker
        self.bus = bus
        self.clock = clock
        self.settings = settings
        self.pacer = GroupPacer(clock, settings.team_group_per_minute, settings.team_group_burst)
        self.stats = PosterStats()
        self.worker = ""
        self._wake = asyncio.Event()
        self._round = _Round({})
        self.outage = OutageLog(log, down="the team group poster stopped; restarting",
                                back="the team group poster works again after %d failed runs",
                                group=DATABASE)

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        self.worker = f"team-{uuid.uuid4().hex[:12]}"
        async with self.bus.subscribe() as events:
            watcher = asyncio.create_task(self._watch(events))
            try:
                while True:
                    if not await self.round():
                        await self._idle()
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
                with contextlib.suppress(Exception):  # else their lease runs out
                    async with asyncio.timeout(5), self.sessionmaker() as session:
                        await outbox.release_worker(session, [self.worker])

    async def _watch(self, events: asyncio.Queue[Event]) -> None:
        while True:
            event = await events.get()
            if event.topic in ("outbox.queued", "outbox.updated"):
                self._wake.set()

    async def _idle(self) -> None:
        await outbox.wait_for_work(self.sessionmaker, self.clock, outbox.TEAM, self._wake)

    async def round(self) -> bool:
        """Wait for the group's budget, claim what waits, and work through it, unit by unit,
        while the budget lasts (at most ROUND_SECONDS); the rest goes back untried, in its
        order, for the next round. False when nothing waited."""
        self._wake.clear()
        await self.pacer.ready()  # each call below takes its own permit
        async with self.sessionmaker() as session:
            rows = await outbox.claim(session, self.worker, self.clock.now(), CLAIM_AT_ONCE,
                                      per_chat=CLAIM_AT_ONCE, channel=outbox.TEAM)
        if not rows:
            return False
        rows.sort(key=lambda row: row.id)  # one chat, one priority: first in, first out
        self._round = await self._look_up(rows)
        loop = asyncio.get_running_loop()
        until = loop.time() + ROUND_SECONDS
        done: set[int] = set()
        try:
            for unit in _units(rows, self._round.lines):
                if done and (loop.time() > until or self.pacer.wait_time() > 0):
                    break
                done.update(row.id for row in unit)
                if not await self._run(unit):
                    break  # retried later: the topic's later rows must wait behind it
        finally:
            async with self.sessionmaker() as session:
                await outbox.give_back(session, [row.id for row in rows if row.id not in done])
                await session.commit()
        return True

    async def _run(self, unit: list[Outbox]) -> bool:
        """One post (or topic change); False when it has to be tried again later."""
        try:
            message_id = await self._do(unit)
        except GiveUp as exc:
            await self._finish(unit, outbox.FAILED, None, str(exc))
        except (TelegramNetworkError, TelegramServerError, TimeoutError) as exc:
            await self._retry_later(unit, f"{exc.__class__.__name__}")
            return False
        except (*DATABASE_ERRORS, asyncio.CancelledError):
            raise  # the database went away (the run restarts), or a stop
        except Exception as exc:  # a bug: logged, tried again later, never in a loop
            log.exception("team row could not be posted", extra={"outbox_id": unit[0].id})
            await self._retry_later(unit, exc.__class__.__name__)
            return False
        else:
            await self._finish(unit, outbox.SENT, message_id, None)
        return True

    async def _look_up(self, rows: list[Outbox]) -> _Round:
        """The claimed rows' lines, topics, conversations and members, in three queries."""
        line_ids = [i for row in rows for i in row.payload.get("message_ids") or []]
        topic_ids = {row.payload.get("topic_id") for row in rows}
        found = _Round({})
        async with self.sessionmaker() as session:
            if line_ids:
                lines = await session.scalars(select(Message).where(Message.id.in_(line_ids)))
                found.lines = {line.id: line for line in lines}
            topics = await session.execute(
                select(TeamTopic, Conversation, Member.name)
                .join(Conversation, Conversation.id == TeamTopic.conversation_id)
                .join(Member, Member.id == TeamTopic.member_id)
                .where(TeamTopic.id.in_(topic_ids)))
            for topic, conversation, name in topics.all():
                found.topics[topic.id] = (topic, conversation)
                found.members[topic.member_id] = (name or "").split(" ")[0] \
                    or texts.unknown_member(topic.member_id)
            session.expunge_all()
        return found

    # --- Telegram calls -------------------------------------------------------------------

    async def _call(self, method: TelegramMethod[T]) -> T:
        """One call within the group's budget; 429 waits and tries again, network faults a
        few times in place."""
        tries = 0
        while True:
            await self.pacer.permit()
            try:
                return await self.bot(method)
            except TelegramRetryAfter as exc:
                self.stats.too_many_requests += 1
                self.pacer.empty(exc.retry_after)
            except (TelegramNetworkError, TelegramServerError):
                tries += 1
                if tries >= TRIES_IN_PLACE:
                    raise
                await self.clock.sleep(self.settings.outbox_retry_seconds * 2 ** (tries - 1))

    async def _topic(self, topic_id: int) -> tuple[TeamTopic, Conversation]:
        """The topic and its conversation, as the round looked them up (a topic made again
        during the round keeps its new thread for the round's later posts)."""
        found = self._round.topics.get(topic_id)
        if found is None:  # deleted with its conversation (or its member)
            raise GiveUp("the topic is gone (its conversation was deleted)")
        return found

    async def _do(self, rows: list[Outbox]) -> int | None:
        payload = rows[0].payload
        topic, conversation = await self._topic(payload.get("topic_id"))
        op = payload.get("op")
        with use_language(self.settings.default_language):
            if op == teamgroup.OP_OPEN:
                return await self._open(topic, conversation)
            if op == teamgroup.OP_EDIT:
                return await self._edit_first_post(topic, conversation)
            if op == teamgroup.OP_CLOSE:
                return await self._close(topic, conversation)
            if op == teamgroup.OP_NOTICE:
                return await self._in_topic(topic, conversation, lambda thread: SendMessage(
                    chat_id=topic.group_chat_id, message_thread_id=thread,
                    text=str(payload.get("text", "")), parse_mode=None))
            if op == teamgroup.OP_POST:
                return await self._post(topic, conversation, rows)
        raise GiveUp(f"unknown team row {op!r}")

    async def _render(self, conversation: Conversation) -> tuple[str, texts.FirstPost]:
        async with self.sessionmaker() as session:
            conversation = await session.get(Conversation, conversation.id) or conversation
            return await texts.first_post(session, conversation, self.settings.team_note_prefix)

    async def _open(self, topic: TeamTopic, conversation: Conversation) -> int | None:
        """The topic exists and is open (created, reopened, or created again) with a fresh
        first post."""
        if topic.thread_id is not None:
            try:
                await self._call(ReopenForumTopic(chat_id=topic.group_chat_id,
                                                  message_thread_id=topic.thread_id))
            except TelegramBadRequest as exc:
                if THREAD_GONE in exc.message:
                    return await self._create(topic, conversation)
                if not _not_modified(exc):
                    raise GiveUp(exc.message) from None
            return await self._post_first(topic, conversation)
        return await self._create(topic, conversation)

    async def _create(self, topic: TeamTopic, conversation: Conversation) -> int | None:
        name, _first = await self._render(conversation)
        try:
            created = await self._call(CreateForumTopic(chat_id=topic.group_chat_id, name=name))
        except TelegramBadRequest as exc:  # rights taken away, topics switched off
            raise GiveUp(exc.message) from None
        if topic.thread_id is not None:
            self.stats.recreated_topics += 1
            log.warning("team topic recreated", extra={"topic_id": topic.id})
        topic.thread_id = created.message_thread_id
        async with self.sessionmaker() as session, session.begin():
            stored = await session.get(TeamTopic, topic.id)
            if stored is not None:
                stored.thread_id = topic.thread_id
        return await self._post_first(topic, conversation)

    async def _post_first(self, topic: TeamTopic, conversation: Conversation) -> int | None:
        _name, first = await self._render(conversation)
        sent = await self._call(SendMessage(
            chat_id=topic.group_chat_id, message_thread_id=topic.thread_id, text=first.text,
            parse_mode=None, reply_markup=first.reply_markup))
        topic.first_post_id = sent.message_id
        async with self.sessionmaker() as session, session.begin():
            stored = await session.get(TeamTopic, topic.id)
            if stored is not None:
                stored.first_post_id = sent.message_id
        return sent.message_id

    async def _in_topic(self, topic: TeamTopic, conversation: Conversation,
                        build: Callable[[int | None], TelegramMethod[Any]]) -> int | None:
        """Post into the topic; a topic deleted by hand is created again, one closed by
        hand is reopened, and the post follows."""
        if topic.thread_id is None:
            await self._create(topic, conversation)
        for _attempt in range(2):
            try:
                result = await self._call(build(topic.thread_id))
            except TelegramBadRequest as exc:
                if THREAD_GONE in exc.message:
                    await self._create(topic, conversation)
                    continue
                if TOPIC_CLOSED in exc.message:
                    await self._reopen(topic)
                    continue
                raise GiveUp(exc.message) from None
            return result.message_id if isinstance(result, TelegramMessage) else None
        raise GiveUp("the topic could not be brought back")

    async def _reopen(self, topic: TeamTopic) -> None:
        try:
            await self._call(ReopenForumTopic(chat_id=topic.group_chat_id,
                                              message_thread_id=topic.thread_id))
        except TelegramBadRequest as exc:
            if not _not_modified(exc):
                raise GiveUp(exc.message) from None

    async def _post(self, topic: TeamTopic, conversation: Conversation,
                    rows: list[Outbox]) -> int | None:
        lines = self._round.lines
        ordered = [lines[line_id] for row in rows
                   if (line_id := _line_id(row)) is not None and line_id in lines]
        if not ordered:
            raise GiveUp("the lines are gone")
        names = await self._names(ordered)
        member_name = self._round.members[topic.member_id]
        if len(ordered) == 1 and _is_media(ordered[0]):
            line = ordered[0]
            caption = texts.line_text(line, member_name, names.get(line.agent_id))
            sender = MEDIA_SENDERS[line.kind]

            def media(thread: int | None) -> TelegramMethod[Any]:
                extra = {} if line.kind == "sticker" else {"caption": caption,
                                                           "parse_mode": None}
                return sender(chat_id=topic.group_chat_id, message_thread_id=thread,
                              **{line.kind: line.file_id}, **extra)

            return await self._in_topic(topic, conversation, media)
        text = _joined([texts.line_text(line, member_name, names.get(line.agent_id))
                        for line in ordered])
        if len(ordered) > 1:
            self.stats.batched_lines += len(ordered)
        return await self._in_topic(topic, conversation, lambda thread: SendMessage(
            chat_id=topic.group_chat_id, message_thread_id=thread, text=text, parse_mode=None))

    async def _edit_first_post(self, topic: TeamTopic, conversation: Conversation) -> int | None:
        if topic.first_post_id is None or topic.thread_id is None:
            return await self._open(topic, conversation)
        _name, first = await self._render(conversation)
        try:
            await self._call(EditMessageText(
                chat_id=topic.group_chat_id, message_id=topic.first_post_id, text=first.text,
                parse_mode=None, reply_markup=first.reply_markup))
        except TelegramBadRequest as exc:
            if "message to edit not found" in exc.message:  # the topic was deleted by hand
                return await self._create(topic, conversation)
            if not _not_modified(exc):
                raise GiveUp(exc.message) from None
        return topic.first_post_id

    async def _close(self, topic: TeamTopic, conversation: Conversation) -> int | None:
        if topic.thread_id is None:
            return None  # never shown: nothing to close
        await self._edit_first_post(topic, conversation)
        try:
            await self._call(CloseForumTopic(chat_id=topic.group_chat_id,
                                             message_thread_id=topic.thread_id))
        except TelegramBadRequest as exc:
            if THREAD_GONE not in exc.message and not _not_modified(exc):
                raise GiveUp(exc.message) from None
        return None

    async def _names(self, lines: list[Message]) -> dict[int | None, str]:
        known = self._round.agents
        ids = {line.agent_id for line in lines if line.agent_id is not None} - set(known)
        if ids:
            async with self.sessionmaker() as session:
                found = await session.execute(
                    select(Agent.id, Agent.name).where(Agent.id.in_(ids)))
                known.update({agent_id: name for agent_id, name in found.all()})
        return dict(known)

    # --- outcomes -----------------------------------------------------------------------

    async def _finish(self, rows: list[Outbox], status: str, message_id: int | None,
                      error: str | None) -> None:
        async with self.sessionmaker() as session:
            if status == outbox.SENT:
                await outbox.mark_sent_many(session, self.clock.now(),
                                            [(row, message_id) for row in rows])
                self.stats.posts += 1
            else:
                log.error("team row failed", extra={"outbox_id": rows[0].id, "error": error})
                self.stats.failed += 1
                for row in rows:
                    await outbox.mark_failed(session, row.id, error or "")
            await session.commit()
        for row in rows:
            await self.bus.publish(Event("outbox.updated", {"outbox_id": row.id,
                                                            "status": status}))

    async def _retry_later(self, rows: list[Outbox], error: str) -> None:
        if rows[0].attempts >= MAX_ATTEMPTS:
            await self._finish(rows, outbox.FAILED, None,
                               f"gave up after {rows[0].attempts} attempts: {error}")
            return
        delay = timedelta(seconds=min(60 * 2 ** (rows[0].attempts - 1), 3600))
        log.warning("team row retried later", extra={"outbox_id": rows[0].id, "error": error})
        async with self.sessionmaker() as session:
            for row in rows:
                await outbox.requeue(session, row.id, self.clock.now() + delay, error)
            await session.commit()


@dataclass
class _Round:
    """What one round looked up once: the claimed rows' lines, topics, names."""

    lines: dict[int, Message]
    topics: dict[int, tuple[TeamTopic, Conversation]] = field(default_factory=dict)
    members: dict[int, str] = field(default_factory=dict)
    agents: dict[int | None, str] = field(default_factory=dict)


def _units(rows: list[Outbox], lines: dict[int, Message]) -> list[list[Outbox]]:
    """The claimed rows as pieces of work, in order: a text post takes the later text posts
    of its topic along (one post; order holds per topic, which is all a reader sees) until
    a row of that topic that is not one, or Telegram's length; every other row is alone."""
    units: list[list[Outbox]] = []
    taken: set[int] = set()
    for index, row in enumerate(rows):
        if row.id in taken:
            continue
        unit = [row]
        taken.add(row.id)
        if _text_post(row, lines):
            topic, size = row.payload.get("topic_id"), _size(lines.get(_line_id(row)))
            for later in rows[index + 1:]:
                if later.id in taken or later.payload.get("topic_id") != topic:
                    continue
                size += _size(lines.get(_line_id(later)))
                if not _text_post(later, lines) or size > BATCH_CHARS:
                    break
                unit.append(later)
                taken.add(later.id)
        units.append(unit)
    return units


def _text_post(row: Outbox, lines: dict[int, Message]) -> bool:
    return row.payload.get("op") == teamgroup.OP_POST \
        and not _is_media(lines.get(_line_id(row)))


def _line_id(row: Outbox) -> int | None:
    ids = row.payload.get("message_ids") or []
    return ids[0] if ids else None


def _size(line: Message | None) -> int:
    return HEAD_CHARS + len(line.text or "") if line is not None else 0


def _is_media(line: Message | None) -> bool:
    return line is not None and line.file_id is not None and line.kind in MEDIA_SENDERS


def _not_modified(exc: TelegramBadRequest) -> bool:
    return any(text in exc.message for text in NOT_MODIFIED)


def _joined(parts: list[str]) -> str:
    """Lines in one post, each on its own; cut at Telegram's limit (the rest never fits
    in a batch: batches are cut before it, see `_units`)."""
    return "\n".join(parts)[: texts.MAX_POST]
