"""Finding the member and subscription an event is about; flagging a dispute for a human."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import conversations, email_message, outbox
from payrescue.billing import signals as s
from payrescue.billing.known import PROVIDER_ID, Known, email_of
from payrescue.db.models import Handoff, Member, Subscription
from payrescue.events import Event
from payrescue.i18n import normalise

DISPUTE_REASON = "dispute"


def email_problem_of(email: str) -> str | None:
    """`Member.email_problem` for an address as it comes in: "invalid" when it is no
    address at all (the member is kept, reached on Telegram only), else None."""
    return None if email_message.usable(email) else outbox.INVALID


def resolve_member(session: AsyncSession, known: Known, signal: s.Signal, now: datetime, *,
                   create: bool) -> Member | None:
    """By the provider's customer id, then by e-mail (remembering the id on the member);
    a failure for a new address creates the member so the case is not lost."""
    ref, column = signal.member, PROVIDER_ID[signal.provider]
    email = email_of(ref)
    member = known.member(signal)
    if member is not None and ref.customer_id and getattr(member, column.key) is None:
        setattr(member, column.key, ref.customer_id)
        known.add_member(member)
    if member is None and create and email:
        # an address that is no address is kept (it names the member) but never written to
        member = Member(email=email, email_problem=email_problem_of(email),
                        name=(ref.name or "").strip()[:200] or None,
                        language=normalise(ref.language), created_at=now, member_since=now)
        setattr(member, column.key, ref.customer_id)
        session.add(member)
        known.add_member(member)
    return member


async def take_profile(session: AsyncSession, known: Known, member: Member,
                       ref: s.MemberRef) -> None:
    """`member-account-updated`: the new name, and the new address unless another member
    holds it."""
    if ref.name and ref.name.strip():
        member.name = ref.name.strip()[:200]
    email = email_of(ref)
    if email and email != member.email:
        taken = await session.scalar(select(Member.id).where(Member.email == email))
        if taken is None:  # an address another member holds stays with them
            # a new address: whatever was wrong with the old one is not known of this one
            member.email, member.email_problem = email, email_problem_of(email)
            known.add_member(member)


def upsert_subscription(session: AsyncSession, known: Known, member: Member, signal: s.Signal,
                        now: datetime) -> Subscription:
    """The subscription the event names, created on first sight."""
    sub = known.subscription(signal)
    if sub is None:
        sub = Subscription(provider=signal.provider, external_id=signal.subscription_ref or "",
                           status="active", created_at=now)
        session.add(sub)
        known.add_subscription(sub)
    sub.member_id = member.id
    sub.plan_name = signal.plan_name or sub.plan_name
    if signal.interval:
        sub.interval, sub.interval_count = signal.interval, signal.interval_count
    # its status, amount and end come from its history, replayed after the batch (`history`)
    if signal.update_url:
        sub.update_url = signal.update_url
    return sub


async def flag_dispute(session: AsyncSession, member: Member, now: datetime) -> list[Event]:
    """A chargeback: the member's chat goes to the agents' queue with the reason "dispute"."""
    conversation = await conversations.current_conversation(session, member.id, now)
    reasons = list(conversation.handoff_reasons or [])
    if DISPUTE_REASON not in reasons:
        conversation.handoff_reasons = [*reasons, DISPUTE_REASON]
    conversation.priority = max(conversation.priority or 0, 1)
    if conversation.status in conversations.HUMAN_OWNED:
        await session.flush()
        return []
    conversations.move(conversation, conversations.WAITING, now)
    session.add(Handoff(conversation_id=conversation.id, reasons=[DISPUTE_REASON],
                        priority=conversation.priority, requested_at=now))
    await session.flush()
    return [Event("conversation.waiting", {"conversation_id": conversation.id})]
