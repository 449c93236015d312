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
from datetime import datetime, timedelta

from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue import timeline
from payrescue.billing import alerts, cases, declines, history
from payrescue.billing import signals as s
from payrescue.billing.history import customer_ref, facts_of
from payrescue.billing.known import PROVIDER_ID, Known, by_subscription
from payrescue.billing.members import (
    flag_dispute,
    resolve_member,
    take_profile,
    upsert_subscription,
)
from payrescue.config import Settings
from payrescue.db.models import Member, Message, PaymentEvent, RecoveryCase, Subscription
from payrescue.events import Event
from payrescue.i18n import normalise

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
    lines: list[Message] = field(default_factory=list)  # its entries on members' timelines

    def changed(self, case: RecoveryCase, change: str | None) -> None:
        if change is not None:
            self.changes.append((case, change))

    def outcome(self) -> Outcome:
        """After the flush, when every new row has its id."""
        changed = [Event("case.changed", {"case_id": case.id, "change": change})
                   for case, change in self.changes]
        shown = [timeline.created_event(line) for line in self.lines]  # the console, live
        return Outcome(self.status, self.case.id if self.case else None,
                       self.member.id if self.member else None, changed + shown + self.events)


async def ingest_batch(sessionmaker: async_sessionmaker[AsyncSession], signals: list[s.Signal],
                       settings: Settings, now: datetime) -> list[Outcome]:
    """Store and act on events that concern different members, subscriptions and invoices."""
    async with sessionmaker() as session, session.begin():
        works = [_Work(session, signal, settings, now) for signal in signals]
        for work in works:
            _name_subscription_attempt(work.signal)
        await _store_raw(session, works, now)
        fresh = [w for w in works if w.row_id is not None]
        acting = [w for w in fresh if w.signal.kind != s.IGNORED]
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
        adopted = [subject for work in acting if work.member is not None
                   for subject in await _adopt(work)]
        for work in fresh:
            await _act(work)
        await _replay_touched(session, known, acting, adopted, now)
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
            work.lines.append(timeline.case_event(
                work.session, case.member_id, case.id, timeline.CASE_PREFIX + change, work.now,
                data={"amount_minor": case.amount_minor, "currency": case.currency}))


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
        work.raw_ref = signal.invoice_ref
        key = (signal.provider, signal.event_id)
        if key in first:
            work.status = "duplicate"
            continue
        first[key] = work
        rows.append({
            "provider": signal.provider, "event_id": signal.event_id,
            "event_type": signal.event_type[:100], "occurred_at": signal.occurred_at,
            "received_at": now, "payload": signal.payload, "amount_minor": signal.amount_minor,
            "currency": signal.currency, "invoice_ref": work.raw_ref, "kind": signal.kind,
            "subscription_ref": signal.subscription_ref, "customer_ref": customer_ref(signal),
            "facts": facts_of(signal)})
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
# events that carry enough to create a member not known yet: a failed renewal, and a card
# about to expire (the warning comes before any failure)
CREATING_KINDS = frozenset({s.FAILED, s.CARD_EXPIRING})


async def _resolve_member(work: _Work) -> None:
    signal, known = work.signal, work.known
    work.member = resolve_member(work.session, known, signal, work.now,
                                 create=signal.kind in CREATING_KINDS)
    sub = known.subscription(signal)
    if work.member is None and sub is not None:  # a known subscription names its member
        work.member = await work.session.get(Member, sub.member_id)
    if work.member is not None and signal.kind == s.MEMBER_UPDATED:
        await take_profile(work.session, known, work.member, signal.member)
    if work.member is not None and work.member.language is None:
        # the provider's word on their language (Stripe's preferred_locales, the billing
        # country); a language the member chose is never overwritten
        work.member.language = normalise(signal.member.language)


async def _adopt(work: _Work) -> list[tuple[str, str | None, str | None]]:
    """Events parked for this member before they were known join them now."""
    member = work.member
    ids = {provider: getattr(member, column.key) for provider, column in PROVIDER_ID.items()}
    return await history.adopt(work.session, member, ids)


