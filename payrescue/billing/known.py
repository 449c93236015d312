"""What a batch of events needs from the database, loaded with one query per table.

Acting on an event used to cost a round trip per question (who is the member, which
subscription, which case, was it paid already, did the decline code come first). Each costs far
more in the driver and SQLAlchemy than in the database, so a batch asks each question once for
all its events and `ingest` answers from these maps. What the batch itself creates (a new
member, subscription or case) is added, so a later event of the same batch finds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy import case as when
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, raiseload

from payrescue.billing import signals as s
from payrescue.billing import stripe_events
from payrescue.db.models import Member, PaymentEvent, RecoveryCase, Subscription

# the column that holds each provider's own id for a member
PROVIDER_ID: dict[str, InstrumentedAttribute[str | None]] = {
    "stripe": Member.stripe_customer_id,
    "memberpress": Member.memberpress_member_id,
    "generic": Member.external_id,
}
# providers whose failed attempts are separate transactions of one renewal: their case is
# found through the subscription, and a success is remembered per subscription
BY_SUBSCRIPTION = "sub:"

_Key = tuple[str, str]  # (provider, reference)


def email_of(ref: s.MemberRef) -> str | None:
    return (ref.email or "").strip().lower() or None


def by_subscription(signal: s.Signal) -> bool:
    return signal.cases_by_subscription and bool(signal.subscription_ref)


def paid_ref(signal: s.Signal) -> str:
    """Where a success is remembered: the invoice, or the subscription (see BY_SUBSCRIPTION)."""
    if by_subscription(signal):
        return BY_SUBSCRIPTION + (signal.subscription_ref or "")
    return signal.invoice_ref or ""


@dataclass
class Known:
    members_by_id: dict[tuple[str, str], Member] = field(default_factory=dict)  # (column, id)
    members_by_email: dict[str, Member] = field(default_factory=dict)
    subscriptions: dict[_Key, Subscription] = field(default_factory=dict)
    cases: dict[_Key, RecoveryCase] = field(default_factory=dict)
    last_paid: dict[_Key, datetime] = field(default_factory=dict)
    declines: dict[_Key, tuple[datetime, str | None, str | None]] = field(default_factory=dict)

    @classmethod
    async def load(cls, session: AsyncSession, signals: list[s.Signal]) -> Known:
        known = cls()
        for member in await _members(session, signals):
            known.add_member(member)
        for sub in await _subscriptions(session, signals):
            known.add_subscription(sub)
        for case in await _cases(session, signals):
            known.add_case(case)
        await known._load_payments(session, signals)
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

    # --- cases and what earlier events said --------------------------------------------------

    def case(self, provider: str, invoice_ref: str | None) -> RecoveryCase | None:
        return self.cases.get((provider, invoice_ref or ""))

    def add_case(self, case: RecoveryCase) -> None:
        self.cases[case.provider, case.invoice_ref] = case

    def paid_since(self, signal: s.Signal, moment: datetime) -> bool:
        """Whether a success for this invoice at or after `moment` was already recorded."""
        paid_at = self.last_paid.get((signal.provider, paid_ref(signal)))
        return paid_at is not None and paid_at >= moment

    def earlier_decline(self, signal: s.Signal) -> tuple[str | None, str | None]:
        """The codes of a `payment_intent.payment_failed` stored before its invoice's failure."""
        found = self.declines.get((signal.provider, signal.invoice_ref or ""))
        return (found[1], found[2]) if found else (None, None)

    def note(self, signal: s.Signal, raw_ref: str | None) -> None:
        """Remember what this event's raw row says, for later events of the same batch."""
        key = (signal.provider, raw_ref or "")
        if signal.kind == s.RECOVERED and raw_ref:
            self._take_paid(key, signal.occurred_at)
        elif signal.kind == s.DECLINE_INFO and raw_ref:
            self._take_decline(key, signal.occurred_at, signal.decline_code, signal.error_code)

    def _take_paid(self, key: _Key, paid_at: datetime) -> None:
        self.last_paid[key] = max(self.last_paid.get(key, paid_at), paid_at)

    def _take_decline(self, key: _Key, occurred_at: datetime, decline_code: str | None,
                      error_code: str | None) -> None:
        if key not in self.declines or self.declines[key][0] <= occurred_at:
            self.declines[key] = (occurred_at, decline_code, error_code)

    async def _load_payments(self, session: AsyncSession, signals: list[s.Signal]) -> None:
        """Successes already recorded for these failures' invoices (or subscriptions), and
        Stripe decline codes that came before them, in one query."""
        failed = [x for x in signals if x.kind == s.FAILED]
        paid = [(x.provider, paid_ref(x)) for x in failed]
        codes = [(x.provider, x.invoice_ref) for x in failed if x.provider == "stripe"
                 and x.invoice_ref and not (x.decline_code or x.error_code)]
        if not failed:
            return
        rows = await session.execute(
            select(PaymentEvent.provider, PaymentEvent.invoice_ref, PaymentEvent.kind,
                   PaymentEvent.occurred_at,
                   when((PaymentEvent.kind == s.DECLINE_INFO, PaymentEvent.payload)))
            .where(or_(and_(PaymentEvent.kind == s.RECOVERED, _any_event(paid)),
                       and_(PaymentEvent.kind == s.DECLINE_INFO, _any_event(codes)))))
        for provider, ref, kind, occurred_at, payload in rows:
            if kind == s.RECOVERED:
                self._take_paid((provider, ref), occurred_at)
            else:
                earlier = stripe_events.parse(json.dumps(payload).encode())
                self._take_decline((provider, ref), occurred_at, earlier.decline_code,
                                   earlier.error_code)


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
    return list(await session.scalars(select(Subscription).where(
        _any_ref(Subscription.provider, Subscription.external_id, keys))))


async def _cases(session: AsyncSession, signals: list[s.Signal]) -> list[RecoveryCase]:
    """Locked for this transaction on PostgreSQL, in id order so that two batches never wait
    on each other crosswise: deliveries for one invoice apply one after the other."""
    keys = [(x.provider, x.invoice_ref) for x in signals if x.kind in _CASE_KINDS]
    if not any(ref for _, ref in keys):
        return []
    return list(await session.scalars(
        select(RecoveryCase).where(
            _any_ref(RecoveryCase.provider, RecoveryCase.invoice_ref, keys))
        .order_by(RecoveryCase.id).with_for_update()))


def _any_event(keys: Iterable[tuple[str, str | None]]) -> ColumnElement[bool]:
    return _any_ref(PaymentEvent.provider, PaymentEvent.invoice_ref, keys)


_CASE_KINDS = {s.FAILED, s.RECOVERED, s.DECLINE_INFO, s.NEXT_ATTEMPT}
