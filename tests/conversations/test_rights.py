"""/stop, /start and /delete: the member decides."""

from __future__ import annotations

from sqlalchemy import func, select

from payrescue.db.models import Member, Message, RecoveryCase, TelegramLink
from tests.conversations.helpers import buttons, linked_member, open_case, outbox_rows, texts
from tests.conversations.test_handoff import expect_event, say


async def test_delete_asks_then_erases_personal_data_and_keeps_figures(svc) -> None:
    member, chat = await linked_member(svc, "Anna Schmidt", language="de")
    case = await open_case(svc, member)
    await svc.emulator.wait_for_messages(chat, 2)
    await say(svc, chat, "/human")
    async with expect_event(svc, "message.created"):
        await svc.emulator.send_text(chat, "Hier ist meine Frage")  # relayed, stored
    messages = await say(svc, chat, "/delete")
    assert "wirklich" in texts(messages)[-1]
    no, yes = buttons(messages[-1])[1], buttons(messages[-1])[0]
    assert "Nein" in no["text"]
    await svc.emulator.press_button(chat, messages[-1]["message_id"], yes["callback_data"])
    messages = await svc.emulator.wait_for_messages(chat, len(messages) + 1)
    assert "gelöscht" in texts(messages)[-1]
    async with svc.sessionmaker() as session:
        erased = await session.get(Member, member.id)
        assert (erased.name, erased.email, erased.erased_at is not None) == (None, None, True)
        assert await session.scalar(select(func.count()).select_from(Message)) == 0
        assert await session.scalar(select(func.count()).select_from(TelegramLink)) == 0
        kept = await session.get(RecoveryCase, case.id)
        assert kept.amount_minor == 2900  # anonymous figures stay
    assert await outbox_rows(svc) == []
    messages = await say(svc, chat, "Hallo?")
    assert "nicht mit einer Mitgliedschaft verbunden" in texts(messages)[-1] or \
        "keiner Mitgliedschaft" in texts(messages)[-1]


async def test_delete_can_be_aborted(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    messages = await say(svc, chat, "/delete")
    no = buttons(messages[-1])[1]
    await svc.emulator.press_button(chat, messages[-1]["message_id"], no["callback_data"])
    messages = await svc.emulator.wait_for_messages(chat, len(messages) + 1)
    assert "Nothing was deleted" in texts(messages)[-1]
    async with svc.sessionmaker() as session:
        assert (await session.get(Member, member.id)).name == "Anna Schmidt"


async def test_help_lists_what_the_bot_can_do(svc) -> None:
    _, chat = await linked_member(svc, language="de")
    text = texts(await say(svc, chat, "/help"))[-1]
    # a German member reads the German spellings the menu offers
    for command in ("/hilfe", "/status", "/mensch", "/stop", "/loeschen", "/sprache"):
        assert command in text
    assert "Rechnung" in text
