"""While a human owns the chat: every member message is stored and shown to the console.

The bot stays silent here (commands are handled by the routers before this one). This
module also follows the console through the bus: an agent typing shows "typing…" in
Telegram, a resolve asks the member for a rating, a hand-back is announced. Rating buttons
and the optional comment after a rating are handled here too.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Filter
from aiogram.types import CallbackQuery
from aiogram.types import Message as TelegramMessage
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.filters import InLoop
from bot.replies import RATE_PREFIX, rating_keyboard, render
from bot.timeline import incoming_line, member_line
from payrescue import outbox, timeline
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.conversations import BOT, HUMAN_OWNED, RESOLVED
from payrescue.db.models import Conversation, Member, Message
from payrescue.dunning import language_of
from payrescue.events import Bus, Event
from payrescue.i18n import use_language

log = logging.getLogger(__name__)
COMMENT_WINDOW = timedelta(hours=24)
REFERRAL_FROM = 4  # stars  # a text within a day of rating counts as its comment


async def store_member_message(session: AsyncSession, bus: Bus, conversation: Conversation,
                               message: TelegramMessage, now: datetime) -> Message:
    """Put the member's line (recorded for this update, see `bot.timeline`) into the
    conversation. It commits with the update's transaction (the middleware's, once the
    handler is done, or the handler's own before it answers) and is announced with the
    update's other lines. Outside the dispatcher's middleware it is added, committed and
    announced (ids only on the bus) here."""
    conversation.updated_at = now
    row = incoming_line()
    if row is not None:
        row.conversation_id = conversation.id
        return row
    row = member_line(conversation.member_id, message, now)
    row.conversation_id = conversation.id
    session.add(row)
    await session.commit()
    await bus.publish(timeline.created_event(row))
    return row


class ForTheHumans(Filter):
    """A non-command message the bot must not answer: the conversation waits for, or
    belongs to, a human; or the member is adding a comment to the rating they just gave.
    The member's latest conversation decides both; the middleware read it with the member
    (`find_by_chat`), so this costs no query."""

    async def __call__(self, message: TelegramMessage, member: Member | None,
                       latest_conversation: Conversation | None,
                       clock: Clock) -> bool | dict[str, Any]:
        if member is None or (message.text or "").startswith("/"):  # commands still work
            return False
        latest = latest_conversation
        if latest is None:
            return False
        if latest.status in HUMAN_OWNED:
            return {"conversation": latest, "as_comment": False}
        if _awaits_comment(latest, message, clock.now()):
            return {"conversation": latest, "as_comment": True}
        return False


def _awaits_comment(conversation: Conversation, message: TelegramMessage,
                    now: datetime) -> bool:
    return (bool(message.text) and conversation.status == RESOLVED
            and conversation.rating is not None and conversation.rating_comment is None
            and now - conversation.updated_at <= COMMENT_WINDOW)


async def relay(message: TelegramMessage, session: AsyncSession, member: Member,
                conversation: Conversation, as_comment: bool, clock: Clock, bus: Bus) -> None:
    if member.unreachable:  # they write to us, so they unblocked the bot
        member.unreachable = False
    if as_comment:
        conversation.rating_comment = message.text
    await store_member_message(session, bus, conversation, message, clock.now())
    if as_comment:
        await session.commit()  # state first: the thanks must never announce an unsaved comment
        await message.answer(render("handoff/comment.j2"))


async def rate(query: CallbackQuery, session: AsyncSession, member: Member | None,
               settings: Settings, clock: Clock, bus: Bus) -> None:
    parsed = _parse_rating(query.data or "")
    conversation = await session.get(Conversation, parsed[0]) if parsed else None
    if parsed is None or conversation is None or member is None \
            or conversation.member_id != member.id:
        await query.answer()
        return
    # the referral link is offered once per member: after their first 4 or 5
    offered_before = await session.scalar(
        select(func.count()).select_from(Conversation).where(
            Conversation.member_id == member.id, Conversation.rating >= REFERRAL_FROM))
    offer = (conversation.rating is None and parsed[1] >= REFERRAL_FROM
             and not offered_before and settings.referral_url is not None)
    conversation.rating = parsed[1]
    conversation.updated_at = clock.now()
    rated = timeline.event(session, conversation, timeline.RATED, clock.now(),
                           data={"stars": parsed[1]})
    await session.commit()
    await bus.publish(timeline.created_event(rated))
    await bus.publish(Event("conversation.updated", {
        "conversation_id": conversation.id, "status": conversation.status,
        "assigned_agent_id": conversation.assigned_agent_id, "source": "bot",
    }))
    await query.answer("⭐" * parsed[1])
    if isinstance(query.message, TelegramMessage):
        await query.message.edit_reply_markup(reply_markup=None)
        await query.message.answer(render(
            "handoff/rated.j2", referral_url=str(settings.referral_url) if offer else None
        ))


def _parse_rating(data: str) -> tuple[int, int] | None:
    try:
        conversation_id, stars = (int(part) for part in data[len(RATE_PREFIX):].split(":"))
    except ValueError:
        return None
    return (conversation_id, stars) if 1 <= stars <= 5 else None


# --- following the console ----------------------------------------------------------------


async def follow_console(bot: Bot, sessionmaker: async_sessionmaker[AsyncSession], bus: Bus,
                         clock: Clock, settings: Settings) -> None:
    """React to agents: typing → chat action; resolved → rating; handed back → announce."""
    async with bus.subscribe() as events:
        while True:
            event = await events.get()
            try:
                await _on_console_event(event, bot, sessionmaker, bus, clock, settings)
            except asyncio.CancelledError:
                raise
            except Exception:
                # the state stays in the database; the next event starts afresh
                log.exception("console event %s not handled", event.topic)


async def _on_console_event(event: Event, bot: Bot, sessionmaker: async_sessionmaker[AsyncSession],
                            bus: Bus, clock: Clock, settings: Settings) -> None:
    if event.topic == "agent.typing" and isinstance(event.data.get("chat_id"), int):
        try:
            await bot.send_chat_action(event.data["chat_id"], "typing")
        except TelegramAPIError as exc:  # cosmetic: never worth a retry
            log.info("typing indicator not shown: %s", exc.__class__.__name__)
        return
    if event.topic != "conversation.updated" or event.data.get("source") == "bot":
        return
    status = event.data.get("status")
    if status not in (RESOLVED, BOT):
        return
    async with sessionmaker() as session:
        row = await _closing_message(session, event.data.get("conversation_id"), status,
                                     clock.now(), settings)
        await session.commit()
    if row is not None:
        await bus.publish(Event("outbox.queued", {"outbox_id": row.id}))


async def _closing_message(session: AsyncSession, conversation_id: object, status: str,
                           now: datetime, settings: Settings) -> outbox.Outbox | None:
    if not isinstance(conversation_id, int):
        return None
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or conversation.status != status:
        return None  # already moved on: the newer event will speak for itself
    member = await session.get(Member, conversation.member_id)
    if member is None or member.telegram is None or member.erased_at is not None:
        return None
    with use_language(language_of(member, settings)):
        if status == RESOLVED:
            payload = {"text": render("handoff/rate.j2"),
                       "reply_markup": rating_keyboard(conversation.id)}
            key = f"rate:{conversation.id}:{conversation.resolved_at}"
        else:
            payload = {"text": render("handoff/back.j2")}
            key = f"back:{conversation.id}:{conversation.updated_at}"
    payload["parse_mode"] = "HTML"
    return await outbox.queue_message(session, member, "bot", payload, now,
                                      priority=outbox.PRIORITY_BOT, dedupe_key=key,
                                      conversation_id=conversation.id)


async def member_edited(message: TelegramMessage) -> None:
    """A member changed a message they sent: `bot.timeline` keeps the new wording beside the
    original (registered so that Telegram delivers edits at all); the bot says nothing."""


def build_router() -> Router:
    """A fresh router: a Router belongs to one Dispatcher, and a process may build several."""
    router = Router(name="relay")
    router.edited_message.register(member_edited)
    router.message.register(relay, ForTheHumans())
    router.callback_query.register(rate, InLoop(F.data.startswith(RATE_PREFIX)))
    return router
