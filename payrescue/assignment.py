"""Who works on a waiting conversation: claim, transfer, back to the queue, resolve, hand back
to the bot, snooze, and round-robin auto-assignment.

Claiming is the one step two agents race for, so it is a single conditional UPDATE
(`… WHERE status = 'waiting'`) whose row count tells who won; the database serialises the
two writers on SQLite and PostgreSQL alike. The other steps load the conversation (locked
on PostgreSQL) and change it through `conversations.move()`, where the rules live.
Callers commit, then publish `conversation.updated` (see `updated_event`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import timeline
from payrescue.conversations import ALLOWED, ASSIGNED, BOT, RESOLVED, WAITING, move
from payrescue.db.models import Agent, Conversation, Handoff
from payrescue.events import Event

# The claim below bypasses move() for atomicity; this keeps it honest to the rules.
assert ASSIGNED in ALLOWED[WAITING]  # noqa: S101 - a module invariant, checked at import


class AssignmentError(Exception):
    """The step is not possible now; the message is meant for the agent."""


@dataclass(frozen=True)
class ClaimResult:
    won: bool
    owner_id: int | None  # who holds the conversation afterwards (the winner when lost)
    status: str


async def claim(
    session: AsyncSession, conversation_id: int, agent_id: int, now: datetime
) -> ClaimResult:
    """Take a waiting conversation; exactly one of several concurrent claims wins."""
    result = await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.status == WAITING)
        .values(status=ASSIGNED, assigned_agent_id=agent_id, updated_at=now,
                snoozed_until=None)
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(
        select(Conversation.status, Conversation.assigned_agent_id, Conversation.member_id,
               Conversation.case_id)
        .where(Conversation.id == conversation_id)
    )).one_or_none()
    if row is None:
        raise AssignmentError("no such conversation")
    won = result.rowcount == 1
    if won:
        await _open_handoff_claimed(session, conversation_id, agent_id, now)
        session.add(timeline.entry(row.member_id, timeline.SYSTEM, timeline.CLAIMED, now,
                                   channel=timeline.CONSOLE, conversation_id=conversation_id,
                                   case_id=row.case_id, agent_id=agent_id))
    return ClaimResult(won=won, owner_id=row.assigned_agent_id, status=row.status)


async def _open_handoff_claimed(
    session: AsyncSession, conversation_id: int, agent_id: int, now: datetime
) -> None:
    handoff = await _open_handoff(session, conversation_id)
    if handoff is not None and handoff.claimed_at is None:
        handoff.claimed_at = now
    if handoff is not None:
        handoff.agent_id = agent_id


async def _open_handoff(session: AsyncSession, conversation_id: int) -> Handoff | None:
    return await session.scalar(
        select(Handoff)
        .where(Handoff.conversation_id == conversation_id, Handoff.ended_at.is_(None))
        .order_by(Handoff.id.desc())
        .limit(1)
    )


async def load_for_change(session: AsyncSession, conversation_id: int) -> Conversation:
    conversation = await session.scalar(
        select(Conversation)
        .where(Conversation.id == conversation_id)
        .with_for_update()  # PostgreSQL: one change at a time; SQLite serialises writers
        .execution_options(populate_existing=True)
    )
    if conversation is None:
        raise AssignmentError("no such conversation")
    return conversation


def ensure_owner(conversation: Conversation, agent: Agent) -> None:
    """Only the agent holding a conversation (or an admin) changes it."""
    if agent.role == "admin" or conversation.assigned_agent_id == agent.id:
        return
    raise AssignmentError("not yours")


async def transfer(
    session: AsyncSession, conversation_id: int, by: Agent, to_agent_id: int, now: datetime
) -> Conversation:
    conversation = await load_for_change(session, conversation_id)
    ensure_owner(conversation, by)
    target = await session.get(Agent, to_agent_id)
    if target is None:
        raise AssignmentError("no such agent")
    if conversation.status != ASSIGNED:
        raise AssignmentError("claim it first")
    move(conversation, ASSIGNED, now)
    conversation.assigned_agent_id = target.id
    handoff = await _open_handoff(session, conversation_id)
    if handoff is not None:
        handoff.agent_id = target.id
    timeline.event(session, conversation, timeline.TRANSFERRED, now, agent_id=by.id,
                   data={"to_agent_id": target.id, "to": target.name})
    return conversation


async def back_to_queue(
    session: AsyncSession, conversation_id: int, by: Agent, now: datetime
) -> Conversation:
    conversation = await load_for_change(session, conversation_id)
    ensure_owner(conversation, by)
    _move(conversation, WAITING, now)
    timeline.event(session, conversation, timeline.TO_QUEUE, now, agent_id=by.id)
    return conversation


async def resolve(
    session: AsyncSession, conversation_id: int, by: Agent, now: datetime
) -> Conversation:
    """Done: unassigns, ends the handoff; the bot side then asks the member for a rating."""
    return await _end(session, conversation_id, by, RESOLVED, now)


async def hand_back(
    session: AsyncSession, conversation_id: int, by: Agent, now: datetime
) -> Conversation:
    """The bot answers the member again."""
    return await _end(session, conversation_id, by, BOT, now)


async def _end(
    session: AsyncSession, conversation_id: int, by: Agent, status: str, now: datetime
) -> Conversation:
    """Leave human hands: the handoff's outcome is the state the conversation goes to."""
    conversation = await load_for_change(session, conversation_id)
    ensure_owner(conversation, by)
    _move(conversation, status, now)
    await _end_handoff(session, conversation_id, status, now)
    timeline.event(session, conversation,
                   timeline.RESOLVED if status == RESOLVED else timeline.HANDED_BACK, now,
                   agent_id=by.id)
    return conversation


