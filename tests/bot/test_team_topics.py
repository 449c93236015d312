"""`payrescue.teamgroup.reconcile` and `lagging` on their own: what a topic is owed is read
from the timeline, so a missed bus event is caught up by the sweep, never lost."""

from __future__ import annotations

from sqlalchemy import select

from payrescue import teamgroup, timeline
from payrescue.db.models import Conversation, Member, Outbox, TeamGroup, TeamTopic


async def test_a_missed_event_is_caught_up_and_nothing_is_queued_twice(session, settings,
                                                                        clock) -> None:
    now = clock.now()
    member = Member(name="Anna Schmidt", email="anna@example.org", created_at=now)
    session.add(member)
    await session.flush()
    conversation = Conversation(member_id=member.id, status="waiting", handoff_reasons=[],
                                waiting_since=now, created_at=now, updated_at=now)
    session.add(conversation)
    await session.commit()
    assert await teamgroup.lagging(session) == []  # no team group: nothing to do
    assert await teamgroup.reconcile(session, conversation.id, settings, now) == []

    session.add(TeamGroup(chat_id=-100123, linked_at=now, linked_by_telegram_user_id=1))
    await session.commit()
    assert await teamgroup.lagging(session) == [conversation.id]  # waits, no topic yet
    rows = await teamgroup.reconcile(session, conversation.id, settings, now)
    await session.commit()
    assert [row.payload["op"] for row in rows] == ["open"]
    assert await teamgroup.lagging(session) == []

    session.add(timeline.entry(member.id, timeline.MEMBER, "text", now, text="Hallo?",
                               conversation_id=conversation.id))
    await session.commit()
    assert await teamgroup.lagging(session) == [conversation.id]  # its event went missing
    rows = await teamgroup.reconcile(session, conversation.id, settings, now)
    await session.commit()
    assert [row.payload["op"] for row in rows] == ["post"]
    assert await teamgroup.reconcile(session, conversation.id, settings, now) == []
    team_rows = (await session.scalars(select(Outbox).where(Outbox.channel == "team"))).all()
    assert [row.payload["op"] for row in team_rows] == ["open", "post"]
    topic = await session.scalar(select(TeamTopic))
    assert topic.status == "open" and topic.thread_id is None  # the poster creates it
