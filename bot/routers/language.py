"""/language: the member picks Deutsch or English with a button; linked members keep it."""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import commands
from bot.filters import PRIVATE_CHAT, InLoop
from bot.keyboards import LanguageChoice, language_keyboard
from bot.replies import render
from payrescue.db.models import Member
from payrescue.i18n import _, normalise, use_language
from payrescue.members import set_language

log = logging.getLogger(__name__)


def build_router() -> Router:
    router = Router(name="language")
    router.message.filter(PRIVATE_CHAT)
    router.callback_query.filter(InLoop(F.message.chat.type == ChatType.PRIVATE))
    router.message.register(ask_language, Command(*commands.LANGUAGE.all_names()))
    router.callback_query.register(choose_language, LanguageChoice.filter())
    return router


async def ask_language(message: Message) -> None:
    await message.answer(render("language/ask.j2"),
                         reply_markup=language_keyboard())


async def choose_language(query: CallbackQuery, callback_data: LanguageChoice, bot: Bot,
                          session: AsyncSession, member: Member | None) -> None:
    chosen = normalise(callback_data.code)
    if chosen is None:  # only a forged or outdated button gets here
        await query.answer(_("Sorry, I do not know that language."), show_alert=True)
        return
    if member is not None:
        await set_language(session, member, chosen)
        # saved before we confirm, so the confirmation never promises something lost
        await session.commit()
        log.info("member %s chose language %s", member.id, chosen)
    with use_language(chosen):
        text = _confirmation(linked=member is not None)
        await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(text)  # also removes the buttons
    else:  # the message is too old to edit (Telegram hides it after 48 hours)
        chat_id = query.message.chat.id if query.message else query.from_user.id
        await bot.send_message(chat_id, text)


def _confirmation(*, linked: bool) -> str:
    return render("language/chosen.j2", linked=linked)