async def apply_parked(session: AsyncSession, member: Member, now: datetime) -> None:
    """A member who became known outside a webhook (an import): the events parked for their
    ids join them, and the subscriptions those name are replayed."""
    ids = {provider: getattr(member, column.key) for provider, column in PROVIDER_ID.items()}
    subjects = await history.adopt(session, member, ids)
    await _replay_touched(session, Known(), [], subjects, now)


async def _act(work: _Work) -> None:
    if work.signal.kind == s.IGNORED:
        work.status = "ignored"
    elif work.signal.kind == s.NOTICE:
        work.status = "recorded"  # kept, nothing to do (see docs/billing.md)
    elif work.member is None:
        # kept for when the member becomes known (a later event, an import)
        work.status = history.PARKED if customer_ref(work.signal) else "unknown_member"
    else:
        await _HANDLERS[work.signal.kind](work)


async def _in_history(work: _Work) -> None:
    """Failures, payments, ends and status changes: decided by the replay (`history`)."""
    signal = work.signal
    if signal.kind == s.FAILED and (
            not signal.invoice_ref or signal.amount_minor is None or not signal.currency):
        raise s.BadEvent("a failed payment needs an invoice, an amount and a currency")
    if signal.kind == s.FAILED and not (signal.decline_code or signal.error_code):
        await _pair_with_waiting_decline(work)


# a decline code that names no invoice (basil PaymentIntents, Charges) belongs to the
# failure of the same customer nearest in time (the same amount first): Stripe sends both
# within seconds, in either order
_PAIRING_WINDOW = timedelta(hours=1)


def _nearest(rows: list[PaymentEvent], signal: s.Signal) -> PaymentEvent | None:
    def distance(row: PaymentEvent) -> tuple[bool, timedelta, int]:
        other = row.amount_minor is not None and signal.amount_minor is not None \
            and row.amount_minor != signal.amount_minor
        return other, abs(row.occurred_at - signal.occurred_at), row.id

    return min((r for r in rows if r.occurred_at is not None), key=distance, default=None)


def _near(signal: s.Signal, kind: str) -> Select[tuple[PaymentEvent]]:
    return select(PaymentEvent).where(
        PaymentEvent.provider == signal.provider, PaymentEvent.kind == kind,
        PaymentEvent.customer_ref == customer_ref(signal),
        PaymentEvent.occurred_at >= signal.occurred_at - _PAIRING_WINDOW,
        PaymentEvent.occurred_at <= signal.occurred_at + _PAIRING_WINDOW)


async def _pair_with_waiting_decline(work: _Work) -> None:
    """The decline code came first, naming no invoice: it now joins this failure's invoice,
    and the replay gives the case its category."""
    signal = work.signal
    if customer_ref(signal) is None:
        return
    waiting = list(await work.session.scalars(_near(signal, s.DECLINE_INFO).where(
        PaymentEvent.invoice_ref.is_(None), PaymentEvent.subscription_ref.is_(None))))
    row = _nearest(waiting, signal)
    if row is not None:  # through the ORM: the replay reads this very object
        row.invoice_ref = signal.invoice_ref
        row.facts = dict(row.facts or {}, invoice_ref=signal.invoice_ref)


async def _decline_info(work: _Work) -> None:
    signal = work.signal
    if signal.invoice_ref or signal.subscription_ref:
        return  # replayed with its invoice
    # newer API versions no longer name the invoice: the failure it belongs to, if stored
    # already; else that failure takes this code when it comes (`_pair_with_waiting_decline`)
    failure = _nearest(list(await work.session.scalars(_near(signal, s.FAILED))), signal) \
        if customer_ref(signal) else None
    if failure is None:
        work.status = "recorded"
        return
    signal.invoice_ref = work.raw_ref = failure.invoice_ref
    await work.session.execute(update(_EVENTS).where(_EVENTS.c.id == work.row_id).values(
        invoice_ref=signal.invoice_ref, facts=facts_of(signal)))


