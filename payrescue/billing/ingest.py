"""Store the raw events, drop repeats, act on them: exactly once, a batch per transaction.

`ingest_batch` takes the events that arrived together (see `batches`, which also makes sure
no two of them concern the same member, subscription, invoice or event id) and:

1. stores each raw payload first: `INSERT … ON CONFLICT (provider, event_id) DO NOTHING
   RETURNING id` returns no row for a delivery we already have. On PostgreSQL a delivery racing
   another transaction waits on the unique index until that one commits, then finds the row;
   on SQLite the insert takes the database's write lock, so writers queue;
2. loads what the events need (`Known`: one query per table instead of one per question);
3. finds or creates their members, then their subscriptions (a flush after each step, so one
   INSERT serves the whole batch), then acts on each event in arrival order;
4. writes each raw row's outcome.

All of it is one transaction, so a crash or a lost database leaves either everything or
nothing, and the provider's retry starts over. Bus events are published only after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue import timeline
from payrescue.billing import alerts, cases, declines
from payrescue.billing import signals as s
from payrescue.billing.cases import Failure
from payrescue.billing.known import Known, by_subscription, paid_ref
from payrescue.billing.members import (
    flag_dispute,
    resolve_member,
    take_profile,
    upsert_subscription,
)
from payrescue.config import Settings
from payrescue.db.models import Member, PaymentEvent, RecoveryCase, Subscription, UpdateLink
from payrescue.events import Event

log = logging.getLogger(__name__)

# the raw log is written with Core statements: no ORM object is needed, and it is the
# hottest path of a webhook
_EVENTS = PaymentEvent.__table__
_RECORD_OUTCOME = (
    update(_EVENTS).where(_EVENTS.c.id == bindparam("b_id"))
    .values(outcome=bindparam("b_outcome"), member_id=bindparam("b_member_id"),
            case_id=bindparam("b_case_id")))


@dataclass
class Outcome:
    status: str  # processed | duplicate | ignored | stale | unknown_member | recorded
    case_id: int | None = None
    member_id: int | None = None
    events: list[Event] = field(default_factory=list)


@dataclass
class _Work:
    """One event on its way through a batch."""

    session: AsyncSession
    signal: s.Signal
    settings: Settings
    now: datetime
    status: str = "processed"
    row_id: int | None = None  # its raw row; None for a repeat
    raw_ref: str | None = None  # the invoice (or subscription) its raw row is filed under
    known: Known = field(default_factory=Known)
    member: Member | None = None
    subscription: Subscription | None = None
    case: RecoveryCase | None = None
    changes: list[tuple[RecoveryCase, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def changed(self, case: RecoveryCase, change: str | None) -> None:
        if change is not None:
            self.changes.append((case, change))

    def outcome(self) -> Outcome:
        """After the flush, when every new row has its id."""
        changed = [Event("case.changed", {"case_id": case.id, "change": change})
                   for case, change in self.changes]
        return Outcome(self.status, self.case.id if self.case else None,
                       self.member.id if self.member else None, changed + self.events)


async def ingest_batch(sessionmaker: async_sessionmaker[AsyncSession], signals: list[s.Signal],
                       settings: Settings, now: datetime) -> list[Outcome]:
    """Store and act on events that concern different members, subscriptions and invoices."""
    async with sessionmaker() as session, session.begin():
        works = [_Work(session, signal, settings, now) for signal in signals]
        await _store_raw(session, works, now)
        fresh = [w for w in works if w.row_id is not None]
        acting = [w for w in fresh if w.signal.kind != s.IGNORED]
        for work in acting:
            _name_subscription_attempt(work.signal)
        known = await Known.load(session, [w.signal for w in acting])
        for work in acting:
            work.known = known
            await _resolve_member(work)
        await session.flush()  # the new members' ids, for their subscriptions and cases
        for work in acting:
            if work.member is not None and work.signal.subscription_ref:
                work.subscription = upsert_subscription(session, known, work.member,
                                                        work.signal, now)
        await session.flush()
        for work in fresh:
            await _act(work)
            known.note(work.signal, work.raw_ref)
        await session.flush()  # new cases get their ids, for their timeline entries
        for work in fresh:
            _record_on_timeline(work)
        await session.flush()
        outcomes = [w.outcome() for w in works]
        if fresh:
            await session.execute(_RECORD_OUTCOME, [
                {"b_id": w.row_id, "b_outcome": o.status, "b_member_id": o.member_id,
                 "b_case_id": o.case_id} for w, o in zip(works, outcomes, strict=True)
                if w.row_id is not None])
    return outcomes


def _record_on_timeline(work: _Work) -> None:
    """Case events the member's timeline shows (a detail update is not one of them)."""
    for case, change in work.changes:
        if change != cases.UPDATED:
            timeline.case_event(work.session, case.member_id, case.id,
                                timeline.CASE_PREFIX + change, work.now,
                                data={"amount_minor": case.amount_minor,
                                      "currency": case.currency})


