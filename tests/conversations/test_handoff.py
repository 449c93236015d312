"""Handoff triggers end to end: the member's words, buttons, media and complex cases."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy import select

from payrescue.db.models import Conversation, Handoff, Message
from payrescue.events import Event
from payrescue.keys import BUS
from tests.conversations.helpers import (
    PNG,
    buttons,
    linked_member,
    open_case,
    texts,
    timeline_of,
)
from tests.harness import RunningService


@asynccontextmanager
async def expect_event(svc: RunningService, topic: str):  # noqa: ANN201
    """Yields a list that holds the first `topic` event once the block has caused it."""
    found: list[Event] = []
    async with svc.app[BUS].subscribe() as events:
        yield found
        async with asyncio.timeout(10):
            while (event := await events.get()).topic != topic:
                pass
        found.append(event)


async def conversation_of(svc: RunningService, member_id: int) -> Conversation:
    async with svc.sessionmaker() as session:
        conversation = await session.scalar(
            select(Conversation).where(Conversation.member_id == member_id)
            .order_by(Conversation.id.desc()).limit(1))
        assert conversation is not None
        return conversation


async def say(svc: RunningService, chat: int, text: str) -> list[dict]:
    before = len(svc.emulator.sent_messages(chat))
    await svc.emulator.send_text(chat, text)
    return await svc.emulator.wait_for_messages(chat, before + 1)


async def test_german_words_hand_over_and_member_can_cancel_the_wait(svc) -> None:
    member, chat = await linked_member(svc, language="de")
    async with expect_event(svc, "conversation.waiting") as waiting:
        messages = await say(svc, chat, "ich will mit einem Menschen sprechen")
    assert "in etwa 10 Minuten" in texts(messages)[-1]
    conversation = await conversation_of(svc, member.id)
    assert waiting[0].data == {"conversation_id": conversation.id}
    assert conversation.status == "waiting"
    assert conversation.handoff_reasons == ["asked_for_human"]
    [back] = buttons(messages[-1])
    assert back["text"] == "Zurück zum Bot"
    before = len(messages)
    await svc.emulator.press_button(chat, messages[-1]["message_id"], back["callback_data"])
    messages = await svc.emulator.wait_for_messages(chat, before + 1)
    assert "wieder beim Bot" in texts(messages)[-1]
    assert (await conversation_of(svc, member.id)).status == "bot"
    messages = await say(svc, chat, "Wie kann ich meine Karte ändern?")
    assert "Website" in texts(messages)[-1]  # the bot answers again


async def test_human_command_outside_business_hours_says_when_the_team_is_back(svc) -> None:
    member, chat = await linked_member(svc, "John Smith", language="en")
    await svc.clock.advance(to=datetime(2026, 1, 10, 12, 0, tzinfo=UTC))  # a Saturday
    messages = await say(svc, chat, "/human")
    # whose clock it is, since the member may live elsewhere
    assert "on Monday at 9:00 (Berlin time)" in texts(messages)[-1]
    assert (await conversation_of(svc, member.id)).status == "waiting"


async def test_gibberish_twice_hands_over(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    messages = await say(svc, chat, "blorp zzzt")
    assert "didn't quite get that" in texts(messages)[-1]
    assert (await conversation_of(svc, member.id)).status == "bot"
    messages = await say(svc, chat, "qwertz uiop")
    assert "passing you on" in texts(messages)[-1]
    conversation = await conversation_of(svc, member.id)
    assert conversation.handoff_reasons == ["not_understood"]
    lines = [(line.sender, line.kind, line.text, line.conversation_id)
             for line in (await timeline_of(svc, member.id, 7))[2:]]  # after /start, hello
    # the agent sees the whole exchange: both messages, the bot's answers, the handoff
    assert [(sender, kind) for sender, kind, _, _ in lines] == [
        ("member", "text"), ("bot", "text"), ("member", "text"), ("system", "handoff"),
        ("bot", "text")]
    assert [line[2] for line in lines if line[0] == "member"] == ["blorp zzzt", "qwertz uiop"]
    assert "didn't quite get that" in lines[1][2] and "passing you on" in lines[4][2]
    assert {line[3] for line in lines} == {conversation.id}


async def test_each_trigger_word_records_its_reason_and_priority(svc) -> None:
    cases = [
        ("I want a chargeback", "dispute"), ("Ich will eine Rückerstattung", "refund"),
        ("ich möchte kündigen", "cancellation"), ("my card was stolen", "fraud"),
        ("Das ist eine Frechheit!", "distress"), ("can I talk to an agent", "asked_for_human"),
    ]
    priorities = {}
    for n, (text, reason) in enumerate(cases):
        member, chat = await linked_member(svc, f"Member{n} X", language="en")
        await say(svc, chat, text)
        conversation = await conversation_of(svc, member.id)
        assert conversation.status == "waiting", text
        assert reason in conversation.handoff_reasons, text
        priorities[reason] = conversation.priority
    assert priorities["fraud"] > priorities["refund"] > priorities["asked_for_human"]
    async with svc.sessionmaker() as session:
        assert len(list(await session.scalars(select(Handoff)))) == len(cases)


async def test_complex_case_goes_to_a_human(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    await open_case(svc, member, attempt_count=3, amount_minor=50000)
    await svc.emulator.wait_for_messages(chat, 2)
    await say(svc, chat, "when will you retry?")
    conversation = await conversation_of(svc, member.id)
    assert conversation.status == "waiting"
    assert set(conversation.handoff_reasons) == {"many_attempts", "large_amount"}
    assert conversation.case_id is not None


async def test_reminder_buttons_explain_and_hand_over(svc) -> None:
    member, chat = await linked_member(svc, language="de")
    await open_case(svc, member, decline_category="expired_card")
    messages = await svc.emulator.wait_for_messages(chat, 2)
    why, human = buttons(messages[-1])[1:]
    await svc.emulator.press_button(chat, messages[-1]["message_id"], why["callback_data"])
    messages = await svc.emulator.wait_for_messages(chat, 3)
    assert "abgelaufen" in texts(messages)[-1]
    await svc.emulator.press_button(chat, messages[1]["message_id"], human["callback_data"])
    messages = await svc.emulator.wait_for_messages(chat, 4)
    assert "Team" in texts(messages)[-1]
    assert (await conversation_of(svc, member.id)).handoff_reasons == ["asked_for_human"]


async def test_a_photo_hands_over_and_is_kept(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    async with expect_event(svc, "message.created") as created:
        await svc.emulator.send_photo(chat, PNG, caption="my bank statement")
        await svc.emulator.wait_for_messages(chat, 2)
    conversation = await conversation_of(svc, member.id)
    assert conversation.handoff_reasons == ["media_sent"]
    async with svc.sessionmaker() as session:
        line = await session.get(Message, created[0].data["message_id"])
    assert (line.kind, line.text) == ("photo", "my bank statement")
    assert line.file_id
