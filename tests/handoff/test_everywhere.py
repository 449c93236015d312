"""What every console page knows of the queue (count, overdue, who waits and why), the
next waiting conversation one step away, and the keyboard help."""

from __future__ import annotations

from tests.handoff.conftest import log_in


async def test_waiting_summary_names_members_and_reasons_and_turns_overdue(make_client, world):
    await world.agent()
    first = await world.conversation(name="Mia Muster", chat_id=31, reasons=("dispute",),
                                     priority=80)
    await world.conversation(name="Tom Later", chat_id=32)
    await world.conversation(name="Lea Bot", chat_id=33, status="bot")
    client = await make_client()
    await log_in(client)
    summary = await (await client.get("/console/api/waiting")).json()
    assert summary["waiting"] == 2 and summary["overdue"] == 0
    assert summary["sla_seconds"] == 15 * 60
    assert [c["member"] for c in summary["conversations"]] == ["Mia Muster", "Tom Later"]
    assert summary["conversations"][0]["reasons"] == ["Dispute or chargeback"]

    await world.clock.advance(16 * 60)
    summary = await (await client.get("/console/api/waiting")).json()
    assert summary["overdue"] == 2 and summary["conversations"][0]["overdue"] is True

    response = await client.get("/console/next", allow_redirects=False)
    assert response.headers["Location"] == f"/console/conversations/{first}"
    page = await (await client.get(f"/console/conversations/{first}")).text()
    assert 'id="next-waiting"' in page and 'id="shortcuts"' in page


async def test_next_with_nobody_waiting_is_the_queue(make_client, world):
    await world.agent()
    client = await make_client()
    await log_in(client)
    response = await client.get("/console/next", allow_redirects=False)
    assert response.headers["Location"] == "/console/queue"
    assert (await (await client.get("/console/api/waiting")).json())["waiting"] == 0


async def test_member_lines_the_owner_has_not_seen_are_marked_unread(make_client, world):
    from payrescue import timeline
    from payrescue.db.models import Conversation

    await world.agent()
    conversation_id = await world.conversation()
    client = await make_client()
    token = await log_in(client)
    await client.post(f"/console/conversations/{conversation_id}/claim",
                      data={"csrf_token": token})  # and the page opens: all seen
    mine = await (await client.get("/console/queue", params={"view": "mine"})).text()
    assert "unread-badge" not in mine
    async with world.sessionmaker() as db, db.begin():
        member_id = (await db.get(Conversation, conversation_id)).member_id
        db.add(timeline.entry(member_id, "member", "text", world.clock.now(),
                              text="Sind Sie noch da?", conversation_id=conversation_id))
    mine = await (await client.get("/console/queue", params={"view": "mine"})).text()
    assert "unread-badge" in mine
    await client.get(f"/console/conversations/{conversation_id}")
    mine = await (await client.get("/console/queue", params={"view": "mine"})).text()
    assert "unread-badge" not in mine
