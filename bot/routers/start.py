"""/start: link a chat to a member through their deep link, or say how to do it."""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.filters import CommandObject, CommandStart
from aiogram.types import InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import timeline
from bot.filters import PRIVATE_CHAT, InLoop
from bot.replies import render
from payrescue import dunning, handoff_rules
from payrescue.billing.links import create_update_link
from payrescue.billing.pages import NEW_LINK_PAYLOAD
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db.models import Member
from payrescue.events import Bus
from payrescue.i18n import choose_language, use_language
from payrescue.members import LinkFailure, link_chat

log = logging.getLogger(__name__)


def build_router() -> Router:
    router = Router(name="start")
    # payment matters are personal: a deep link opened in a group must not link the group
    router.message.filter(PRIVATE_CHAT)
    # the expired-link page's button: "newlink" is no member's token but a wish
    router.message.register(send_new_link, CommandStart(
        deep_link=True, magic=F.args == NEW_LINK_PAYLOAD))
    router.message.register(start_with_token, CommandStart(deep_link=True),
                            InLoop(F.from_user))
    router.message.register(start_without_token, CommandStart())
    return router


async def start_with_token(message: Message, command: CommandObject, session: AsyncSession,
                           settings: Settings, clock: Clock, bus: Bus) -> None:
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
    with use_language(language), timeline.linked(session, result.member, message,
                                                 clock.now()) as lines:
        await message.answer(render("start/linked.j2", first_name=result.member.first_name,
                                    moved=result.moved))
        await timeline.finish(lines)
    await session.commit()
    await timeline.announce(lines, bus)


async def send_new_link(message: Message, session: AsyncSession, member: Member | None,
                        settings: Settings, clock: Clock) -> None:
    """A fresh update link for the member's open case, one tap from the expired page."""
    if member is None:
        await message.answer(_not_connected())
        return
    now = clock.now()
    case = await handoff_rules.open_case(session, member.id)
    if case is None:
        await message.answer(render("faq/new_link.j2"))
        return
    url = await create_update_link(session, case, settings, now)
    await session.commit()  # the link exists before the member can tap it
    keyboard = dunning.case_keyboard(case, url, why=True)
    await message.answer(render("faq/new_link.j2", url=url),
                         reply_markup=InlineKeyboardMarkup.model_validate(keyboard))


def _not_connected() -> str:
    return render("start/not_connected.j2")


async def start_without_token(message: Message, member: Member | None) -> None:
    if member is None:
        await message.answer(_not_connected())
        return
    await message.answer(render("start/already_connected.j2", first_name=member.first_name))


def _failure_text(failure: LinkFailure | None) -> str:
    return render("start/link_failed.j2", failure=failure.value if failure else "invalid")
