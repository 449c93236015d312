"""Handing a member to a human: /human, the button, trigger words; /cancel goes back.

`hand_over` is shared with the FAQ and notification routers: it records the reasons,
queues the conversation, commits, tells the console and tells the member what happens now.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import commands
from bot.filters import InLoop
from bot.replies import CANCEL_WAIT, cancel_wait_keyboard, render
from payrescue import handoff_rules
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.conversations import ASSIGNED, HUMAN_OWNED, current_conversation
from payrescue.db.models import Conversation, Member
from payrescue.events import Bus
from payrescue.i18n import format_when

log = logging.getLogger(__name__)


async def hand_over(
    chat: Message,
    session: AsyncSession,
    member: Member,
    reasons: Iterable[str],
    settings: Settings,
    clock: Clock,
    bus: Bus,
    conversation: Conversation | None = None,
) -> Conversation:
    """Queue the member's conversation for a human and tell them how long it will take."""
    now = clock.now()
    conversation = conversation or await current_conversation(session, member.id, now)
    case = await handoff_rules.open_case(session, member.id)
    all_reasons = [*reasons, *handoff_rules.case_reasons(case, settings)]
    already_human = conversation.status in HUMAN_OWNED
    await handoff_rules.request_handoff(session, conversation, all_reasons, now, case)
    await session.commit()
    log.info("conversation %s handed over (%s)", conversation.id, ",".join(all_reasons))
    for event in handoff_rules.handoff_events(conversation):
        await bus.publish(event)
    if not already_human:
        await chat.answer(waiting_text(settings, now), reply_markup=cancel_wait_keyboard())
    else:  # a second tap must not meet silence
        await chat.answer(render("handoff/already_with_team.j2"))
    return conversation


def waiting_text(settings: Settings, now: datetime) -> str:
    hours = settings.hours
    open_now = hours.is_open(now)
    back_at = None if open_now else format_when(hours.next_open(now), settings.zone)
    return render("handoff/waiting.j2", open_now=open_now,
                  minutes=settings.handoff_expected_wait_minutes, back_at=back_at)


async def human_command(message: Message, session: AsyncSession, member: Member | None,
                        settings: Settings, clock: Clock, bus: Bus) -> None:
    if member is None:
        await message.answer(render("handoff/not_connected.j2"))
        return
    await hand_over(message, session, member, [handoff_rules.ASKED], settings, clock, bus)


async def cancel_command(message: Message, session: AsyncSession, member: Member | None,
                         clock: Clock, bus: Bus) -> None:
    await _cancel(message, session, member, clock, bus)


async def cancel_button(query: CallbackQuery, session: AsyncSession, member: Member | None,
                        clock: Clock, bus: Bus) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        await _cancel(query.message, session, member, clock, bus)


async def _cancel(chat: Message, session: AsyncSession, member: Member | None, clock: Clock,
                  bus: Bus) -> None:
    if member is None:
        return
    conversation = await current_conversation(session, member.id, clock.now())
    if not await handoff_rules.cancel_wait(session, conversation, clock.now()):
        await chat.answer(_not_waiting_text(conversation))
        return
    await session.commit()
    for event in handoff_rules.handoff_events(conversation):
        await bus.publish(event)
    await chat.answer(render("handoff/cancelled.j2"))


def _not_waiting_text(conversation: Conversation) -> str:
    """/cancel (or the button) when there is no wait to end: say who answers instead."""
    return render("handoff/not_waiting.j2", assigned=conversation.status == ASSIGNED)


def build_router() -> Router:
    """A fresh router: a Router belongs to one Dispatcher, and a process may build several."""
    router = Router(name="handoff")
    router.message.register(human_command, Command(*commands.HUMAN.all_names()))
    router.message.register(cancel_command, Command("cancel"))
    router.callback_query.register(cancel_button, InLoop(F.data == CANCEL_WAIT))
    return router
