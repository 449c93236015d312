"""When the bot hands a member to a human, why, and how urgently.

Reasons come from what the member wrote (`payrescue.faq.triggers`), from what they did (two
messages in a row the bot did not understand, a photo or a document) and from their open
case (three or more failed attempts, a large amount, a category a human must handle).
`request_handoff` records the reasons and priority and moves the conversation to the queue;
the caller commits and then publishes `handoff_events`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import timeline
from payrescue.billing import declines
from payrescue.config import Settings
from payrescue.conversations import BOT, HUMAN_OWNED, RESOLVED, WAITING, move
from payrescue.db.models import Conversation, Handoff, RecoveryCase
from payrescue.events import Event
from payrescue.i18n import _, lazy_gettext

ASKED = "asked_for_human"
NOT_UNDERSTOOD = "not_understood"
MEDIA = "media_sent"
BY_EMAIL = "wrote_by_email"  # a reply to one of our e-mails: only a person answers those
MANY_ATTEMPTS = "many_attempts"
LARGE_AMOUNT = "large_amount"
CATEGORY = "needs_human"  # fraud, a refused mandate: never discussed by the bot
CARD_BLOCKED = "card_blocked"  # the bank blocked the card (fraud, lost, stolen): opened by the plan
DECLINE_NEEDS_PERSON = "decline_needs_person"  # another such category: opened by the plan
NOT_UNDERSTOOD_LIMIT = 2
MANY_ATTEMPTS_LIMIT = 3



@dataclass(frozen=True)
class Reason:
    name: str
    priority: int  # higher is more urgent; the queue orders by a conversation's top reason
    badge_msgid: str  # a word or two on the console's queue card
    label_msgid: str  # its name in the figures


REASONS: dict[str, Reason] = {r.name: r for r in (
    Reason("fraud", 90, lazy_gettext("fraud"), lazy_gettext("Suspected fraud")),
    Reason("dispute", 80, lazy_gettext("dispute"), lazy_gettext("Dispute or chargeback")),
    Reason("distress", 70, lazy_gettext("upset"), lazy_gettext("Member in a difficult situation")),
    Reason(CARD_BLOCKED, 85, lazy_gettext("card blocked"),
           lazy_gettext("Card blocked by the bank (opened automatically)")),
    Reason(DECLINE_NEEDS_PERSON, 60, lazy_gettext("decline needs a person"),
           lazy_gettext("Decline reason needs a person (opened automatically)")),
    Reason(CATEGORY, 60, lazy_gettext("needs a human"),
           lazy_gettext("Decline reason needs a person")),
    Reason("refund", 50, lazy_gettext("refund"), lazy_gettext("Asked for a refund")),
    Reason("cancellation", 50, lazy_gettext("wants to cancel"), lazy_gettext("Wants to cancel")),
    Reason(LARGE_AMOUNT, 40, lazy_gettext("large amount"), lazy_gettext("Large amount")),
    Reason(MANY_ATTEMPTS, 30, lazy_gettext("many attempts"),
           lazy_gettext("Many failed attempts")),
    Reason(BY_EMAIL, 25, lazy_gettext("wrote by e-mail"), lazy_gettext("Wrote by e-mail")),
    Reason(ASKED, 20, lazy_gettext("asked for a person"), lazy_gettext("Asked for a person")),
    Reason(MEDIA, 15, lazy_gettext("sent a file"), lazy_gettext("Sent a photo or file")),
    Reason(NOT_UNDERSTOOD, 10, lazy_gettext("bot did not understand"),
           lazy_gettext("Bot did not understand")),
)}
NO_REASON = "unknown"  # how the figures count a handoff that recorded none


def badge(name: str) -> str:
    reason = REASONS.get(name)
    return _(reason.badge_msgid) if reason else name.replace("_", " ")


def label(name: str) -> str:
    if name == NO_REASON:
        return _("No reason recorded")
    reason = REASONS.get(name)
    return _(reason.label_msgid) if reason else name.replace("_", " ")


def priority(reasons: Iterable[str]) -> int:
    return max((REASONS[r].priority if r in REASONS else 10 for r in reasons), default=0)


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


def case_handoff_reason(case: RecoveryCase) -> str | None:
    """Why a new case goes to a person before the member writes anything, if it does: its
    first message promises that someone from the team will get in touch."""
    category = declines.category(case.decline_category)
    if not category.needs_human:
        return None
    return CARD_BLOCKED if category.name == declines.FRAUD else DECLINE_NEEDS_PERSON


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
    timeline.event(session, conversation, timeline.HANDOFF, now, data={"reasons": reasons})
    await session.flush()
    return handoff


async def cancel_wait(session: AsyncSession, conversation: Conversation, now: datetime) -> bool:
    """The member goes back to the bot before an agent took over; False if too late."""
    if conversation.status != WAITING:
        return False
    move(conversation, BOT, now)
    timeline.event(session, conversation, timeline.CANCELLED, now)
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
