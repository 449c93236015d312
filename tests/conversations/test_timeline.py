"""One timeline per member: everything the member saw or did in Telegram, and everything
that happened around them, stored as it happened and in order."""

from __future__ import annotations

from payrescue import assignment
from tests.conversations.helpers import buttons, linked_member, open_case, timeline_of
from tests.conversations.test_handoff import conversation_of, say
from tests.conversations.test_relay import agent_takes, console_does


def _shape(lines) -> list[tuple[str, str]]:  # noqa: ANN001
    return [(line.sender, line.kind) for line in lines]


async def test_a_whole_exchange_is_on_the_timeline_in_order(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    await open_case(svc, member)
    failure = (await svc.emulator.wait_for_messages(chat, 2))[-1]  # welcome, failure notice
    start = len(await timeline_of(svc, member.id, 1))
    await say(svc, chat, "can I pay with paypal")  # not understood
    await say(svc, chat, "why did my payment fail?")  # a FAQ answer
    talk = buttons(failure)[2]  # "Talk to a person"
    before = len(svc.emulator.sent_messages(chat))
    await svc.emulator.press_button(chat, failure["message_id"], talk["callback_data"])
    await svc.emulator.wait_for_messages(chat, before + 1)
    await timeline_of(svc, member.id, start + 7)  # the update's lines are committed
    conversation = await conversation_of(svc, member.id)
    agent = await agent_takes(svc, conversation.id)
    await console_does(svc, assignment.resolve, conversation.id, agent)
    rating = (await svc.emulator.wait_for_messages(chat, before + 2))[-1]
    await svc.emulator.press_button(chat, rating["message_id"],
                                    buttons(rating)[3]["callback_data"])

    lines = await timeline_of(svc, member.id, start + 13)
    assert lines[start - 1].sender == "bot" and lines[start - 1].case_id is not None
    assert "Talk to a person" in lines[start - 1].data["buttons"]  # the failure notice
    day = lines[start:]
    assert _shape(day) == [
        ("member", "text"), ("bot", "text"),  # not understood
        ("member", "text"), ("bot", "text"),  # FAQ answer
        ("member", "button"), ("system", "handoff"), ("bot", "text"),  # waiting notice
        ("system", "claimed"), ("system", "resolved"),
        ("bot", "bot"),  # the rating request, delivered through the outbox
        ("member", "button"), ("system", "rated"), ("bot", "text"),  # thanks
    ]
    assert day[0].text == "can I pay with paypal"
    assert day[4].text == "Talk to a person"  # the button as the member saw it
    assert day[7].agent_id == agent.id
    assert day[11].data == {"stars": 4}
    assert all(line.conversation_id == conversation.id for line in day[4:])
    assert [line.id for line in lines] == sorted(line.id for line in lines)


async def test_an_edit_keeps_the_original_and_a_quoted_reply_reaches_telegram(svc) -> None:
    from payrescue.agent_replies import queue_agent_message
    from payrescue.db.models import Conversation, Message
    from payrescue.events import Event
    from payrescue.keys import BUS

    member, chat = await linked_member(svc, language="en")
    await say(svc, chat, "/human")
    conversation = await conversation_of(svc, member.id)
    agent = await agent_takes(svc, conversation.id)
    sent = await svc.emulator.send_text(chat, "my card ends in 4242")
    # /start and the greeting, /human, the handoff, the waiting notice, the claim, and this
    assert (await timeline_of(svc, member.id, 7))[-1].text == "my card ends in 4242"
    before = 7
    await svc.emulator.edit_text(chat, sent["message_id"], "my card ends in 4343")
    lines = await timeline_of(svc, member.id, before + 1)
    original = next(line for line in lines if line.text == "my card ends in 4242")
    edited = lines[-1]
    assert (edited.kind, edited.text, edited.data) == (
        "edit", "my card ends in 4343", {"edited_message_id": sent["message_id"]})
    assert original.telegram_message_id == sent["message_id"] == edited.telegram_message_id
    assert edited.conversation_id == conversation.id

    count = len(svc.emulator.sent_messages(chat))
    async with svc.sessionmaker() as session:
        quoted = await session.get(Message, original.id)
        line = await queue_agent_message(session, await session.get(Conversation,
                                                                    conversation.id),
                                         agent, "Thanks, I see it.", svc.clock.now(),
                                         svc.settings, quoted)
        await session.commit()
    await svc.app[BUS].publish(Event("outbox.queued", {"outbox_id": line.outbox_id}))
    reply = (await svc.emulator.wait_for_messages(chat, count + 1))[-1]
    assert reply["plain_text"] == "Thanks, I see it."
    assert reply["reply_to_message_id"] == sent["message_id"]
    assert line.data == {"quote": {"id": original.id, "text": "my card ends in 4242"}}
