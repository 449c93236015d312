"""A member links their Telegram chat through the deep link, in the right language.

Real aiogram polling the emulator, real database (SQLite and PostgreSQL), real catalogs.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiogram import Dispatcher
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import Update
from sqlalchemy import func, select

from bot.keys import BOT_RUNNER
from bot.middlewares import MemberContextMiddleware
from bot.routers import start
from payrescue.db.models import Member, TelegramLink, UsedToken
from tests.harness import RunningService, running_service

GERMAN_LINKED = "Ihr Telegram ist jetzt mit Ihrer Mitgliedschaft verbunden."
ENGLISH_LINKED = "Your Telegram is now connected to your membership."


async def _link_of(service: RunningService, member: Member) -> TelegramLink | None:
    async with service.sessionmaker() as session:
        return await session.scalar(
            select(TelegramLink).where(TelegramLink.member_id == member.id)
        )


async def _link_count(service: RunningService) -> int:
    async with service.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(TelegramLink)) or 0


async def _send(service: RunningService, user: dict, text: str) -> str:
    """The member writes `text`; returns the bot's next answer as the member sees it."""
    before = len(service.emulator.sent_messages(user["id"]))
    await service.emulator.send_text(user["id"], text)
    messages = await service.emulator.wait_for_messages(user["id"], before + 1)
    return messages[-1]["plain_text"]


async def test_deep_link_links_the_chat_and_greets_by_stored_language(
    service: RunningService,
) -> None:
    member = await service.add_member(name="Anna Schmidt", language="de")
    user = service.create_user("Anni", language_code="en")  # the stored choice wins

    greeting = (await service.link(member, user))[-1]

    assert greeting["plain_text"].startswith("Hallo Anna!")
    assert GERMAN_LINKED in greeting["plain_text"]
    link = await _link_of(service, member)
    assert link is not None
    assert (link.chat_id, link.telegram_user_id, link.language_code) == (
        user["id"], user["id"], "en"
    )


async def test_greeting_follows_telegram_language_when_none_is_stored(
    service: RunningService,
) -> None:
    member = await service.add_member(name="Jonas Weber")  # no stored language
    user = service.create_user("Jonas", language_code="de-AT")

    greeting = (await service.link(member, user))[-1]["plain_text"]

    assert greeting.startswith("Hallo Jonas!") and GERMAN_LINKED in greeting


async def test_greeting_falls_back_to_the_default_language(
    engine, clock, tmp_path  # noqa: ANN001 - fixtures
) -> None:
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               default_language="de") as service:
        member = await service.add_member(name="Marie Curie")
        user = service.create_user("Marie", language_code="fr")  # a language we do not speak

        greeting = (await service.link(member, user))[-1]["plain_text"]

        assert greeting.startswith("Hallo Marie!") and GERMAN_LINKED in greeting


async def test_member_name_is_escaped_not_markup(service: RunningService) -> None:
    member = await service.add_member(name="<b>Eve</b> Hacker", language="en")
    user = service.create_user("Eve", language_code="en")

    greeting = (await service.link(member, user))[-1]

    # the member sees their name literally, and Telegram got no bold entity from it
    assert greeting["plain_text"].startswith("Hello <b>Eve</b>!")
    assert "&lt;b&gt;Eve&lt;/b&gt;" in greeting["text"]
    assert greeting["entities"] == []


async def test_tampered_token_is_refused_and_changes_nothing(service: RunningService) -> None:
    member = await service.add_member(language="en")
    user = service.create_user(language_code="en")
    token = await service.link_token(member)
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]

    answer = await _send(service, user, f"/start {tampered}")

    assert answer.startswith("This link doesn't work.")
    assert await _link_count(service) == 0
    # the genuine token still works afterwards: the failed attempt did not spend it
    assert ENGLISH_LINKED in (await service.link(member, user))[-1]["plain_text"]


