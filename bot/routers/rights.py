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
from bot.replies import DELETE_ABORT, DELETE_CONFIRM, delete_keyboard
from payrescue import privacy
from payrescue.clock import Clock
from payrescue.db.models import Member
from payrescue.i18n import _

log = logging.getLogger(__name__)


def _opted_out(message: Message, member: Member | None) -> bool:
    return member is not None and member.opted_out and member.erased_at is None


async def start_again(message: Message, session: AsyncSession, member: Member) -> None:
    member.opted_out = False
    await session.commit()
    log.info("member %s opted in again", member.id)
    await message.answer(_("Welcome back! You will receive payment reminders here again. "
                           "Write /stop at any time to end them."))


async def stop(message: Message, session: AsyncSession, member: Member | None) -> None:
    if member is None:
        await message.answer(_("This chat is not connected to a membership, so we send "
                               "you nothing."))
        return
    member.opted_out = True
    await session.commit()
    log.info("member %s opted out", member.id)
    await message.answer(_("Done: you will receive no more payment reminders here. You can "
                           "still write to us at any time, and /start turns reminders back "
                           "on."))


async def delete(message: Message, member: Member | None) -> None:
    if member is None:
        await message.answer(_("We hold no data connected to this chat."))
        return
    await message.answer(
        _("Do you really want us to delete your personal data and this chat history? "
          "This cannot be undone, and we can no longer help you here afterwards."),
        reply_markup=delete_keyboard(),
    )


async def delete_confirmed(query: CallbackQuery, session: AsyncSession,
                           member: Member | None, clock: Clock) -> None:
    await query.answer()
    if member is None or not isinstance(query.message, Message):
        return
    await privacy.erase_member(session, member, clock.now())
    await session.commit()
    log.info("member %s erased on request", member.id)
    await query.message.edit_reply_markup(reply_markup=None)
    await query.message.answer(_("Your personal data and messages have been deleted. "
                                 "Goodbye, and all the best!"))


async def delete_aborted(query: CallbackQuery) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=None)
        await query.message.answer(_("Nothing was deleted."))


def build_router() -> Router:
    """A fresh router: a Router belongs to one Dispatcher, and a process may build several."""
    router = Router(name="rights")
    router.message.register(start_again, CommandStart(deep_link=False), _opted_out)
    router.message.register(stop, Command(*commands.STOP.all_names()))
    router.message.register(delete, Command(*commands.DELETE.all_names()))
    router.callback_query.register(delete_confirmed, F.data == DELETE_CONFIRM)
    router.callback_query.register(delete_aborted, F.data == DELETE_ABORT)
    return router
