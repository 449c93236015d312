"""What an agent needs to know beside the chat: the member, their case and their history."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import (
    Conversation,
    Member,
    Outbox,
    PaymentEvent,
    RecoveryCase,
    Subscription,
    UpdateLink,
)
from payrescue.i18n import _, lazy_gettext

# PaymentEvent.outcome values that mean money arrived (set by billing).
PAID_OUTCOMES = ("paid", "succeeded", "recovered")

DECLINE_WORDS = {
    "insufficient_funds": lazy_gettext("Not enough money on the account"),
    "expired_card": lazy_gettext("The card has expired"),
    "card_expired": lazy_gettext("The card has expired"),
    "authentication_required": lazy_gettext("The bank wants the member to confirm (3-D Secure)"),
    "action_required": lazy_gettext("The bank wants the member to confirm (3-D Secure)"),
    "do_not_honor": lazy_gettext("The bank refused without giving a reason"),
    "generic_decline": lazy_gettext("The bank refused without giving a reason"),
    "lost_or_stolen": lazy_gettext("The card was reported lost or stolen"),
    "fraud": lazy_gettext("The bank suspects fraud"),
    "incorrect_details": lazy_gettext("Card details are wrong"),
    "limit_exceeded": lazy_gettext("The card's limit is reached"),
    "processing_error": lazy_gettext("A technical fault at the bank or provider"),
    "technical": lazy_gettext("A technical fault at the bank or provider"),
    "unknown": lazy_gettext("Reason unknown"),
}


def decline_in_words(category: str | None) -> str:
    words = DECLINE_WORDS.get(category or "unknown")
    return _(words) if words else (category or "").replace("_", " ")


@dataclass
class MemberContext:
    member: Member
    case: RecoveryCase | None
    plan: str | None
    next_reminder_at: datetime | None
    link: UpdateLink | None
    earlier_cases: list[RecoveryCase] = field(default_factory=list)
    earlier_conversations: list[Conversation] = field(default_factory=list)
    lifetime_minor: int = 0
    lifetime_currency: str | None = None
    decline_words: str = ""


async def member_context(db: AsyncSession, conversation: Conversation) -> MemberContext:
    member = await db.get(Member, conversation.member_id)
    assert member is not None  # noqa: S101 - a foreign key guarantees it
    case = await _current_case(db, conversation)
    plan = None
    next_reminder = None
    link = None
    if case is not None:
        if case.subscription_id:
            plan = await db.scalar(
                select(Subscription.plan_name).where(Subscription.id == case.subscription_id)
            )
        next_reminder = await db.scalar(
            select(func.min(Outbox.not_before)).where(
                Outbox.case_id == case.id, Outbox.status == "queued",
                Outbox.kind == "reminder",
            )
        )
        link = await db.scalar(
            select(UpdateLink).where(UpdateLink.case_id == case.id)
            .order_by(UpdateLink.created_at.desc()).limit(1)
        )
    earlier_cases = (await db.scalars(
        select(RecoveryCase).where(RecoveryCase.member_id == member.id)
        .order_by(RecoveryCase.opened_at.desc()).limit(10)
    )).all()
    earlier_conversations = (await db.scalars(
        select(Conversation).where(
            Conversation.member_id == member.id, Conversation.id != conversation.id
        ).order_by(Conversation.id.desc()).limit(10)
    )).all()
    lifetime = (await db.execute(
        select(func.coalesce(func.sum(PaymentEvent.amount_minor), 0), PaymentEvent.currency)
        .where(PaymentEvent.member_id == member.id, PaymentEvent.outcome.in_(PAID_OUTCOMES))
        .group_by(PaymentEvent.currency).order_by(PaymentEvent.currency).limit(1)
    )).first()
    return MemberContext(
        member=member, case=case, plan=plan, next_reminder_at=next_reminder, link=link,
        earlier_cases=[c for c in earlier_cases if case is None or c.id != case.id],
        earlier_conversations=list(earlier_conversations),
        lifetime_minor=int(lifetime[0]) if lifetime else 0,
        lifetime_currency=lifetime[1] if lifetime else None,
        decline_words=decline_in_words(case.decline_category) if case else "",
    )


async def _current_case(db: AsyncSession, conversation: Conversation) -> RecoveryCase | None:
    if conversation.case_id is not None:
        return await db.get(RecoveryCase, conversation.case_id)
    return await db.scalar(
        select(RecoveryCase).where(
            RecoveryCase.member_id == conversation.member_id, RecoveryCase.status == "open"
        ).order_by(RecoveryCase.opened_at.desc()).limit(1)
    )
