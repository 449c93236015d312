"""The member's rights: /stop ends reminders, /start brings them back, /delete erases.

/stop is kept on record (`Member.opted_out`) and reversible. /delete asks first, then
erases the member's personal data and every message, keeping only anonymous figures
(cases with their amounts and outcomes) for the owner's statistics.
"""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import commands
from bot.filters import InLoop
from bot.replies import DELETE_ABORT, DELETE_CONFIRM, delete_keyboard, render
from payrescue import privacy
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db.models import Member

log = logging.getLogger(__name__)


async def _opted_out(message: Message, member: Member | None) -> bool:
    return member is not None and member.opted_out and member.erased_at is None


async def start_again(message: Message, session: AsyncSession, member: Member) -> None:
    member.opted_out = False
    await session.commit()
    log.info("member %s opted in again", member.id)
    await message.answer(render("rights/reminders_on.j2"))


async def stop(message: Message, session: AsyncSession, member: Member | None) -> None:
    if member is None:
        await message.answer(render("rights/nothing_to_stop.j2"))
        return
    member.opted_out = True
    await session.commit()
    log.info("member %s opted out", member.id)
    await message.answer(render("rights/reminders_off.j2"))


async def delete(message: Message, member: Member | None) -> None:
    if member is None:
        await message.answer(render("rights/no_data.j2"))
        return
    await message.answer(
        render("rights/delete_ask.j2"),
        reply_markup=delete_keyboard(),
    )


async def delete_confirmed(query: CallbackQuery, session: AsyncSession,
                           member: Member | None, clock: Clock, settings: Settings) -> None:
    await query.answer()
    if member is None or not isinstance(query.message, Message):
        return
    await privacy.erase_member(session, member, clock.now(), settings.data_dir)
    await session.commit()
    log.info("member %s erased on request", member.id)
    await query.message.edit_reply_markup(reply_markup=None)
    await query.message.answer(render("rights/deleted.j2"))


async def delete_aborted(query: CallbackQuery) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=None)
        await query.message.answer(render("rights/nothing_deleted.j2"))


def build_router() -> Router:
    """A fresh router: a Router belongs to one Dispatcher, and a process may build several."""
    router = Router(name="rights")
    router.message.register(start_again, CommandStart(deep_link=False), _opted_out)
    router.message.register(stop, Command(*commands.STOP.all_names()))
    router.message.register(delete, Command(*commands.DELETE.all_names()))
    router.callback_query.register(delete_confirmed, InLoop(F.data == DELETE_CONFIRM))
    router.callback_query.register(delete_aborted, InLoop(F.data == DELETE_ABORT))
    return router
