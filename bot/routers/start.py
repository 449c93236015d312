"""/start: link a chat to a member through their deep link, or say how to do it."""

from __future__ import annotations

import logging
from html import escape

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import CommandObject, CommandStart
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.routers.faq import answer_intent
from payrescue.billing.pages import NEW_LINK_PAYLOAD
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db.models import Member
from payrescue.i18n import _, choose_language, use_language
from payrescue.members import LinkFailure, LinkResult, link_chat

log = logging.getLogger(__name__)


def build_router() -> Router:
    router = Router(name="start")
    # payment matters are personal: a deep link opened in a group must not link the group
    router.message.filter(F.chat.type == ChatType.PRIVATE)
    # first: "newlink" is what the expired-link page's Telegram button sends, not a token
    router.message.register(start_new_link,
                            CommandStart(deep_link=True, magic=F.args == NEW_LINK_PAYLOAD))
    router.message.register(start_with_token, CommandStart(deep_link=True), F.from_user)
    router.message.register(start_without_token, CommandStart())
    return router


async def start_with_token(message: Message, command: CommandObject, session: AsyncSession,
                           settings: Settings, clock: Clock) -> None:
    user = message.from_user
    assert user is not None  # guaranteed by the F.from_user filter
    result = await link_chat(
        session,
        token=command.args or "",
        secret=settings.secret,
        chat_id=message.chat.id,
        telegram_user_id=user.id,
        language_code=user.language_code,
        now=clock.now(),
    )
    if result.member is None:
        log.info("chat %s: link refused (%s)", message.chat.id, result.failure)
        await message.answer(_failure_text(result.failure))
        return
    # commit before greeting: a greeting must never announce a link that was not saved
    await session.commit()
    log.info("chat %s linked to member %s (moved: %s)",
             message.chat.id, result.member.id, result.moved)
    language = choose_language(result.member.language, user.language_code,
                               settings.default_language)
    with use_language(language):
        await message.answer(_greeting(result))


async def start_new_link(message: Message, session: AsyncSession, member: Member | None,
                         settings: Settings, clock: Clock) -> None:
    """The expired page promised a fresh link: a linked member gets one at once."""
    if member is None:
        await message.answer(_(
            "Please open the personal link from our e-mail first: it connects this chat to "
            "your membership, and then we can send you a new payment link here."))
        return
    text = await answer_intent("new_link", session, member, settings, clock)
    await session.commit()  # the link is stored before it is shown
    await message.answer(text)


async def start_without_token(message: Message, member: Member | None) -> None:
    if member is None:
        await message.answer(_(
            "Welcome! To receive messages about your membership here, please open the "
            "personal link we sent you by e-mail. If you cannot find it, just ask us for "
            "a new one."
        ))
        return
    await message.answer("\n\n".join([
        _hello(member),
        _("This chat is already connected to your membership."),
        _("Use /language to switch between German and English."),
    ]))


def _greeting(result: LinkResult) -> str:
    assert result.member is not None
    parts = [
        _hello(result.member),
        _("Your Telegram is now connected to your membership. If a payment ever needs your "
          "attention, we will let you know right here."),
    ]
    if result.moved:
        parts.append(_("You had connected another chat before; from now on we will write to "
                       "you here instead."))
    parts.append(_("Use /language to switch between German and English."))
    return "\n\n".join(parts)


def _hello(member: Member) -> str:
    if not member.first_name:
        return _("Hello!")
    # a member's name is the only text here we did not write: it must never become markup
    return _("Hello {name}!").format(name=escape(member.first_name))


def _failure_text(failure: LinkFailure | None) -> str:
    if failure is LinkFailure.EXPIRED:
        return _("This link has expired. Please ask us for a new one; it only takes a moment.")
    if failure is LinkFailure.USED:
        return _("This link has already been used. If that was not you, or you want to "
                 "connect a different chat, please ask us for a new link.")
    if failure is LinkFailure.UNKNOWN_MEMBER:
        return _("We could not find the membership for this link. Please contact us and we "
                 "will sort it out.")
    return _("This link does not work. Please open it again exactly as you received it, "
             "or ask us for a new one.")
