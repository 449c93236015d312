"""The bot's answers to free text while no human owns the chat, plus /help and /status.

Trigger words (a wish for a person, a refund, a chargeback, anger…) and media hand the chat
to a human at once; a known question gets its template; the second message in a row the bot
does not understand hands over too, so nobody is stuck with a bot that cannot help.
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import commands
from bot.filters import InLoop
from bot.replies import render
from bot.routers.handoff import hand_over
from bot.routers.relay import store_member_message
from payrescue import dunning, faq, handoff_rules
from payrescue.billing import declines
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.conversations import current_conversation
from payrescue.db.models import Member
from payrescue.events import Bus

log = logging.getLogger(__name__)
NEEDS_LINK = {"update_card", "new_link"}


async def help_command(message: Message) -> None:
    await message.answer(render("faq/help.j2"))


async def status_command(message: Message, session: AsyncSession, member: Member | None,
                         settings: Settings, clock: Clock) -> None:
    if member is None:
        await message.answer(_not_linked())
        return
    text, markup = await _answer("status", session, member, settings, clock)
    await message.answer(text, reply_markup=markup)


async def media_to_human(message: Message, session: AsyncSession, member: Member | None,
                         settings: Settings, clock: Clock, bus: Bus) -> None:
    if member is None:
        await message.answer(_not_linked())
        return
    # the member's words are saved before the handoff is announced, so the agent who opens
    # the conversation from the queue finds them already in the transcript
    conversation = await current_conversation(session, member.id, clock.now())
    await store_member_message(session, bus, conversation, message, clock.now())
    await hand_over(message, session, member, [handoff_rules.MEDIA], settings, clock, bus,
                    conversation)


async def free_text(message: Message, session: AsyncSession, member: Member | None,
                    settings: Settings, clock: Clock, bus: Bus) -> None:
    if member is None:
        await message.answer(_not_linked())
        return
    text = message.text or ""
    member.unreachable = False  # they write to us, so they unblocked the bot
    conversation = await current_conversation(session, member.id, clock.now())
    # what they wrote, else what their case is like (many attempts, a large amount, fraud)
    reasons = faq.triggers(text) or handoff_rules.case_reasons(
        await handoff_rules.open_case(session, member.id), settings)
    if not reasons:
        intent = faq.intent(text)
        if intent is not None:
            conversation.not_understood = 0
            log.info("chat %s: intent %s", message.chat.id, intent)
            answer, markup = await _answer(intent, session, member, settings, clock)
            await session.commit()  # state first: a reply must never announce unsaved state
            await message.answer(answer, reply_markup=markup)
            return
        conversation.not_understood += 1
        if conversation.not_understood < handoff_rules.NOT_UNDERSTOOD_LIMIT:
            await session.commit()
            await message.answer(render("faq/not_understood.j2"))
            return
        reasons = [handoff_rules.NOT_UNDERSTOOD]
    await store_member_message(session, bus, conversation, message, clock.now())
    await hand_over(message, session, member, reasons, settings, clock, bus, conversation)


async def anything_else(message: Message, member: Member | None) -> None:
    """Stickers, voice notes, unknown commands while the bot answers."""
    await message.answer(render("faq/not_understood.j2") if member else _not_linked())


def _not_linked() -> str:
    return render("faq/not_linked.j2")


async def _answer(intent: str, session: AsyncSession, member: Member, settings: Settings,
                  clock: Clock) -> tuple[str, InlineKeyboardMarkup | None]:
    """The answer and the buttons its next step names (the update link, a person)."""
    now = clock.now()
    case = await handoff_rules.open_case(session, member.id)
    context: dict[str, Any] = {"has_case": case is not None}
    keyboard: dict[str, Any] | None = None
    if case is not None:
        context.update(await dunning.case_context(session, settings, case, member, now))
        category = declines.category(case.decline_category)
        context["provider_retries"] = category.provider_retries
        if intent == "why_failed":
            context["explanation"], keyboard = await dunning.explain(
                session, settings, case, member, now)
        if intent in NEEDS_LINK:
            from payrescue.billing.links import create_update_link

            context["url"] = await create_update_link(session, case, settings, now)
            context["label"] = dunning.update_label(case.decline_category)
    if intent == "receipt":
        keyboard = dunning.human_keyboard(case)
    markup = InlineKeyboardMarkup.model_validate(keyboard) if keyboard else None
    return render(f"faq/{intent}.j2", **context), markup


answer_intent = _answer  # /start newlink answers as the "new link" question does


def build_router() -> Router:
    """A fresh router: a Router belongs to one Dispatcher, and a process may build several."""
    router = Router(name="faq")
    router.message.register(help_command, Command(*commands.HELP.all_names()))
    router.message.register(status_command, Command(*commands.STATUS.all_names()))
    router.message.register(media_to_human, InLoop(F.photo | F.document))
    router.message.register(free_text, InLoop(F.text & ~F.text.startswith("/")))
    router.message.register(anything_else)
    return router