async def test_expired_token_is_refused_in_the_members_language(
    service: RunningService,
) -> None:
    member = await service.add_member(language="de")
    user = service.create_user(language_code="de")
    token = await service.link_token(member)
    await service.clock.advance(timedelta(days=service.settings.link_token_days,
                                          seconds=1).total_seconds())

    answer = await _send(service, user, f"/start {token}")

    assert answer.startswith("Dieser Link ist abgelaufen.")
    assert await _link_count(service) == 0


async def test_used_token_is_refused_and_the_link_stays(service: RunningService) -> None:
    member = await service.add_member(language="en")
    first = service.create_user("Anna", language_code="en")
    token = await service.link_token(member)
    await _send(service, first, f"/start {token}")

    stranger = service.create_user("Mallory", language_code="en")
    answer = await _send(service, stranger, f"/start {token}")

    assert answer.startswith("This link has already been used.")
    link = await _link_of(service, member)
    assert link is not None and link.chat_id == first["id"]


async def test_start_without_token_explains_how_to_link(service: RunningService) -> None:
    user = service.create_user(language_code="de")

    answer = await _send(service, user, "/start")

    assert answer.startswith("Willkommen!") and "persönlichen Link" in answer
    assert await _link_count(service) == 0


async def test_linked_member_sending_start_hears_they_are_connected(
    service: RunningService,
) -> None:
    member = await service.add_member(name="Anna Schmidt", language="en")
    user = service.create_user(language_code="en")
    await service.link(member, user)

    answer = await _send(service, user, "/start")

    assert answer.startswith("Hello Anna!")
    assert "This chat is already connected to your membership." in answer


async def test_relinking_from_a_new_chat_moves_the_link(service: RunningService) -> None:
    member = await service.add_member(name="Anna Schmidt", language="en")
    old_phone = service.create_user("Anna", language_code="en")
    new_phone = service.create_user("Anna", language_code="en")
    await service.link(member, old_phone)

    greeting = (await service.link(member, new_phone))[-1]["plain_text"]

    assert "from now on we'll write to you here instead" in greeting
    link = await _link_of(service, member)
    assert link is not None and link.chat_id == new_phone["id"]
    assert await _link_count(service) == 1
    # the old chat is a stranger now
    assert (await _send(service, old_phone, "/start")).startswith("Welcome!")


async def test_unknown_member_gets_a_clear_answer(service: RunningService) -> None:
    member = await service.add_member(language="en")
    token = await service.link_token(member)
    async with service.sessionmaker() as session, session.begin():
        await session.delete(await session.get(Member, member.id))
    user = service.create_user(language_code="en")

    answer = await _send(service, user, f"/start {token}")

    assert answer.startswith("We couldn't find the membership for this link.")
    async with service.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(UsedToken)) == 0


@pytest.mark.parametrize("payload", ["not-a-token", "x" * 200, "abc def"])
async def test_garbage_payloads_are_refused_politely(service: RunningService,
                                                     payload: str) -> None:
    user = service.create_user(language_code="en")

    answer = await _send(service, user, f"/start {payload}")

    assert answer.startswith("This link doesn't work.")


async def test_a_deep_link_opened_in_a_group_links_nothing(service: RunningService) -> None:
    member = await service.add_member(language="en")
    user = service.create_user(language_code="en")
    group_update = Update.model_validate({
        "update_id": 800_001,
        "message": {
            "message_id": 1, "date": 1_767_600_000, "from": user,
            "chat": {"id": -100_123, "type": "supergroup", "title": "Members' lounge"},
            "text": f"/start {await service.link_token(member)}",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    })

    dispatcher = Dispatcher(**service.app[BOT_RUNNER].dispatcher.workflow_data)
    dispatcher.update.outer_middleware(MemberContextMiddleware())
    dispatcher.include_router(start.build_router())

    result = await dispatcher.feed_update(service.bot, group_update)

    assert result is UNHANDLED
    assert await _link_count(service) == 0
