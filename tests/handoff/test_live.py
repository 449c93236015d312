"""Live updates over Server-Sent Events, fed by the bus, caught up from the database."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from aiohttp import ClientResponse

from payrescue.db.models import Conversation, Message, Outbox
from payrescue.events import Event
from tests.handoff.conftest import log_in


@dataclass
class SSE:
    event: str
    data: dict
    id: str | None


async def next_event(response: ClientResponse, within: float = 5) -> SSE:
    """Reads one server-sent event, skipping pings (comment lines)."""
    fields: dict[str, str] = {}
    while True:
        line = (await asyncio.wait_for(response.content.readline(), within)).decode()
        line = line.rstrip("\r\n")
        if not line:
            if "data" in fields:
                return SSE(fields.get("event", "message"), json.loads(fields["data"]),
                           fields.get("id"))
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


async def add_member_message(world, conversation_id: int, text: str) -> int:
    async with world.sessionmaker() as db, db.begin():
        member_id = (await db.get(Conversation, conversation_id)).member_id
        message = Message(conversation_id=conversation_id, member_id=member_id,
                          sender="member", text=text,
                          created_at=world.clock.now())
        db.add(message)
        await db.flush()
        return message.id


async def test_transcript_streams_live_and_catches_up_after_a_drop(make_client, world, bus):
    await world.agent()
    conversation_id = await world.conversation()
    first = await add_member_message(world, conversation_id, "Hallo?")
    client = await make_client()
    await log_in(client)
    url = f"/console/stream/conversations/{conversation_id}"

    stream = await client.get(url, headers={"Accept": "text/event-stream"})
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    event = await next_event(stream)
    assert (event.event, event.id) == ("line", str(first))
    second = await add_member_message(world, conversation_id, "<b>Meine Karte</b>")
    await bus.publish(Event("message.created", {"conversation_id": conversation_id,
                                                "message_id": second, "sender": "member"}))
    event = await next_event(stream)
    assert event.id == str(second)
    assert "&lt;b&gt;Meine Karte&lt;/b&gt;" in event.data["html"]
    stream.close()  # the connection drops …

    third = await add_member_message(world, conversation_id, "Sind Sie noch da?")
    fourth = await add_member_message(world, conversation_id, "Danke")
    # … and the browser reconnects with the id of the last line it saw
    stream = await client.get(url, headers={"Accept": "text/event-stream",
                                            "Last-Event-ID": str(second)})
    ids = [(await next_event(stream)).id for _ in range(2)]
    assert ids == [str(third), str(fourth)]
    await bus.publish(Event("message.created", {"conversation_id": conversation_id,
                                                "message_id": fourth, "sender": "member"}))
    await bus.publish(Event("conversation.updated", {"conversation_id": conversation_id,
                                                     "status": "waiting"}))
    event = await next_event(stream)
    assert event.event == "status"  # nothing was sent twice before it
    stream.close()


async def test_delivery_state_and_claims_by_others_arrive_live(make_client, world, bus):
    await world.agent()
    await world.agent("ben@example.org", name="Ben")
    conversation_id = await world.conversation()
    anna, ben = await make_client(), await make_client()
    await log_in(anna)
    ben_token = await log_in(ben, "ben@example.org")
    stream = await anna.get(f"/console/stream/conversations/{conversation_id}",
                            headers={"Accept": "text/event-stream"})
    await ben.post(f"/console/conversations/{conversation_id}/claim",
                   data={"csrf_token": ben_token})
    event = await next_event(stream)  # the claim is a line of the timeline first
    assert event.event == "line" and "Ben claimed the conversation" in event.data["html"]
    event = await next_event(stream)
    assert event.event == "status"
    assert event.data["status"] == "assigned" and event.data["owner"] == "Ben"

    await ben.post(f"/console/conversations/{conversation_id}/reply",
                   data={"text": "Hallo", "csrf_token": ben_token})
    event = await next_event(stream)
    assert event.event == "line" and "queued" in event.data["html"]
    async with world.sessionmaker() as db, db.begin():
        outbox = (await db.get(Outbox, 1))
        outbox.status = "sent"
    await bus.publish(Event("outbox.updated", {"outbox_id": 1, "status": "sent",
                                               "message_id": int(event.id)}))
    update = await next_event(stream)
    assert update.event == "line-update" and "delivered" in update.data["html"]
    stream.close()


async def test_queue_stream_announces_new_handoffs(make_client, world, bus):
    await world.agent()
    client = await make_client()
    await log_in(client)
    stream = await client.get("/console/stream/queue", headers={"Accept": "text/event-stream"})
    # the stream subscribed to the bus before it answered with its headers
    conversation_id = await world.conversation()
    await bus.publish(Event("conversation.waiting", {"conversation_id": conversation_id}))
    event = await next_event(stream)
    assert event.event == "queue"
    assert event.data == {"conversation_id": conversation_id, "new": True}
    stream.close()


async def test_a_stream_for_an_unknown_conversation_is_404(make_client, world):
    await world.agent()
    client = await make_client()
    await log_in(client)
    response = await client.get("/console/stream/conversations/99",
                                headers={"Accept": "text/event-stream"})
    assert response.status == 404


async def test_an_open_stream_ends_when_its_session_is_ended(make_client, world, bus,
                                                             monkeypatch):
    from handoff import live

    monkeypatch.setattr(live, "CHECK_CONNECTION_EVERY", 0.05)  # instead of 15 s of quiet
    await world.agent()
    conversation_id = await world.conversation()
    watcher, laptop = await make_client(), await make_client()
    await log_in(watcher)
    token = await log_in(laptop)
    stream = await watcher.get(f"/console/stream/conversations/{conversation_id}",
                               headers={"Accept": "text/event-stream"})
    assert stream.status == 200
    await laptop.post("/console/sign-out-everywhere", data={"csrf_token": token})
    rest = await asyncio.wait_for(stream.content.read(), 5)  # the server closes the stream
    assert b"event: line" not in rest


async def test_colleagues_in_one_conversation_see_each_other(make_client, world):
    await world.agent()
    await world.agent("lena@example.org", name="Lena")
    conversation_id = await world.conversation()
    anna, lena = await make_client(), await make_client()
    await log_in(anna)
    await log_in(lena, "lena@example.org")
    path = f"/console/stream/conversations/{conversation_id}"
    anna_stream = await anna.get(path, headers={"Accept": "text/event-stream"})
    lena_stream = await lena.get(path, headers={"Accept": "text/event-stream"})
    event = await next_event(anna_stream)
    assert event.event == "presence" and event.data["state"] == "viewing"
    assert event.data["text"] == "Lena is viewing this conversation"
    event = await next_event(lena_stream)  # Anna answered Lena's hello
    assert event.event == "presence" and event.data["text"].startswith("Anna is viewing")
    lena_stream.close()
    event = await next_event(anna_stream)
    assert event.event == "presence" and event.data["state"] == "left"
    anna_stream.close()
