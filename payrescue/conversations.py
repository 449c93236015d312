"""The conversation state machine: who answers the member right now.

    bot ──handoff──▶ waiting ──claim──▶ assigned ──resolve──▶ resolved
     ▲                 │  ▲               │  │                   │
     └───cancel/back───┘  └──to queue─────┘  └──hand back──▶ bot  └─ new message ▶ bot

Every status change goes through `move()`, so the rules live here and nowhere else.
Handoff triggers (what makes a case complex) and assignment (claim, transfer, round-robin)
build on it in their own modules.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import Conversation

BOT, WAITING, ASSIGNED, RESOLVED = "bot", "waiting", "assigned", "resolved"
STATUSES = (BOT, WAITING, ASSIGNED, RESOLVED)
ALLOWED: dict[str, set[str]] = {
    BOT: {WAITING},
    WAITING: {ASSIGNED, BOT, RESOLVED},
    ASSIGNED: {WAITING, ASSIGNED, BOT, RESOLVED},  # ASSIGNED → ASSIGNED is a transfer
    RESOLVED: {BOT, WAITING},
}
HUMAN_OWNED = {WAITING, ASSIGNED}


class TransitionError(Exception):
    """A status change the rules forbid (e.g. claiming a conversation the bot owns)."""


def move(conversation: Conversation, new_status: str, now: datetime) -> None:
    if new_status not in ALLOWED[conversation.status]:
        raise TransitionError(f"{conversation.status} → {new_status} is not allowed")
    conversation.status = new_status
    conversation.updated_at = now
    conversation.snoozed_until = None  # a snooze belongs to one owner and one state
    if new_status == WAITING:
        conversation.waiting_since = now
        conversation.assigned_agent_id = None
    elif new_status in (BOT, RESOLVED):
        conversation.assigned_agent_id = None
        conversation.waiting_since = None
        if new_status == RESOLVED:
            conversation.resolved_at = now


async def current_conversation(
    session: AsyncSession, member_id: int, now: datetime
) -> Conversation:
    """The member's open conversation, or a new one with the bot."""
    conversation = await session.scalar(
        select(Conversation)
        .where(Conversation.member_id == member_id, Conversation.status != RESOLVED)
        .order_by(Conversation.id.desc())
        .limit(1)
    )
    if conversation is None:
        conversation = Conversation(
            member_id=member_id, status=BOT, handoff_reasons=[], created_at=now, updated_at=now
        )
        session.add(conversation)
        await session.flush()
    return conversation
