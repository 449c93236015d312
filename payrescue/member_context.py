"""What an agent needs to know beside the chat: the member, their case and their history
(the console's side panel, the team group's first post in a topic)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import dunning
from payrescue.billing import declines, overview
from payrescue.config import Settings
from payrescue.db.models import (
    Conversation,
    Member,
    Outbox,
    PaymentEvent,
    RecoveryCase,
    Subscription,
    UpdateLink,
)

# A known payment: a provider event billing normalised to "recovered" (money arrived).
PAID_KIND = "recovered"

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
    # each subscription with its status and cases, each case with its payment events in the
    # provider's time order (`billing.overview`: the payment truth the cases come from)
    payments: dict[str, Any] = field(default_factory=dict)


async def member_context(db: AsyncSession, conversation: Conversation,
                         settings: Settings | None = None) -> MemberContext:
    member = await db.get(Member, conversation.member_id)
    assert member is not None  # noqa: S101 - a foreign key guarantees it
    case = await _current_case(db, conversation)
    plan = None
    next_reminder = None
    link = None
    if case is not None:
        # the case's subscription, else the member's latest one (a case may name none)
        plan = await db.scalar(
            select(Subscription.plan_name).where(Subscription.id == case.subscription_id)
        ) if case.subscription_id else None
        plan = plan or await db.scalar(
            select(Subscription.plan_name).where(Subscription.member_id == member.id,
                                                 Subscription.plan_name.is_not(None))
            .order_by(Subscription.id.desc()).limit(1))
        next_reminder = await db.scalar(
            select(func.min(Outbox.not_before)).where(
                Outbox.case_id == case.id, Outbox.status == "queued",
                Outbox.kind == "reminder",
            )
        )
        if next_reminder is None and settings is not None:
            next_reminder = _next_planned(case, settings)
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
    lifetime = await _lifetime_value(db, member.id)
    return MemberContext(
        member=member, case=case, plan=plan, next_reminder_at=next_reminder, link=link,
        earlier_cases=[c for c in earlier_cases if case is None or c.id != case.id],
        earlier_conversations=list(earlier_conversations),
        lifetime_minor=int(lifetime[0]) if lifetime else 0,
        lifetime_currency=lifetime[1] if lifetime else None,
        decline_words=declines.for_agents(case.decline_category) if case else "",
        payments=await overview.member_overview(db, member),
    )


def _next_planned(case: RecoveryCase, settings: Settings) -> datetime | None:
    """The plan's next step not queued yet (reminders are queued only when due)."""
    if case.status != "open" or case.held:
        return None
    later = [step.due for step in dunning.plan(case, settings) if step.index >= case.dunning_stage]
    return min(later) if later else None


async def _lifetime_value(db: AsyncSession, member_id: int) -> tuple[int, str] | None:
    """Sum of the member's known payments in their main currency.

    One amount per invoice: providers report a payment more than once (Stripe sends
    invoice.paid and invoice.payment_succeeded for the same invoice).
    """
    per_invoice = (
        select(func.max(PaymentEvent.amount_minor).label("amount"),
               PaymentEvent.currency.label("currency"))
        .where(PaymentEvent.member_id == member_id, PaymentEvent.kind == PAID_KIND,
               PaymentEvent.amount_minor.is_not(None))
        .group_by(PaymentEvent.provider, func.coalesce(PaymentEvent.invoice_ref,
                                                       PaymentEvent.event_id),
                  PaymentEvent.currency)
        .subquery()
    )
    row = (await db.execute(
        select(func.sum(per_invoice.c.amount), per_invoice.c.currency)
        .group_by(per_invoice.c.currency)
        .order_by(func.sum(per_invoice.c.amount).desc()).limit(1)
    )).first()
    return (int(row[0]), row[1]) if row and row[1] else None


async def _current_case(db: AsyncSession, conversation: Conversation) -> RecoveryCase | None:
    if conversation.case_id is not None:
        return await db.get(RecoveryCase, conversation.case_id)
    return await db.scalar(
        select(RecoveryCase).where(
            RecoveryCase.member_id == conversation.member_id, RecoveryCase.status == "open"
        ).order_by(RecoveryCase.opened_at.desc()).limit(1)
    )
