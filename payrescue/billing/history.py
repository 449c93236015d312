"""Payment truth: a subscription's state and its recovery cases, derived from its events.

Providers deliver at least once and in no particular order (a retry may come hours later),
so nothing here depends on arrival. `ingest` stores every accepted event with its normalised
facts (`facts_of`), and after each batch the subscriptions it touched are *replayed*: all
their events, ordered by the provider's own time, folded through the case state machine
(`cases.apply_*`) from nothing (`replay`), and the result is written onto the stored rows
(`rederive`). Cases keep their ids, dunning stage, hold and attribution, so the same set of
events gives the same cases and subscription whatever the order they came in.

Order (`order_key`): provider time (Stripe `created`, MemberPress `created_at`, generic
`occurred_at`); within the same second failures and their details come first, then status
changes, then the provider giving up, then payments, refunds, then the end of the
subscription (a payment in the second of a
failure came after it; a subscription cancelled in the second of its last failure ended
because of it); then the event id, so that even equal events have one order.

The fold:
- a failure opens the case of its invoice (providers whose retries are separate transactions,
  `cases_by_subscription`: the subscription's open case, else a new one) — unless the
  subscription ended before it: an ended subscription never starts a case;
- a payment recovers the case it pays; one that arrived before its failures therefore still
  closes the case they open, "no contact" (the provider's own retry did it);
- the end of the subscription (deleted, cancelled, expired) loses its open cases;
- the provider giving up (an invoice voided or marked uncollectible: its case; a subscription
  left `unpaid`: all its open cases) loses them too, but a later payment of such an invoice
  still recovers its case;
- a refund of the payment that recovered a case makes it lost (it was not saved);
- a decline code that came before its failure waits for it.

Events that name a customer nobody knows yet are parked (`outcome = parked`, no member); when
that customer becomes a member (`adopt`), they join their member and their subscriptions are
replayed like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import outbox, timeline
from payrescue.billing import cases
from payrescue.billing import signals as s
from payrescue.billing.cases import Failure
from payrescue.db.models import (
    Member,
    Outbox,
    PaymentEvent,
    RecoveryCase,
    Subscription,
    UpdateLink,
)

PARKED = "parked"  # the outcome of an event whose member is not known yet
# the kinds that change a subscription or its cases, and their place within one second
_RANK = {s.FAILED: 0, s.DECLINE_INFO: 1, s.NEXT_ATTEMPT: 2, s.SUBSCRIPTION_STATUS: 3,
         s.GAVE_UP: 4, s.RECOVERED: 5, s.REFUNDED: 6, s.CANCELED: 7}
HISTORY_KINDS = frozenset(_RANK)
_LAST = len(_RANK)


@dataclass(frozen=True)
class Fact:
    """What one stored event says, in the shape the fold needs."""

    event_id: str
    event_type: str
    occurred_at: datetime
    kind: str
    invoice_ref: str | None = None
    subscription_ref: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    attempt_count: int | None = None
    billing_reason: str | None = None
    decline_code: str | None = None
    error_code: str | None = None
    action_required: bool = False
    hosted_invoice_url: str | None = None
    update_url: str | None = None
    next_attempt_at: datetime | None = None
    subscription_status: str | None = None
    plan_name: str | None = None
    interval: str | None = None
    interval_count: int | None = None
    cases_by_subscription: bool = False


_STORED = tuple(f.name for f in fields(Fact)
                if f.name not in {"event_id", "event_type", "occurred_at"})
_TIMES = {"next_attempt_at"}


def facts_of(signal: s.Signal) -> dict[str, Any]:
    """The JSON stored beside the raw payload: the normalised signal, including what a
    provider look-up added (a decline code), which the payload alone does not hold."""
    out: dict[str, Any] = {}
    for name in _STORED:
        value = getattr(signal, name)
        if value is not None and value is not False:
            out[name] = value.isoformat() if name in _TIMES else value
    return out


def fact_of(row: PaymentEvent) -> Fact:
    stored = dict(row.facts or {})
    if not stored:  # stored before the facts were kept: what its columns say
        stored = {"kind": row.kind or s.IGNORED, "invoice_ref": row.invoice_ref,
                  "amount_minor": row.amount_minor, "currency": row.currency}
    for name in _TIMES & stored.keys():
        stored[name] = datetime.fromisoformat(stored[name])
    known = {k: v for k, v in stored.items() if k in _STORED}
    return Fact(event_id=row.event_id, event_type=row.event_type,
                occurred_at=row.occurred_at or row.received_at, **known)


def order_key(fact: Fact) -> tuple[datetime, int, str]:
    return fact.occurred_at, _RANK.get(fact.kind, _LAST), fact.event_id


# --- the fold ------------------------------------------------------------------------------


@dataclass
class Derived:
    """A case as the history says it is: a transient row, never added to the session."""

    case: RecoveryCase
    refs: list[str]  # the invoices (transactions) whose failures it holds; the first names it


@dataclass
class Replay:
    cases: list[Derived] = field(default_factory=list)
    status: str | None = None
    ended_at: datetime | None = None
    plan_name: str | None = None
    interval: tuple[str, int] | None = None
    amount: tuple[int, str] | None = None
    update_url: str | None = None
    changed_by: dict[str, Derived] = field(default_factory=dict)  # event id → its case
    belongs: dict[str, Derived] = field(default_factory=dict)


def replay(facts: Iterable[Fact], *, member_id: int, subscription_id: int | None,
           provider: str, now: datetime) -> Replay:
    """Fold the events in provider-time order; pure (no session), so tested on its own."""
    state = _Fold(Replay(), member_id, subscription_id, provider, now)
    seen: set[str] = set()
    for fact in sorted(facts, key=order_key):
        if fact.event_id in seen:
            continue
        seen.add(fact.event_id)
        state.take(fact)
    return state.result


@dataclass
class _Fold:
    result: Replay
    member_id: int
    subscription_id: int | None
    provider: str
    now: datetime
    by_ref: dict[str, Derived] = field(default_factory=dict)
    waiting_codes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    paid_by: dict[str, Derived] = field(default_factory=dict)  # a payment's ref → its case
    given_up: set[int] = field(default_factory=set)  # id() of cases lost to a give-up

    def take(self, fact: Fact) -> None:
        r = self.result
        r.plan_name = fact.plan_name or r.plan_name
        r.update_url = fact.update_url or r.update_url
        if fact.interval and fact.interval_count:
            r.interval = (fact.interval, fact.interval_count)
        handler = getattr(self, f"_{fact.kind}", None)
        if handler is not None:
            handler(fact)

    def _mark(self, fact: Fact, derived: Derived | None, change: str | None) -> None:
        if derived is None:
            return
        self.result.belongs[fact.event_id] = derived
        if change is not None:
            self.result.changed_by[fact.event_id] = derived

    def _open_run(self) -> Derived | None:
        last = self.result.cases[-1] if self.result.cases else None
        return last if last is not None and last.case.status == cases.OPEN else None

    def _failed(self, fact: Fact) -> None:
        r = self.result
        ref = fact.invoice_ref
        if r.ended_at is not None or not ref or fact.amount_minor is None or not fact.currency:
            return  # the subscription had ended: no case starts after that
        failure = Failure(
            invoice_ref=ref, occurred_at=fact.occurred_at, amount_minor=fact.amount_minor,
            currency=fact.currency, attempt_count=fact.attempt_count,
            decline_code=fact.decline_code, error_code=fact.error_code,
            billing_reason=fact.billing_reason, action_required=fact.action_required,
            hosted_invoice_url=fact.hosted_invoice_url, update_url=fact.update_url,
            next_attempt_at=fact.next_attempt_at)
        waiting = self.waiting_codes.pop(ref, None)  # one attempt's code: used once
        if not (failure.decline_code or failure.error_code) and waiting is not None:
            failure.decline_code, failure.error_code = waiting
        derived = self.by_ref.get(ref)
        if derived is None and fact.cases_by_subscription:
            derived = self._open_run()
        if derived is None:
            derived = Derived(cases.new_case(self.member_id, self.subscription_id,
                                             self.provider, failure, self.now), [ref])
            r.cases.append(derived)
            change: str | None = cases.OPENED
        else:
            change = cases.apply_failure(derived.case, failure, self.now)
        if ref not in self.by_ref:
            self.by_ref[ref] = derived
            if ref not in derived.refs:
                derived.refs.append(ref)
        r.amount = (fact.amount_minor, fact.currency.upper())
        if r.status != "canceled":
            r.status = "past_due"
        self._mark(fact, derived, change)

    def _recovered(self, fact: Fact) -> None:
        r = self.result
        targets = [self.by_ref[fact.invoice_ref]] if fact.invoice_ref in self.by_ref else []
        if not targets and fact.cases_by_subscription:
            targets = [d for d in r.cases if d.case.status == cases.OPEN]
        for derived in targets:
            change = cases.apply_recovery(derived.case, fact.occurred_at, fact.amount_minor,
                                          cases.NO_CONTACT, self.now,
                                          after_give_up=id(derived) in self.given_up)
            if change is not None and fact.invoice_ref:
                self.paid_by[fact.invoice_ref] = derived
            self._mark(fact, derived, change)
        if r.status != "canceled":
            r.status = "active"

    def _refunded(self, fact: Fact) -> None:
        derived = self.paid_by.get(fact.invoice_ref or "")
        if derived is not None:
            self._mark(fact, derived, cases.apply_refund(derived.case, fact.occurred_at,
                                                         self.now))

    def _gave_up(self, fact: Fact) -> None:
        r = self.result
        if fact.invoice_ref:  # an invoice voided or marked uncollectible: its case
            targets = [self.by_ref[fact.invoice_ref]] if fact.invoice_ref in self.by_ref else []
        else:  # a subscription left unpaid: all its open cases
            targets = [d for d in r.cases if d.case.status == cases.OPEN]
            if r.status != "canceled" and fact.subscription_status:
                r.status = fact.subscription_status
        for derived in targets:
            change = cases.apply_loss(derived.case, fact.occurred_at, self.now)
            if change is not None:
                self.given_up.add(id(derived))
            self._mark(fact, derived, change)

    def _canceled(self, fact: Fact) -> None:
        r = self.result
        r.ended_at = r.ended_at or fact.occurred_at
        r.status = "canceled"
        for derived in r.cases:
            self._mark(fact, derived, cases.apply_loss(derived.case, fact.occurred_at,
                                                       self.now))

    def _sub_status(self, fact: Fact) -> None:
        if self.result.status != "canceled" and fact.subscription_status:
            self.result.status = fact.subscription_status

    def _decline_info(self, fact: Fact) -> None:
        if not fact.invoice_ref or not (fact.decline_code or fact.error_code):
            return
        derived = self.by_ref.get(fact.invoice_ref)
        if derived is None:  # came before its failure (Stripe sends both in one second)
            self.waiting_codes[fact.invoice_ref] = (fact.decline_code, fact.error_code)
            return
        self._mark(fact, derived, cases.apply_decline(
            derived.case, fact.decline_code, fact.error_code, fact.occurred_at, self.now))

    def _next_attempt(self, fact: Fact) -> None:
        derived = self.by_ref.get(fact.invoice_ref or "")
        if derived is not None:
            self._mark(fact, derived, cases.apply_next_attempt(
                derived.case, fact.next_attempt_at, fact.occurred_at, self.now))


# --- onto the stored rows --------------------------------------------------------------------

# what the history decides about a case; the rest (id, dunning stage, hold, attribution)
# belongs to the row
DERIVED_FIELDS = ("status", "amount_minor", "currency", "attempt_count", "decline_code",
                  "decline_category", "billing_reason", "action_required",
                  "hosted_invoice_url", "update_url", "next_attempt_at", "opened_at",
                  "last_failure_at", "recovered_at", "recovered_amount_minor", "lost_at")


@dataclass
class Rederived:
    changes: list[tuple[RecoveryCase, str]] = field(default_factory=list)
    case_of: dict[str, RecoveryCase] = field(default_factory=dict)  # event id → its case
    changed_events: set[str] = field(default_factory=set)
    recovered: bool = False


async def history(session: AsyncSession, provider: str, subscription_ref: str | None,
                  invoice_ref: str | None) -> tuple[str | None, list[PaymentEvent]]:
    """The events of a subscription (with those that name only one of its invoices), or of
    a lone invoice; an invoice that belongs to a subscription brings the whole subscription."""
    if not subscription_ref:
        rows = list(await session.scalars(select(PaymentEvent).where(
            PaymentEvent.provider == provider, PaymentEvent.invoice_ref == invoice_ref)))
        subscription_ref = next((r.subscription_ref for r in rows if r.subscription_ref), None)
        if not subscription_ref:
            return None, rows
    rows = list(await session.scalars(select(PaymentEvent).where(
        PaymentEvent.provider == provider, PaymentEvent.subscription_ref == subscription_ref)))
    refs = sorted({r.invoice_ref for r in rows if r.invoice_ref})
    if refs:
        rows += list(await session.scalars(select(PaymentEvent).where(
            PaymentEvent.provider == provider, PaymentEvent.subscription_ref.is_(None),
            PaymentEvent.invoice_ref.in_(refs))))
    return subscription_ref, rows


async def rederive(session: AsyncSession, provider: str, member: Member,
                   subscription: Subscription | None, rows: list[PaymentEvent],
                   now: datetime) -> Rederived:
    """Replay `rows` and make the stored cases and subscription say what they say."""
    facts = [fact_of(row) for row in rows if row.kind in HISTORY_KINDS or row.facts]
    result = replay(facts, member_id=member.id, provider=provider, now=now,
                    subscription_id=subscription.id if subscription else None)
    out = Rederived()
    if subscription is not None:
        _sync_subscription(subscription, result)
    failure_refs = {f.invoice_ref for f in facts if f.kind == s.FAILED and f.invoice_ref}
    stored = await _stored_cases(session, provider, subscription, failure_refs)
    pairs = _match(stored, result.cases)
    taken = {id(row) for row, _ in pairs if row is not None}
    for row in stored:  # its failures now start nothing (they came after the end)
        if id(row) not in taken and row.invoice_ref in failure_refs:
            await _drop_case(session, row)
    for row, derived in pairs:
        row = await _write_case(session, row, derived, member, out, now)
        for event_id, owner in result.belongs.items():
            if owner is derived:
                out.case_of[event_id] = row
        out.changed_events |= {e for e, owner in result.changed_by.items() if owner is derived
                               and any(c is row for c, _ in out.changes)}
    return out


def _match(stored: list[RecoveryCase], derived_cases: list[Derived]
           ) -> list[tuple[RecoveryCase | None, Derived]]:
    """Each derived case with the stored row that holds one of its invoices (the one named
    after its first failure, if any), or None for a case that is new."""
    pairs: list[tuple[RecoveryCase | None, Derived]] = []
    used: set[int] = set()
    for derived in derived_cases:
        candidates = [c for c in stored if c.invoice_ref in derived.refs and id(c) not in used]
        candidates.sort(key=lambda c: c.invoice_ref != derived.refs[0])
        row = candidates[0] if candidates else None
        if row is not None:
            used.add(id(row))
        pairs.append((row, derived))
    return pairs


def _sync_subscription(sub: Subscription, result: Replay) -> None:
    sub.status = result.status or sub.status or "active"
    sub.ended_at = result.ended_at
    if result.amount is not None:
        sub.amount_minor, sub.currency = result.amount
    sub.plan_name = result.plan_name or sub.plan_name
    if result.interval is not None:
        sub.interval, sub.interval_count = result.interval
    sub.update_url = result.update_url or sub.update_url


async def _stored_cases(session: AsyncSession, provider: str, sub: Subscription | None,
                        refs: set[str]) -> list[RecoveryCase]:
    """Locked for this transaction on PostgreSQL, in id order (no crosswise waits)."""
    terms = [RecoveryCase.invoice_ref.in_(sorted(refs))] if refs else []
    if sub is not None and sub.id is not None:
        terms.append(RecoveryCase.subscription_id == sub.id)
    if not terms:
        return []
    return list(await session.scalars(
        select(RecoveryCase).where(RecoveryCase.provider == provider, or_(*terms))
        .order_by(RecoveryCase.id).with_for_update()))


async def _write_case(session: AsyncSession, row: RecoveryCase | None, derived: Derived,
                      member: Member, out: Rederived, now: datetime) -> RecoveryCase:
    new = derived.case
    if row is None:
        row = new  # the transient row becomes the stored one
        row.attribution = cases.NO_CONTACT if row.status == cases.RECOVERED else None
        row.held = False
        session.add(row)
        await session.flush()
        out.changes.append((row, cases.OPENED))
        if row.status != cases.OPEN:
            out.changes.append((row, row.status))
            out.recovered |= row.status == cases.RECOVERED
        return row
    before = {name: getattr(row, name) for name in DERIVED_FIELDS}
    after = {name: getattr(new, name) for name in DERIVED_FIELDS}
    if before == after and row.subscription_id == new.subscription_id \
            and row.invoice_ref == new.invoice_ref:
        return row
    # named after its first failure: an earlier attempt that arrived late renames it
    row.invoice_ref = new.invoice_ref
    for name, value in after.items():
        setattr(row, name, value)
    row.subscription_id = new.subscription_id or row.subscription_id
    row.member_id = member.id
    row.updated_at = now
    if row.status != cases.OPEN:
        row.held = False
    if row.status == cases.RECOVERED and before["status"] != cases.RECOVERED:
        row.attribution = await cases.attribution_for(session, row)
        completed = await session.execute(
            update(UpdateLink).where(UpdateLink.case_id == row.id,
                                     UpdateLink.first_opened_at.is_not(None),
                                     UpdateLink.completed_at.is_(None))
            .values(completed_at=row.recovered_at))
        if completed.rowcount:
            timeline.case_event(session, member.id, row.id, timeline.LINK_COMPLETED, now)
        out.recovered = True
    elif row.status != cases.RECOVERED:
        row.attribution = None
    out.changes.append((row, _change_name(before, row)))
    return row


def _change_name(before: dict[str, Any], row: RecoveryCase) -> str:
    if row.status != before["status"]:
        return cases.FAILED_AGAIN if row.status == cases.OPEN else row.status
    if row.attempt_count != before["attempt_count"]:
        return cases.ACTION_REQUIRED if row.action_required else cases.FAILED_AGAIN
    return cases.UPDATED


async def _drop_case(session: AsyncSession, row: RecoveryCase) -> None:
    """A case the history no longer holds: what waits for it is cancelled, then it goes."""
    waiting = await session.scalars(select(Outbox.id).where(
        Outbox.case_id == row.id, Outbox.status == outbox.QUEUED))
    await outbox.cancel_queued(session, list(waiting), "case withdrawn: subscription ended")
    await session.execute(delete(RecoveryCase).where(RecoveryCase.id == row.id))
    session.expunge(row)


# --- parked events ---------------------------------------------------------------------------


def customer_ref(signal: s.Signal) -> str | None:
    """What a parked event waits for: the provider's customer id, else the e-mail."""
    ref = signal.member
    if ref.customer_id:
        return ref.customer_id
    email = (ref.email or "").strip().lower()
    return f"email:{email}" if email else None


async def adopt(session: AsyncSession, member: Member, provider_ids: dict[str, str | None]
                ) -> list[tuple[str, str | None, str | None]]:
    """Give a member the events parked for them (by any of their provider ids or their
    e-mail); returns the (provider, subscription, invoice) whose history they join."""
    terms = [(PaymentEvent.provider == provider) & (PaymentEvent.customer_ref == ref)
             for provider, ref in provider_ids.items() if ref]
    if member.email:
        terms.append(PaymentEvent.customer_ref == f"email:{member.email}")
    if not terms:
        return []
    rows = list(await session.scalars(select(PaymentEvent).where(
        PaymentEvent.member_id.is_(None), PaymentEvent.outcome == PARKED, or_(*terms))))
    if not rows:
        return []
    await session.execute(update(PaymentEvent).where(
        PaymentEvent.id.in_([r.id for r in rows])).values(member_id=member.id)
        .execution_options(synchronize_session=False))
    return sorted({(r.provider, r.subscription_ref, r.invoice_ref) for r in rows
                   if r.kind in HISTORY_KINDS and (r.subscription_ref or r.invoice_ref)},
                  key=str)
