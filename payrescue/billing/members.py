"""Finding the member and subscription an event is about; flagging a dispute for a human."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, raiseload

from payrescue import conversations
from payrescue.billing import signals as s
from payrescue.config import Settings
from payrescue.db.models import Handoff, Member, Subscription
from payrescue.events import Event
from payrescue.i18n import normalise

DISPUTE_REASON = "dispute"
_PROVIDER_ID: dict[str, InstrumentedAttribute[str | None]] = {
    "stripe": Member.stripe_customer_id,
    "memberpress": Member.memberpress_member_id,
    "generic": Member.external_id,
}


async def resolve_member(session: AsyncSession, signal: s.Signal, now: datetime, *,
                         create: bool) -> Member | None:
    """By the provider's customer id, then by e-mail (remembering the id on the member);
    a failure for a new address creates the member so the case is not lost."""
    ref, column = signal.member, _PROVIDER_ID[signal.provider]
    email = (ref.email or "").strip().lower() or None
    member = await _find(session, column, ref.customer_id, email)
    if member is not None and ref.customer_id and getattr(member, column.key) is None:
        setattr(member, column.key, ref.customer_id)
    if member is None and create and email:
        member = Member(email=email, name=(ref.name or "").strip()[:200] or None,
                        language=normalise(ref.language), created_at=now, member_since=now)
        setattr(member, column.key, ref.customer_id)
        session.add(member)
        await session.flush()
    if member is not None and signal.kind == s.MEMBER_UPDATED:
        await _take_profile(session, member, ref)
    return member


async def _find(session: AsyncSession, column: InstrumentedAttribute[str | None],
                customer_id: str | None, email: str | None) -> Member | None:
    """One round trip for both keys; the customer id wins over the address."""
    keys = ([column == customer_id] if customer_id else []) + (
        [Member.email == email] if email else [])
    if not keys:
        return None
    found = list(await session.scalars(
        select(Member).where(or_(*keys)).options(raiseload(Member.telegram)).limit(2)))
    by_id = [m for m in found if customer_id and getattr(m, column.key) == customer_id]
    return (by_id or found or [None])[0]


async def _take_profile(session: AsyncSession, member: Member, ref: s.MemberRef) -> None:
    if ref.name and ref.name.strip():
        member.name = ref.name.strip()[:200]
    email = (ref.email or "").strip().lower()
    if email and email != member.email:
        taken = await session.scalar(select(Member.id).where(Member.email == email))
        if taken is None:  # an address another member holds stays with them
            member.email = email


async def upsert_subscription(session: AsyncSession, member: Member, signal: s.Signal,
                              settings: Settings, now: datetime) -> Subscription:
    """Insert or update in one statement (`ON CONFLICT … DO UPDATE … RETURNING`)."""
    values: dict = {"member_id": member.id, "plan_name": signal.plan_name}
    if signal.kind == s.FAILED:
        values.update(status="past_due", amount_minor=signal.amount_minor,
                      currency=signal.currency)
    if signal.update_url:
        values["update_url"] = signal.update_url
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Subscription).values(
        provider=signal.provider, external_id=signal.subscription_ref or "", created_at=now,
        **{"status": "active", **values})
    updates = {k: statement.excluded[k] for k in values}
    updates["plan_name"] = func.coalesce(statement.excluded.plan_name, Subscription.plan_name)
    statement = statement.on_conflict_do_update(
        index_elements=["provider", "external_id"], set_=updates).returning(Subscription)
    return await session.scalar(statement, execution_options={"populate_existing": True})


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
