"""While a human owns the chat: relay of every kind of message, typing, rating, hand-back."""

from __future__ import annotations

from sqlalchemy import select

from payrescue import assignment
from payrescue.db.models import Agent, Conversation, Message
from payrescue.events import Event
from payrescue.keys import BUS
from tests.conversations.helpers import PNG, buttons, linked_member, texts
from tests.conversations.test_handoff import conversation_of, expect_event, say
from tests.harness import RunningService


async def agent_takes(svc: RunningService, conversation_id: int) -> Agent:
    async with svc.sessionmaker() as session:
        agent = Agent(email="eva@example.org", name="Eva", password_hash="-",
                      created_at=svc.clock.now())
        session.add(agent)
        await session.flush()
        result = await assignment.claim(session, conversation_id, agent.id, svc.clock.now())
        assert result.won
        await session.commit()
        return agent


async def console_does(svc: RunningService, action, conversation_id: int,  # noqa: ANN001
                       agent: Agent) -> None:
    """What the console does on resolve / hand back: change, commit, publish."""
    async with svc.sessionmaker() as session:
        conversation = await action(session, conversation_id, agent, svc.clock.now())
        await session.commit()
        event = assignment.updated_event(conversation)
    await svc.app[BUS].publish(event)


async def test_every_kind_of_member_message_reaches_the_console(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    await say(svc, chat, "/human")
    conversation = await conversation_of(svc, member.id)
    await agent_takes(svc, conversation.id)
    bot_messages = len(svc.emulator.sent_messages(chat))
    sends = [
        ("text", lambda: svc.emulator.send_text(chat, "<b>hi</b> are you there?")),
        ("photo", lambda: svc.emulator.send_photo(chat, PNG)),
        ("document", lambda: svc.emulator.send_document(chat, b"%PDF-1.4", "bill.pdf",
                                                        "application/pdf")),
        ("voice", lambda: svc.emulator.send_voice(chat, b"OggS voice")),
        ("sticker", lambda: svc.emulator.send_sticker(chat)),
    ]
    for kind, send in sends:
        async with expect_event(svc, "message.created") as created:
            await send()
        assert created[0].data["conversation_id"] == conversation.id
        assert created[0].data["sender"] == "member"
        async with svc.sessionmaker() as session:
            line = await session.get(Message, created[0].data["message_id"])
        assert line.kind == kind
    async with svc.sessionmaker() as session:
        lines = [line for line in await session.scalars(
            select(Message).where(Message.sender == "member").order_by(Message.id))
            if not (line.text or "").startswith("/")]  # what was said after /human
    assert lines[0].text == "<b>hi</b> are you there?"  # stored as written; escaped on show
    assert lines[2].file_name == "bill.pdf"
    assert len(svc.emulator.sent_messages(chat)) == bot_messages  # the bot kept silent
    messages = await say(svc, chat, "/status")  # commands still work
    assert "nothing is open" in texts(messages)[-1]


async def test_agent_typing_shows_in_telegram(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    await say(svc, chat, "/human")
    conversation = await conversation_of(svc, member.id)
    await svc.app[BUS].publish(Event("agent.typing", {"conversation_id": conversation.id,
                                                      "chat_id": chat}))
    await svc.emulator.wait_until(lambda: "typing" in svc.emulator.chat_actions(chat))


async def test_resolve_asks_for_a_rating_then_comment_and_referral(svc) -> None:
    member, chat = await linked_member(svc, language="de")
    await say(svc, chat, "/human")
    conversation = await conversation_of(svc, member.id)
    agent = await agent_takes(svc, conversation.id)
    before = len(svc.emulator.sent_messages(chat))
    await console_does(svc, assignment.resolve, conversation.id, agent)
    messages = await svc.emulator.wait_for_messages(chat, before + 1)
    rating = messages[-1]
    assert "Bewertung von 1 (schlecht) bis 5 (sehr gut)" in rating["plain_text"]
    stars = buttons(rating)
    assert [b["text"] for b in stars] == ["1", "2", "3", "4", "5"]
    await svc.emulator.press_button(chat, rating["message_id"], stars[4]["callback_data"])
    messages = await svc.emulator.wait_for_messages(chat, before + 2)
    assert "https://example.org/invite" in texts(messages)[-1]
    assert not buttons(svc.emulator.sent_messages(chat)[before])  # rated once only
    messages = await say(svc, chat, "Eva war super, danke!")
    assert "Kommentar" in texts(messages)[-1]
    async with svc.sessionmaker() as session:
        done = await session.get(Conversation, conversation.id)
    assert (done.rating, done.rating_comment) == (5, "Eva war super, danke!")


async def test_hand_back_is_announced_and_the_bot_answers_again(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    await say(svc, chat, "/human")
    conversation = await conversation_of(svc, member.id)
    agent = await agent_takes(svc, conversation.id)
    before = len(svc.emulator.sent_messages(chat))
    await console_does(svc, assignment.hand_back, conversation.id, agent)
    messages = await svc.emulator.wait_for_messages(chat, before + 1)
    assert "handed the chat back" in texts(messages)[-1]
    messages = await say(svc, chat, "where is my invoice?")
    assert "invoices" in texts(messages)[-1]