async def snooze(
    session: AsyncSession, conversation_id: int, by: Agent, until: datetime, now: datetime
) -> Conversation:
    conversation = await load_for_change(session, conversation_id)
    ensure_owner(conversation, by)
    if conversation.status != ASSIGNED:
        raise AssignmentError("claim it first")
    if until <= now:
        raise AssignmentError("pick a time in the future")
    conversation.snoozed_until = until
    conversation.updated_at = now
    timeline.event(session, conversation, timeline.SNOOZED, now, agent_id=by.id,
                   data={"until": until.isoformat()})
    return conversation


def _move(conversation: Conversation, status: str, now: datetime) -> None:
    if status not in ALLOWED[conversation.status]:
        raise AssignmentError(f"not possible while {conversation.status}")
    move(conversation, status, now)


async def _end_handoff(
    session: AsyncSession, conversation_id: int, outcome: str, now: datetime
) -> None:
    handoff = await _open_handoff(session, conversation_id)
    if handoff is not None:
        handoff.ended_at = now
        handoff.outcome = outcome


async def record_first_response(
    session: AsyncSession, conversation: Conversation, now: datetime
) -> None:
    """The first agent reply of a handoff sets the response-time figures."""
    if conversation.first_response_at is None:
        conversation.first_response_at = now
    handoff = await _open_handoff(session, conversation.id)
    if handoff is not None and handoff.first_response_at is None:
        handoff.first_response_at = now


async def open_count(session: AsyncSession, agent_id: int) -> int:
    return await session.scalar(
        select(func.count()).select_from(Conversation).where(
            Conversation.assigned_agent_id == agent_id, Conversation.status == ASSIGNED
        )
    ) or 0


async def auto_assign(
    session: AsyncSession, conversation_id: int, now: datetime
) -> int | None:
    """Round-robin: the available agent with room who got a conversation longest ago.

    Returns the agent's id, or None when nobody has room (the conversation stays waiting).
    """
    open_per_agent = (
        select(func.count())
        .where(Conversation.assigned_agent_id == Agent.id, Conversation.status == ASSIGNED)
        .correlate(Agent)
        .scalar_subquery()
    )
    agent = await session.scalar(
        select(Agent)
        .where(Agent.available.is_(True), open_per_agent < Agent.max_open)
        .order_by(Agent.last_assigned_at.asc().nulls_first(), Agent.id)
        .limit(1)
    )
    if agent is None:
        return None
    result = await claim(session, conversation_id, agent.id, now)
    if not result.won:  # an agent claimed it by hand meanwhile
        return None
    agent.last_assigned_at = now
    return agent.id


def updated_event(conversation: Conversation) -> Event:
    return Event("conversation.updated", {
        "conversation_id": conversation.id,
        "status": conversation.status,
        "assigned_agent_id": conversation.assigned_agent_id,
    })
