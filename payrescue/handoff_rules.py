"""When the bot hands a member to a human, why, and how urgently.

Reasons come from what the member wrote (`payrescue.faq.triggers`), from what they did (two
messages in a row the bot did not understand, a photo or a document) and from their open
case (three or more failed attempts, a large amount, a category a human must handle).
`request_handoff` records the reasons and priority and moves the conversation to the queue;
the caller commits and then publishes `handoff_events`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.billing import declines
from payrescue.config import Settings
from payrescue.conversations import BOT, HUMAN_OWNED, RESOLVED, WAITING, move
from payrescue.db.models import Conversation, Handoff, RecoveryCase
from payrescue.events import Event

ASKED = "asked_for_human"
NOT_UNDERSTOOD = "not_understood"
MEDIA = "media_sent"
MANY_ATTEMPTS = "many_attempts"
LARGE_AMOUNT = "large_amount"
CATEGORY = "needs_human"  # fraud, a refused mandate: never discussed by the bot
NOT_UNDERSTOOD_LIMIT = 2
MANY_ATTEMPTS_LIMIT = 3

# Higher is more urgent; the queue orders by it. A conversation's priority is its top reason.
PRIORITIES: dict[str, int] = {
    "fraud": 90,
    "dispute": 80,
    "distress": 70,
    CATEGORY: 60,
    "refund": 50,
    "cancellation": 50,
    LARGE_AMOUNT: 40,
    MANY_ATTEMPTS: 30,
    ASKED: 20,
    MEDIA: 15,
    NOT_UNDERSTOOD: 10,
}


def priority(reasons: Iterable[str]) -> int:
    return max((PRIORITIES.get(reason, 10) for reason in reasons), default=0)


def case_reasons(case: RecoveryCase | None, settings: Settings) -> list[str]:
    """What about the member's open case calls for a human, whatever they asked."""
    if case is None:
        return []
    reasons = []
    if case.attempt_count >= MANY_ATTEMPTS_LIMIT:
        reasons.append(MANY_ATTEMPTS)
    if case.amount_minor > settings.handoff_amount_minor:
        reasons.append(LARGE_AMOUNT)
    if declines.category(case.decline_category).needs_human:
        reasons.append(CATEGORY)
    return reasons


async def open_case(session: AsyncSession, member_id: int) -> RecoveryCase | None:
    return await session.scalar(
        select(RecoveryCase)
        .where(RecoveryCase.member_id == member_id, RecoveryCase.status == "open")
        .order_by(RecoveryCase.opened_at.desc())
        .limit(1)
    )


async def request_handoff(
    session: AsyncSession,
    conversation: Conversation,
    reasons: Iterable[str],
    now: datetime,
    case: RecoveryCase | None = None,
) -> Handoff | None:
    """Put the conversation in the waiting queue with these reasons (None if a human has it).

    Reasons add up: a member already waiting who now writes "refund" moves up the queue.
    """
    reasons = list(dict.fromkeys(reasons))
    if conversation.status in HUMAN_OWNED:
        merged = list(dict.fromkeys([*conversation.handoff_reasons, *reasons]))
        conversation.handoff_reasons = merged
        conversation.priority = max(conversation.priority, priority(merged))
        conversation.updated_at = now
        return None
    if conversation.status == RESOLVED:
        move(conversation, BOT, now)
    move(conversation, WAITING, now)
    conversation.handoff_reasons = reasons
    conversation.priority = priority(reasons)
    conversation.not_understood = 0
    if case is not None:
        conversation.case_id = case.id
    handoff = Handoff(
        conversation_id=conversation.id, reasons=reasons, priority=conversation.priority,
        requested_at=now,
    )
    session.add(handoff)
    await session.flush()
    return handoff


async def cancel_wait(session: AsyncSession, conversation: Conversation, now: datetime) -> bool:
    """The member goes back to the bot before an agent took over; False if too late."""
    if conversation.status != WAITING:
        return False
    move(conversation, BOT, now)
    handoff = await session.scalar(
        select(Handoff)
        .where(Handoff.conversation_id == conversation.id, Handoff.ended_at.is_(None))
        .order_by(Handoff.id.desc())
        .limit(1)
    )
    if handoff is not None:
        handoff.ended_at = now
        handoff.outcome = "cancelled"
    return True


def handoff_events(conversation: Conversation) -> list[Event]:
    """What the console needs to hear once the handoff is committed."""
    data = {
        "conversation_id": conversation.id,
        "status": conversation.status,
        "assigned_agent_id": conversation.assigned_agent_id,
        "source": "bot",
    }
    events = [Event("conversation.updated", data)]
    if conversation.status == WAITING:
        events.insert(0, Event("conversation.waiting", {"conversation_id": conversation.id}))
    return events
