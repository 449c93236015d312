"""The buttons under a payment reminder: "Why did this fail?" and "Talk to a person".

("Update payment method" is a URL button; Telegram opens it without asking us.)
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.filters import InLoop
from bot.replies import render
from bot.routers.handoff import hand_over
from payrescue import dunning, handoff_rules
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db.models import Member, RecoveryCase
from payrescue.events import Bus


async def _own_case(session: AsyncSession, data: str, prefix: str,
                    member: Member | None) -> RecoveryCase | None:
    """The case a button names, if it belongs to the member pressing it."""
    try:
        case_id = int(data[len(prefix):])
    except ValueError:
        return None
    case = await session.get(RecoveryCase, case_id)
    if case is None or member is None or case.member_id != member.id:
        return None
    return case


async def why_failed(query: CallbackQuery, session: AsyncSession, member: Member | None,
                     settings: Settings, clock: Clock) -> None:
    await query.answer()
    case = await _own_case(session, query.data or "", dunning.WHY_PREFIX, member)
    if not isinstance(query.message, Message):
        return
    if case is None or member is None:
        await query.message.answer(render("faq/settled.j2"))
        return
    text, keyboard = await dunning.explain(session, settings, case, member, clock.now())
    await session.commit()  # the update link in the keyboard is saved before it is shown
    await query.message.answer(text, reply_markup=InlineKeyboardMarkup.model_validate(keyboard))


async def talk_to_person(query: CallbackQuery, session: AsyncSession, member: Member | None,
                         settings: Settings, clock: Clock, bus: Bus) -> None:
    await query.answer()
    if member is None or not isinstance(query.message, Message):
        return
    await hand_over(query.message, session, member, [handoff_rules.ASKED], settings, clock,
                    bus)


def build_router() -> Router:
    """A fresh router: a Router belongs to one Dispatcher, and a process may build several."""
    router = Router(name="notifications")
    router.callback_query.register(why_failed, InLoop(F.data.startswith(dunning.WHY_PREFIX)))
    router.callback_query.register(talk_to_person, InLoop(F.data.startswith(dunning.HUMAN_PREFIX)))
    return router