async def already_stored(session: AsyncSession, provider: str, event_id: str) -> bool:
    """A cheap look before slow work (a provider look-up) for an event we already have."""
    found = await session.scalar(select(PaymentEvent.id).where(
        PaymentEvent.provider == provider, PaymentEvent.event_id == event_id))
    return found is not None


async def _store_raw(session: AsyncSession, works: list[_Work], now: datetime) -> None:
    """One multi-row INSERT; a work whose event is already stored keeps `row_id` None."""
    rows, first = [], {}
    for work in works:
        signal = work.signal
        # a success is filed where later failures look for it (`paid_ref`)
        work.raw_ref = (paid_ref(signal) or None) if signal.kind == s.RECOVERED \
            else signal.invoice_ref
        key = (signal.provider, signal.event_id)
        if key in first:
            work.status = "duplicate"
            continue
        first[key] = work
        rows.append({
            "provider": signal.provider, "event_id": signal.event_id,
            "event_type": signal.event_type[:100], "occurred_at": signal.occurred_at,
            "received_at": now, "payload": signal.payload, "amount_minor": signal.amount_minor,
            "currency": signal.currency, "invoice_ref": work.raw_ref, "kind": signal.kind})
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (insert(_EVENTS).on_conflict_do_nothing(index_elements=["provider", "event_id"])
                 .returning(_EVENTS.c.id, _EVENTS.c.provider, _EVENTS.c.event_id))
    for row_id, provider, event_id in await session.execute(statement, rows):
        first[provider, event_id].row_id = row_id
    for work in works:
        if work.row_id is None:
            work.status = "duplicate"


def _name_subscription_attempt(signal: s.Signal) -> None:
    """A failed attempt of a provider without invoices is filed under its subscription and time."""
    if signal.kind == s.FAILED and not signal.invoice_ref and by_subscription(signal):
        signal.invoice_ref = f"{signal.subscription_ref}@{signal.occurred_at:%Y%m%dT%H%M%S}"


_Handler = Callable[[_Work], Awaitable[None]]


async def _resolve_member(work: _Work) -> None:
    signal = work.signal
    work.member = resolve_member(work.session, work.known, signal, work.now,
                                 create=signal.kind == s.FAILED)
    if work.member is not None and signal.kind == s.MEMBER_UPDATED:
        await take_profile(work.session, work.known, work.member, signal.member)


async def _act(work: _Work) -> None:
    if work.signal.kind == s.IGNORED:
        work.status = "ignored"
    elif work.member is None:
        work.status = "unknown_member"
    else:
        await _HANDLERS[work.signal.kind](work)


async def _failed(work: _Work) -> None:
    signal = work.signal
    if not signal.invoice_ref or signal.amount_minor is None or not signal.currency:
        raise s.BadEvent("a failed payment needs an invoice, an amount and a currency")
    failure = Failure(
        invoice_ref=signal.invoice_ref, occurred_at=signal.occurred_at,
        amount_minor=signal.amount_minor, currency=signal.currency,
        attempt_count=signal.attempt_count, decline_code=signal.decline_code,
        error_code=signal.error_code, billing_reason=signal.billing_reason,
        action_required=signal.action_required, hosted_invoice_url=signal.hosted_invoice_url,
        update_url=signal.update_url, next_attempt_at=signal.next_attempt_at)
    case = await _case_for_failure(work)
    if case is None:
        if work.known.paid_since(signal, signal.occurred_at):
            work.status = "stale"
            return
        if not (failure.decline_code or failure.error_code) and signal.provider == "stripe":
            # Stripe sends `payment_intent.payment_failed` at the same moment as the invoice
            # event, so it may have come first (its case not known yet): take its code now
            failure.decline_code, failure.error_code = work.known.earlier_decline(signal)
        case = cases.new_case(work.member.id, work.subscription.id if work.subscription else None,
                              signal.provider, failure, work.now)
        work.session.add(case)
        work.known.add_case(case)
        change: str | None = cases.OPENED
    else:
        change = cases.apply_failure(case, failure, work.now)
    work.case = case
    work.changed(case, change)
    if change is None:
        work.status = "stale"
        return
    await _check_alarm(work, case)


async def _case_for_failure(work: _Work) -> RecoveryCase | None:
    signal = work.signal
    case = work.known.case(signal.provider, signal.invoice_ref)
    if case is None and by_subscription(signal) and work.subscription is not None:
        open_ones = await cases.open_cases(work.session, subscription_id=work.subscription.id)
        case = open_ones[0] if open_ones else None
    return case


