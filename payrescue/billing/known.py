"""What a batch of events needs from the database, loaded with one query per table.

Acting on an event used to cost a round trip per question (who is the member, which
subscription). Each costs far more in the driver and SQLAlchemy than in the database, so a
batch asks each question once for all its events and `ingest` answers from these maps. What
the batch itself creates (a new member or subscription) is added, so a later event of the same
batch finds it. Cases are not looked up here: they are derived from each subscription's
history (`history`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, raiseload

from payrescue.billing import signals as s
from payrescue.db.models import Member, Subscription

# the column that holds each provider's own id for a member
PROVIDER_ID: dict[str, InstrumentedAttribute[str | None]] = {
    "stripe": Member.stripe_customer_id,
    "memberpress": Member.memberpress_member_id,
    "generic": Member.external_id,
}

_Key = tuple[str, str]  # (provider, reference)


def email_of(ref: s.MemberRef) -> str | None:
    return (ref.email or "").strip().lower() or None


def by_subscription(signal: s.Signal) -> bool:
    return signal.cases_by_subscription and bool(signal.subscription_ref)


@dataclass
class Known:
    members_by_id: dict[tuple[str, str], Member] = field(default_factory=dict)  # (column, id)
    members_by_email: dict[str, Member] = field(default_factory=dict)
    subscriptions: dict[_Key, Subscription] = field(default_factory=dict)

    @classmethod
    async def load(cls, session: AsyncSession, signals: list[s.Signal]) -> Known:
        known = cls()
        for member in await _members(session, signals):
            known.add_member(member)
        for sub in await _subscriptions(session, signals):
            known.add_subscription(sub)
        return known

    # --- members and subscriptions ---------------------------------------------------------

    def member(self, signal: s.Signal) -> Member | None:
        """By the provider's customer id, then by e-mail."""
        column = PROVIDER_ID[signal.provider].key
        customer_id, email = signal.member.customer_id, email_of(signal.member)
        found = self.members_by_id.get((column, customer_id)) if customer_id else None
        return found or (self.members_by_email.get(email) if email else None)

    def add_member(self, member: Member) -> None:
        for attribute in PROVIDER_ID.values():
            if getattr(member, attribute.key) is not None:
                self.members_by_id[attribute.key, getattr(member, attribute.key)] = member
        if member.email:
            self.members_by_email[member.email] = member

    def subscription(self, signal: s.Signal) -> Subscription | None:
        return self.subscriptions.get((signal.provider, signal.subscription_ref or ""))

    def add_subscription(self, sub: Subscription) -> None:
        self.subscriptions[sub.provider, sub.external_id] = sub


def _any_ref(provider: ColumnElement[str], ref: ColumnElement[str],
             keys: Iterable[tuple[str, str | None]]) -> ColumnElement[bool]:
    """`(provider = p AND ref IN (…)) OR …`, one term per provider."""
    refs: dict[str, set[str]] = {}
    for name, value in keys:
        if value:
            refs.setdefault(name, set()).add(value)
    terms = [and_(provider == name, ref.in_(sorted(values))) for name, values in refs.items()]
    return or_(*terms) if terms else false()


async def _members(session: AsyncSession, signals: list[s.Signal]) -> list[Member]:
    ids: dict[str, set[str]] = {}
    emails: set[str] = set()
    for signal in signals:
        if signal.member.customer_id:
            ids.setdefault(signal.provider, set()).add(signal.member.customer_id)
        if email := email_of(signal.member):
            emails.add(email)
    terms = [PROVIDER_ID[provider].in_(sorted(values)) for provider, values in ids.items()]
    if emails:
        terms.append(Member.email.in_(sorted(emails)))
    if not terms:
        return []
    return list(await session.scalars(
        select(Member).where(or_(*terms)).options(raiseload(Member.telegram))))


async def _subscriptions(session: AsyncSession, signals: list[s.Signal]) -> list[Subscription]:
    keys = [(x.provider, x.subscription_ref) for x in signals]
    if not any(ref for _, ref in keys):
        return []
    # locked for this transaction on PostgreSQL (in id order: no crosswise waits), so two
    # processes replay one subscription's history one after the other, each seeing it whole
    return list(await session.scalars(select(Subscription).where(
        _any_ref(Subscription.provider, Subscription.external_id, keys))
        .order_by(Subscription.id).with_for_update()))
