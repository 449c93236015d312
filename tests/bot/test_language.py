"""/language: buttons switch between Deutsch and English, and a linked member keeps it."""

from __future__ import annotations

from payrescue.db.models import Member
from tests.harness import RunningService


async def _ask_language(service: RunningService, user: dict) -> dict:
    before = len(service.emulator.sent_messages(user["id"]))
    await service.emulator.send_text(user["id"], "/language")
    return (await service.emulator.wait_for_messages(user["id"], before + 1))[-1]


def _buttons(message: dict) -> dict[str, str]:
    rows = message["reply_markup"]["inline_keyboard"]
    return {button["text"]: button["callback_data"] for row in rows for button in row}


async def _press(service: RunningService, user: dict, message: dict, label: str) -> dict:
    """Press a button; return the message once the bot has edited it."""
    await service.emulator.press_button(user["id"], message["message_id"],
                                        _buttons(message)[label])
    return await service.wait_for_edit(user["id"], message["message_id"])


async def test_linked_member_switches_language_and_it_is_remembered(
    service: RunningService,
) -> None:
    member = await service.add_member(name="Anna Schmidt", language="en")
    user = service.create_user(language_code="en")
    await service.link(member, user)

    question = await _ask_language(service, user)
    assert question["plain_text"] == "Which language would you like me to use?"
    assert set(_buttons(question)) == {"Deutsch", "English"}

    edited = await _press(service, user, question, "Deutsch")

    assert edited["plain_text"] == "Erledigt! Ab jetzt schreibe ich Ihnen auf Deutsch."
    assert edited["reply_markup"] is None  # the buttons are gone once chosen
    assert any(answer["callback_query_id"] for answer in service.emulator.callback_answers)
    async with service.sessionmaker() as session:
        assert (await session.get(Member, member.id)).language == "de"
    # remembered: the next conversation is in German
    before = len(service.emulator.sent_messages(user["id"]))
    await service.emulator.send_text(user["id"], "/start")
    reply = (await service.emulator.wait_for_messages(user["id"], before + 1))[-1]
    assert "Dieser Chat ist bereits mit Ihrer Mitgliedschaft verbunden." in reply["plain_text"]


async def test_language_question_follows_the_current_language(service: RunningService) -> None:
    user = service.create_user(language_code="de")

    question = await _ask_language(service, user)

    assert question["plain_text"] == "In welcher Sprache soll ich Ihnen schreiben?"


async def test_unlinked_chat_gets_the_chosen_language_and_how_to_link(
    service: RunningService,
) -> None:
    user = service.create_user(language_code="de")
    question = await _ask_language(service, user)

    edited = await _press(service, user, question, "English")

    assert edited["plain_text"].startswith("I'll answer you in English.")
    assert "personal link" in edited["plain_text"]
    async with service.sessionmaker() as session:
        assert await session.get(Member, 1) is None  # nothing was created or stored