async def _check_alarm(work: _Work, case: RecoveryCase) -> None:
    signal = work.signal
    configuration = declines.is_configuration_error(signal.decline_code, signal.error_code)
    if not configuration and case.decline_category != declines.PROCESSING_ERROR:
        return
    await work.session.flush()  # the alarm counts and holds this case: it needs its row
    if configuration:
        events = await alerts.raise_configuration_alert(
            work.session, work.settings, signal.provider, case,
            signal.error_code or signal.decline_code or "", work.now)
    else:
        events = await alerts.check_gateway_fault(work.session, work.settings, signal.provider,
                                                  work.now)
    work.events.extend(events)


async def _recovered(work: _Work) -> None:
    signal, session = work.signal, work.session
    targets: list[RecoveryCase] = []
    if signal.invoice_ref:
        case = work.known.case(signal.provider, signal.invoice_ref)
        targets = [case] if case is not None else []
    if not targets and by_subscription(signal) and work.subscription is not None:
        targets = await cases.open_cases(session, subscription_id=work.subscription.id)
    if work.subscription is not None and work.subscription.status != "canceled":
        work.subscription.status = "active"
    closed = False
    for case in targets:
        attribution = await cases.attribution_for(session, case)
        change = cases.apply_recovery(case, signal.occurred_at, signal.amount_minor,
                                      attribution, work.now)
        work.case = case
        if change is not None:
            closed = True
            completed = await session.execute(
                update(UpdateLink).where(UpdateLink.case_id == case.id,
                                         UpdateLink.first_opened_at.is_not(None),
                                         UpdateLink.completed_at.is_(None))
                .values(completed_at=signal.occurred_at))
            if completed.rowcount:
                timeline.case_event(session, case.member_id, case.id, timeline.LINK_COMPLETED,
                                    work.now)
            work.changed(case, change)
    if closed:
        await session.flush()
        work.events.extend(await alerts.release_when_recovered(session, work.now))
    elif targets:
        work.status = "stale"
    else:
        work.status = "recorded"  # paid without a case: remembered for late failures


async def _canceled(work: _Work) -> None:
    signal = work.signal
    if work.subscription is not None:
        work.subscription.status = "canceled"
        work.subscription.ended_at = signal.occurred_at
        targets = await cases.open_cases(work.session, subscription_id=work.subscription.id)
    else:
        targets = await cases.open_cases(work.session, member_id=work.member.id,
                                         provider=signal.provider)
    for case in targets:
        work.case = case
        work.changed(case, cases.apply_loss(case, signal.occurred_at, work.now))
    if not targets:
        work.status = "recorded"


async def _subscription_status(work: _Work) -> None:
    if work.subscription is not None and work.signal.subscription_status:
        work.subscription.status = work.signal.subscription_status
    work.status = "recorded"


async def _card_expiring(work: _Work) -> None:
    open_ones = await cases.open_cases(work.session, member_id=work.member.id)
    for case in open_ones:
        work.changed(case, cases.CARD_EXPIRING)
    # no case yet: the dunning side warns ahead of the renewal (pre-dunning)
    work.events.append(Event("member.card_expiring", {"member_id": work.member.id}))
    work.status = "recorded"


async def _card_updated(work: _Work) -> None:
    work.events.append(Event("member.card_updated", {"member_id": work.member.id}))
    work.status = "recorded"


async def _decline_info(work: _Work) -> None:
    signal = work.signal
    case = None
    if signal.invoice_ref:
        case = work.known.case(signal.provider, signal.invoice_ref)
    if case is None:  # newer API versions no longer name the invoice: the latest open case
        open_ones = await cases.open_cases(work.session, member_id=work.member.id,
                                           provider=signal.provider)
        case = open_ones[0] if open_ones else None
    if case is None:
        work.status = "recorded"
        return
    work.case = case
    change = cases.apply_decline(case, signal.decline_code, signal.error_code,
                                 signal.occurred_at, work.now)
    work.changed(case, change)
    if change is not None:
        await _check_alarm(work, case)


async def _next_attempt(work: _Work) -> None:
    signal = work.signal
    case = work.known.case(signal.provider, signal.invoice_ref)
    if case is None:
        work.status = "recorded"
        return
    work.case = case
    work.changed(case, cases.apply_next_attempt(case, signal.next_attempt_at,
                                                signal.occurred_at, work.now))


async def _dispute(work: _Work) -> None:
    work.events.extend(await flag_dispute(work.session, work.member, work.now))


async def _member_updated(work: _Work) -> None:
    work.status = "recorded"  # take_profile already took the new name and e-mail


_HANDLERS: dict[str, _Handler] = {
    s.FAILED: _failed,
    s.RECOVERED: _recovered,
    s.CANCELED: _canceled,
    s.SUBSCRIPTION_STATUS: _subscription_status,
    s.CARD_EXPIRING: _card_expiring,
    s.CARD_UPDATED: _card_updated,
    s.DECLINE_INFO: _decline_info,
    s.NEXT_ATTEMPT: _next_attempt,
    s.DISPUTE: _dispute,
    s.MEMBER_UPDATED: _member_updated,
}
