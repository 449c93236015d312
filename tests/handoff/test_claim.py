"""Claim, transfer, back to the queue, resolve, hand back, snooze and auto-assignment."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from payrescue import assignment
from payrescue.db.models import Agent, Conversation, Handoff
from tests.handoff.conftest import log_in


async def _status(world, conversation_id: int) -> Conversation:
    async with world.sessionmaker() as db:
        return await db.get(Conversation, conversation_id)


async def test_two_agents_claim_at_once_exactly_one_wins(make_client, world):
    await world.agent()
    await world.agent("ben@example.org", name="Ben")
    conversation_id = await world.conversation()
    anna, ben = await make_client(), await make_client()
    anna_token, ben_token = await log_in(anna), await log_in(ben, "ben@example.org")
    url = f"/console/conversations/{conversation_id}/claim"
    answers = await asyncio.gather(
        anna.post(url, data={"csrf_token": anna_token}, allow_redirects=False),
        ben.post(url, data={"csrf_token": ben_token}, allow_redirects=False),
    )
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [303, 409]
    loser = next(answer for answer in answers if answer.status == 409)
    winner_name = "Anna" if loser is answers[1] else "Ben"
    assert f"{winner_name} has already claimed this conversation." in await loser.text()
    conversation = await _status(world, conversation_id)
    assert conversation.status == "assigned"


async def test_many_concurrent_claims_in_the_database(world, sessionmaker, clock):
    agents = [await world.agent(f"a{i}@example.org", name=f"A{i}") for i in range(6)]
    conversation_id = await world.conversation()

    async def claim(agent_id: int) -> bool:
        async with sessionmaker() as db, db.begin():
            return (await assignment.claim(db, conversation_id, agent_id, clock.now())).won

    results = await asyncio.gather(*(claim(agent_id) for agent_id in agents))
    assert results.count(True) == 1
    winner = agents[results.index(True)]
    assert (await _status(world, conversation_id)).assigned_agent_id == winner
    async with sessionmaker() as db:
        handoff = (await db.scalars(select(Handoff))).one()
    assert handoff.agent_id == winner and handoff.claimed_at == clock.now()


async def test_claim_publishes_and_the_queue_moves_on(make_client, world, bus):
    await world.agent()
    conversation_id = await world.conversation(name="Mia Muster")
    client = await make_client()
    token = await log_in(client)
    async with bus.subscribe() as events:
        await client.post(f"/console/conversations/{conversation_id}/claim",
                          data={"csrf_token": token})
        event = await asyncio.wait_for(events.get(), 5)
    assert event.topic == "conversation.updated"
    assert event.data["status"] == "assigned"
    waiting = await (await client.get("/console/queue?view=waiting")).text()
    mine = await (await client.get("/console/queue?view=mine")).text()
    assert "Mia Muster" not in waiting and "Mia Muster" in mine


async def test_transfer_back_to_queue_resolve_and_hand_back(make_client, world, bus):
    await world.agent()
    ben_id = await world.agent("ben@example.org", name="Ben")
    first = await world.conversation(chat_id=1)
    second = await world.conversation(chat_id=2)
    anna = await make_client()
    token = await log_in(anna)
    for conversation_id in (first, second):
        await anna.post(f"/console/conversations/{conversation_id}/claim",
                        data={"csrf_token": token})
    await anna.post(f"/console/conversations/{first}/transfer",
                    data={"csrf_token": token, "agent_id": str(ben_id)})
    assert (await _status(world, first)).assigned_agent_id == ben_id
    # no longer hers: Anna cannot resolve it
    response = await anna.post(f"/console/conversations/{first}/resolve",
                               data={"csrf_token": token})
    assert response.status == 409
    assert "Another agent holds this conversation." in await response.text()

    await anna.post(f"/console/conversations/{second}/to-queue", data={"csrf_token": token})
    assert (await _status(world, second)).status == "waiting"
    await anna.post(f"/console/conversations/{second}/claim", data={"csrf_token": token})
    async with bus.subscribe() as events:
        await anna.post(f"/console/conversations/{second}/resolve", data={"csrf_token": token})
        event = await asyncio.wait_for(events.get(), 5)
    assert event.data == {"conversation_id": second, "status": "resolved",
                          "assigned_agent_id": None}
    resolved = await _status(world, second)
    assert resolved.assigned_agent_id is None and resolved.resolved_at is not None

    ben = await make_client()
    ben_token = await log_in(ben, "ben@example.org")
    await ben.post(f"/console/conversations/{first}/hand-back", data={"csrf_token": ben_token})
    assert (await _status(world, first)).status == "bot"
    async with world.sessionmaker() as db:
        outcomes = sorted(h.outcome for h in (await db.scalars(select(Handoff))))
    assert outcomes == ["bot", "resolved"]


async def test_snooze_needs_a_future_time(make_client, world):
    await world.agent()
    conversation_id = await world.conversation()
    client = await make_client()
    token = await log_in(client)
    await client.post(f"/console/conversations/{conversation_id}/claim",
                      data={"csrf_token": token})
    url = f"/console/conversations/{conversation_id}/snooze"
    response = await client.post(url, data={"csrf_token": token, "until": "2020-01-01T10:00"})
    assert response.status == 409
    assert "Pick a time in the future." in await response.text()
    await client.post(url, data={"csrf_token": token, "until": "2026-01-06T10:00"})
    assert (await _status(world, conversation_id)).snoozed_until is not None
    assert "snoozed" in await (await client.get("/console/queue?view=mine")).text()


async def test_round_robin_respects_availability_and_limits(world, sessionmaker, clock):
    away = await world.agent("away@example.org", name="Away")
    one = await world.agent("one@example.org", name="One", available=True, max_open=1)
    two = await world.agent("two@example.org", name="Two", available=True, max_open=2)
    conversations = [await world.conversation(chat_id=i) for i in range(1, 6)]
    got = []
    for conversation_id in conversations:
        async with sessionmaker() as db, db.begin():
            got.append(await assignment.auto_assign(db, conversation_id, clock.now()))
        await clock.advance(1)
    assert away not in got
    assert sorted(x for x in got if x) == sorted([one, two, two])
    assert got[3:] == [None, None]  # everybody is full: the rest keep waiting
    async with sessionmaker() as db:
        assert (await db.get(Agent, two)).last_assigned_at is not None


async def test_a_snoozed_conversation_waits_at_the_bottom_until_its_time(make_client, world,
                                                                         clock):
    await world.agent()
    first = await world.conversation(name="Mia Muster")
    await clock.advance(60)
    second = await world.conversation(name="Jonas Berg", chat_id=5002)
    client = await make_client()
    token = await log_in(client)
    for conversation_id in (first, second):
        await client.post(f"/console/conversations/{conversation_id}/claim",
                          data={"csrf_token": token})

    async def order() -> list[str]:
        page = await (await client.get("/console/queue?view=mine")).text()
        return sorted(("Mia Muster", "Jonas Berg"), key=page.index)

    assert await order() == ["Mia Muster", "Jonas Berg"]  # longest waiting first
    await client.post(f"/console/conversations/{first}/snooze",
                      data={"csrf_token": token, "until": "2026-01-06T10:00"})
    assert await order() == ["Jonas Berg", "Mia Muster"]
    await clock.advance(2 * 86400)  # the snooze time has passed: Mia is back on top
    await log_in(client)  # two idle days ended the session
    assert await order() == ["Mia Muster", "Jonas Berg"]


async def test_leaving_an_agents_hands_ends_the_snooze(world, sessionmaker, clock):
    agent_id = await world.agent()
    conversation_id = await world.conversation()
    later = clock.now().replace(year=2027)
    async with sessionmaker() as db, db.begin():
        agent = await db.get(Agent, agent_id)
        assert (await assignment.claim(db, conversation_id, agent_id, clock.now())).won
        await assignment.snooze(db, conversation_id, agent, later, clock.now())
        await assignment.back_to_queue(db, conversation_id, agent, clock.now())
    conversation = await _status(world, conversation_id)
    assert conversation.status == "waiting"
    assert conversation.snoozed_until is None  # waiting again means waiting in plain sight