async def _replay_touched(session: AsyncSession, known: Known, works: list[_Work],
                          adopted: list[tuple[str, str | None, str | None]],
                          now: datetime) -> None:
    """Replay every subscription (or lone invoice) the batch touched, once each."""
    subjects: dict[tuple[str, str | None, str | None], list[_Work]] = {}
    for work in works:
        signal = work.signal
        if work.member is not None and signal.kind in history.HISTORY_KINDS and (
                signal.subscription_ref or signal.invoice_ref):
            subjects.setdefault((signal.provider, signal.subscription_ref,
                                 None if signal.subscription_ref else signal.invoice_ref),
                                []).append(work)
    for subject in adopted:
        subjects.setdefault(subject, [])
    done: set[tuple[str, str]] = set()
    for (provider, sub_ref, invoice_ref), subject_works in subjects.items():
        sub_ref, rows = await history.history(session, provider, sub_ref, invoice_ref)
        key = (provider, sub_ref or f"invoice:{invoice_ref}")
        if key in done:
            continue
        done.add(key)
        await _replay(session, known, provider, sub_ref, rows, subject_works, now)


async def _replay(session: AsyncSession, known: Known, provider: str, sub_ref: str | None,
                  rows: list[PaymentEvent], works: list[_Work], now: datetime) -> None:
    member = works[0].member if works else None
    sub = known.subscriptions.get((provider, sub_ref)) if sub_ref else None
    if sub_ref and sub is None:
        sub = await session.scalar(select(Subscription).where(
            Subscription.provider == provider, Subscription.external_id == sub_ref))
    if sub is not None:
        member = await session.get(Member, sub.member_id)
    elif member is None:
        member = await _owner(session, rows)
        if member is None:
            return
    if sub_ref and sub is None:  # parked events of a subscription nobody had seen
        sub = Subscription(provider=provider, external_id=sub_ref, member_id=member.id,
                           status="active", created_at=now)
        session.add(sub)
        known.add_subscription(sub)
        await session.flush()
    result = await history.rederive(session, provider, member, sub, rows, now)
    for work in works:
        event_id = work.signal.event_id
        work.case = result.case_of.get(event_id)
        work.status = ("processed" if event_id in result.changed_events else
                       "stale" if work.case is not None else "recorded")
    if works:
        for case, change in result.changes:
            works[0].changed(case, change)
    for work in works:
        if work.case is not None and work.status == "processed" and work.signal.kind in (
                s.FAILED, s.DECLINE_INFO):
            await _check_alarm(work, work.case)
    if result.recovered:
        await session.flush()
        (works[0].events if works else []).extend(
            await alerts.release_when_recovered(session, now))


async def _owner(session: AsyncSession, rows: list[PaymentEvent]) -> Member | None:
    member_id = next((r.member_id for r in rows if r.member_id is not None), None)
    return await session.get(Member, member_id) if member_id is not None else None


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


async def _dispute(work: _Work) -> None:
    work.events.extend(await flag_dispute(work.session, work.member, work.now))


async def _member_updated(work: _Work) -> None:
    work.status = "recorded"  # take_profile already took the new name and e-mail


_HANDLERS: dict[str, _Handler] = {
    s.FAILED: _in_history,
    s.RECOVERED: _in_history,
    s.CANCELED: _in_history,
    s.GAVE_UP: _in_history,
    s.REFUNDED: _in_history,
    s.SUBSCRIPTION_STATUS: _in_history,
    s.DECLINE_INFO: _decline_info,
    s.NEXT_ATTEMPT: _in_history,
    s.CARD_EXPIRING: _card_expiring,
    s.CARD_UPDATED: _card_updated,
    s.DISPUTE: _dispute,
    s.MEMBER_UPDATED: _member_updated,
}
