"""Store the raw event, drop repeats, act on it: exactly once, in one transaction.

The raw insert comes first and is the dedupe: `INSERT … ON CONFLICT (provider, event_id) DO
NOTHING RETURNING id` returns no row for a delivery we already have. On PostgreSQL a second
delivery racing the first waits on the unique index until the first commits, then finds the
row; on SQLite the insert takes the database's write lock, so writers queue. The effects
(member, subscription, case, alarm) are written in the same transaction, so a crash or a
lost database leaves either everything or nothing, and the provider's retry starts over.
Bus events are published only after the commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue.billing import alerts, cases, declines, stripe_events
from payrescue.billing import signals as s
from payrescue.billing.cases import Failure
from payrescue.billing.members import flag_dispute, resolve_member, upsert_subscription
from payrescue.config import Settings
from payrescue.db.models import Member, PaymentEvent, RecoveryCase, Subscription, UpdateLink
from payrescue.events import Bus, Event

log = logging.getLogger(__name__)

# the raw log is written with Core statements: no ORM object is needed, and it is the
# hottest path of a webhook
_EVENTS = PaymentEvent.__table__

# providers whose failed attempts are separate transactions of one renewal: their case is
# found through the subscription, and a success is remembered per subscription
BY_SUBSCRIPTION = "sub:"
_ATTEMPTS = 3  # a race on creating the same member/case is retried from the start


@dataclass
class Outcome:
    status: str  # processed | duplicate | ignored | stale | unknown_member | recorded
    case_id: int | None = None
    member_id: int | None = None
    events: list[Event] = field(default_factory=list)


@dataclass
class _Work:
    session: AsyncSession
    signal: s.Signal
    settings: Settings
    now: datetime
    outcome: Outcome
    member: Member | None = None
    subscription: Subscription | None = None

    def changed(self, case: RecoveryCase, change: str | None) -> None:
        if change is not None:
            self.outcome.events.append(
                Event("case.changed", {"case_id": case.id, "change": change}))


async def ingest(sessionmaker: async_sessionmaker[AsyncSession], signal: s.Signal,
                 settings: Settings, now: datetime, bus: Bus) -> Outcome:
    """Store and act on one event; publish its bus events after the commit."""
    s.check_sizes(signal)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            outcome = await _ingest_once(sessionmaker, signal, settings, now)
            break
        except IntegrityError:
            if attempt == _ATTEMPTS:
                raise
            log.info("concurrent write, retrying event", extra={"provider": signal.provider})
    for event in outcome.events:
        await bus.publish(event)
    return outcome


async def already_stored(session: AsyncSession, provider: str, event_id: str) -> bool:
    """A cheap look before slow work (a provider look-up) for an event we already have."""
    found = await session.scalar(select(PaymentEvent.id).where(
        PaymentEvent.provider == provider, PaymentEvent.event_id == event_id))
    return found is not None


async def _ingest_once(sessionmaker: async_sessionmaker[AsyncSession], signal: s.Signal,
                       settings: Settings, now: datetime) -> Outcome:
    async with sessionmaker() as session, session.begin():
        row_id = await _store_raw(session, signal, now)
        if row_id is None:
            return Outcome("duplicate")
        work = _Work(session, signal, settings, now, Outcome("processed"))
        await _act(work)
        await session.execute(update(_EVENTS).where(_EVENTS.c.id == row_id).values(
            outcome=work.outcome.status, member_id=work.outcome.member_id,
            case_id=work.outcome.case_id))
    return work.outcome


async def _store_raw(session: AsyncSession, signal: s.Signal, now: datetime) -> int | None:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    invoice_ref = signal.invoice_ref
    if signal.kind == s.RECOVERED and _by_subscription(signal):
        invoice_ref = BY_SUBSCRIPTION + (signal.subscription_ref or "")
    statement = (
        insert(_EVENTS)
        .values(provider=signal.provider, event_id=signal.event_id,
                event_type=signal.event_type[:100], occurred_at=signal.occurred_at,
                received_at=now, payload=signal.payload, amount_minor=signal.amount_minor,
                currency=signal.currency, invoice_ref=invoice_ref, kind=signal.kind)
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(_EVENTS.c.id)
    )
    return await session.scalar(statement)


def _by_subscription(signal: s.Signal) -> bool:
    return signal.cases_by_subscription and bool(signal.subscription_ref)


_Handler = Callable[[_Work], Awaitable[None]]


async def _act(work: _Work) -> None:
    signal = work.signal
    if signal.kind == s.IGNORED:
        work.outcome.status = "ignored"
        return
    work.member = await resolve_member(work.session, signal, work.now,
                                       create=signal.kind == s.FAILED)
    if work.member is None:
        work.outcome.status = "unknown_member"
        return
    work.outcome.member_id = work.member.id
    if signal.subscription_ref:
        work.subscription = await upsert_subscription(work.session, work.member, signal,
                                                      work.settings, work.now)
    await _HANDLERS[signal.kind](work)


async def _failed(work: _Work) -> None:
    signal, session = work.signal, work.session
    if not signal.invoice_ref and _by_subscription(signal):
        signal.invoice_ref = f"{signal.subscription_ref}@{signal.occurred_at:%Y%m%dT%H%M%S}"
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
        if await cases.paid_since(session, signal.provider, _paid_ref(signal),
                                  signal.occurred_at):
            work.outcome.status = "stale"
            return
        if not (failure.decline_code or failure.error_code) and signal.provider == "stripe":
            failure.decline_code, failure.error_code = await _earlier_decline(work)
        case = cases.new_case(work.member.id, work.subscription.id if work.subscription else None,
                              signal.provider, failure, work.now)
        session.add(case)
        await session.flush()
        change: str | None = cases.OPENED
    else:
        change = cases.apply_failure(case, failure, work.now)
    work.outcome.case_id = case.id
    if change is None:
        work.outcome.status = "stale"
        return
    await session.flush()
    work.changed(case, change)
    await _check_alarm(work, case)


async def _earlier_decline(work: _Work) -> tuple[str | None, str | None]:
    """Stripe sends `payment_intent.payment_failed` at the same moment as the invoice event,
    so it may be stored first (its member or case not known yet): take its code now."""
    payload = await work.session.scalar(
        select(PaymentEvent.payload).where(
            PaymentEvent.provider == work.signal.provider,
            PaymentEvent.invoice_ref == work.signal.invoice_ref,
            PaymentEvent.kind == s.DECLINE_INFO)
        .order_by(PaymentEvent.occurred_at.desc()).limit(1))
    if payload is None:
        return None, None
    earlier = stripe_events.parse(json.dumps(payload).encode())
    return earlier.decline_code, earlier.error_code


async def _case_for_failure(work: _Work) -> RecoveryCase | None:
    signal = work.signal
    case = await cases.find_case(work.session, signal.provider, signal.invoice_ref or "")
    if case is None and _by_subscription(signal) and work.subscription is not None:
        open_ones = await cases.open_cases(work.session, subscription_id=work.subscription.id)
        case = open_ones[0] if open_ones else None
    return case


def _paid_ref(signal: s.Signal) -> str:
    if _by_subscription(signal):
        return BY_SUBSCRIPTION + (signal.subscription_ref or "")
    return signal.invoice_ref or ""


async def _check_alarm(work: _Work, case: RecoveryCase) -> None:
    signal = work.signal
    if declines.is_configuration_error(signal.decline_code, signal.error_code):
        events = await alerts.raise_configuration_alert(
            work.session, work.settings, signal.provider, case,
            signal.error_code or signal.decline_code or "", work.now)
    elif case.decline_category == declines.PROCESSING_ERROR:
        events = await alerts.check_gateway_fault(work.session, work.settings, signal.provider,
                                                  work.now)
    else:
        return
    work.outcome.events.extend(events)


async def _recovered(work: _Work) -> None:
    signal, session = work.signal, work.session
    targets: list[RecoveryCase] = []
    if signal.invoice_ref:
        case = await cases.find_case(session, signal.provider, signal.invoice_ref)
        targets = [case] if case is not None else []
    if not targets and _by_subscription(signal) and work.subscription is not None:
        targets = await cases.open_cases(session, subscription_id=work.subscription.id)
    if work.subscription is not None and work.subscription.status != "canceled":
        work.subscription.status = "active"
    closed = False
    for case in targets:
        attribution = await cases.attribution_for(session, case)
        change = cases.apply_recovery(case, signal.occurred_at, signal.amount_minor,
                                      attribution, work.now)
        work.outcome.case_id = case.id
        if change is not None:
            closed = True
            await session.execute(
                update(UpdateLink).where(UpdateLink.case_id == case.id,
                                         UpdateLink.first_opened_at.is_not(None),
                                         UpdateLink.completed_at.is_(None))
                .values(completed_at=signal.occurred_at))
            work.changed(case, change)
    if closed:
        await session.flush()
        work.outcome.events.extend(await alerts.release_when_recovered(session, work.now))
    elif targets:
        work.outcome.status = "stale"
    else:
        work.outcome.status = "recorded"  # paid without a case: remembered for late failures


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
        work.outcome.case_id = case.id
        work.changed(case, cases.apply_loss(case, signal.occurred_at, work.now))
    if not targets:
        work.outcome.status = "recorded"


async def _subscription_status(work: _Work) -> None:
    if work.subscription is not None and work.signal.subscription_status:
        work.subscription.status = work.signal.subscription_status
    work.outcome.status = "recorded"


async def _card_expiring(work: _Work) -> None:
    open_ones = await cases.open_cases(work.session, member_id=work.member.id)
    for case in open_ones:
        work.changed(case, cases.CARD_EXPIRING)
    # no case yet: the dunning side warns ahead of the renewal (pre-dunning)
    work.outcome.events.append(Event("member.card_expiring", {"member_id": work.member.id}))
    work.outcome.status = "recorded"


async def _card_updated(work: _Work) -> None:
    work.outcome.events.append(Event("member.card_updated", {"member_id": work.member.id}))
    work.outcome.status = "recorded"


async def _decline_info(work: _Work) -> None:
    signal = work.signal
    case = None
    if signal.invoice_ref:
        case = await cases.find_case(work.session, signal.provider, signal.invoice_ref)
    if case is None:  # newer API versions no longer name the invoice: the latest open case
        open_ones = await cases.open_cases(work.session, member_id=work.member.id,
                                           provider=signal.provider)
        case = open_ones[0] if open_ones else None
    if case is None:
        work.outcome.status = "recorded"
        return
    work.outcome.case_id = case.id
    change = cases.apply_decline(case, signal.decline_code, signal.error_code,
                                 signal.occurred_at, work.now)
    work.changed(case, change)
    if change is not None:
        await work.session.flush()
        await _check_alarm(work, case)


async def _next_attempt(work: _Work) -> None:
    signal = work.signal
    case = await cases.find_case(work.session, signal.provider, signal.invoice_ref or "")
    if case is None:
        work.outcome.status = "recorded"
        return
    work.outcome.case_id = case.id
    work.changed(case, cases.apply_next_attempt(case, signal.next_attempt_at,
                                                signal.occurred_at, work.now))


async def _dispute(work: _Work) -> None:
    work.outcome.events.extend(await flag_dispute(work.session, work.member, work.now))


async def _member_updated(work: _Work) -> None:
    work.outcome.status = "recorded"  # resolve_member already took the new name and e-mail


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
