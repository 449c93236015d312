"""Payment truth: the same events in any order give the same cases, figures and messages.

Providers deliver at least once and in no particular order. A property test builds random but
valid histories per subscription for Stripe (both invoice shapes), MemberPress and the generic
API, delivers them in provider-time order and then shuffled with repeats, several at a time,
and compares what a user sees: cases, subscriptions, report figures and the messages members
got. Regression tests below pin each way the arrival order used to leak into the state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue import dunning
from payrescue.billing import generic, memberpress, stripe_events
from payrescue.billing import signals as s
from payrescue.billing.batches import Ingestor
from payrescue.billing.importer import import_members
from payrescue.cli import main
from payrescue.config import Settings
from payrescue.db.models import (
    Base,
    Member,
    Outbox,
    RecoveryCase,
    Subscription,
    TelegramLink,
)
from payrescue.reports import Period, compute
from tests.billing.conftest import (
    invoice,
    mp_member,
    mp_transaction,
    post_stripe,
    stripe_event,
    subscription,
)
from tests.billing.stripe_standin import payment_intent
from tests.conftest import TEST_SECRET

# no shrinking: each example is two full deliveries through the database, so shrinking a
# failure takes minutes; the failing example is printed as drawn
PROPERTY = settings(max_examples=40, deadline=None,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
BASIL, ACACIA = "2025-03-31.basil", "2024-06-20"
CODES = ["insufficient_funds", "expired_card", "do_not_honor"]


@pytest.fixture
async def ingestor(sessionmaker, billing_settings, clock, bus) -> AsyncIterator[Ingestor]:  # noqa: ANN001
    writer = Ingestor(sessionmaker, billing_settings, clock, bus, timeout=15)
    writer.start()
    yield writer
    await writer.close()


# --- histories ------------------------------------------------------------------------------


@dataclass
class Delivery:
    """One event as the provider sends it; parsed afresh at each delivery."""

    provider: str
    body: dict[str, Any]

    def signal(self, config: Settings, now: datetime) -> s.Signal:
        raw = json.dumps(self.body).encode()
        if self.provider == "stripe":
            return stripe_events.parse(raw)
        if self.provider == "memberpress":
            return memberpress.parse(raw, config, now)
        return generic.parse(raw)


@dataclass
class History:
    email: str
    linked: bool
    events: list[Delivery]  # in provider-time order


def _gap(draw, low: int = 1, high: int = 72) -> timedelta:  # noqa: ANN001
    return timedelta(hours=draw(st.integers(low, high)))


@st.composite
def stripe_history(draw, n: int, start: datetime) -> History:  # noqa: ANN001
    version = draw(st.sampled_from([BASIL, ACACIA]))
    basil = version == BASIL
    cus, sub, email = f"cus_{n}", f"sub_{n}", f"m{n}@example.org"
    t, events = start + _gap(draw, 0, 48), []

    def add(kind: str, obj: dict, at: datetime) -> None:
        events.append(Delivery("stripe", stripe_event(kind, obj, at, api_version=version)))

    invoices = draw(st.integers(1, 2))
    for k in range(invoices):
        ref = f"in_{n}_{k}"
        for attempt in range(1, draw(st.integers(1, 3)) + 1):
            intent = f"pi_{n}_{k}_{attempt}"
            shape = dict(customer=cus, email=email, subscription=sub, attempt_count=attempt,
                         basil=basil, payment_intent=None if basil else intent,
                         next_attempt=t + timedelta(days=3))
            if not basil and draw(st.booleans()):  # the decline code on its own, a second before
                detail = payment_intent(intent, decline_code=draw(st.sampled_from(CODES)))
                detail.update(customer=cus, invoice=ref)
                add("payment_intent.payment_failed", detail, t - timedelta(seconds=1))
            action = attempt == 1 and draw(st.booleans())
            add("invoice.payment_action_required" if action else "invoice.payment_failed",
                invoice(ref, **shape), t)
            if attempt == 1 and draw(st.booleans()):
                add("customer.subscription.updated",
                    subscription(sub, status="past_due", customer=cus), t)
            t += _gap(draw)
        end = draw(st.sampled_from(["paid", "open", "paid_twice", "uncollectible"] +
                                   (["deleted", "unpaid"] if k == invoices - 1 else [])))
        if end in ("paid", "paid_twice"):
            paid = invoice(ref, customer=cus, email=email, subscription=sub, basil=basil,
                           paid=True)
            add("invoice.paid", paid, t)
            if end == "paid_twice":  # Stripe sends both for one payment
                add("invoice.payment_succeeded", paid, t)
            add("customer.subscription.updated", subscription(sub, status="active",
                                                               customer=cus), t)
        elif end == "uncollectible":  # Stripe gives up; sometimes paid after all
            add("invoice.marked_uncollectible", invoice(ref, customer=cus, email=email,
                                                        subscription=sub, basil=basil,
                                                        status="uncollectible"), t)
            if draw(st.booleans()):
                add("invoice.paid", invoice(ref, customer=cus, email=email, subscription=sub,
                                            basil=basil, paid=True), t + _gap(draw))
        elif end == "unpaid":
            add("customer.subscription.updated", subscription(sub, status="unpaid",
                                                               customer=cus), t)
        elif end == "deleted":
            add("customer.subscription.deleted",
                subscription(sub, status="canceled", customer=cus, ended_at=t), t)
        t += _gap(draw)
    if draw(st.booleans()):
        add("customer.source.expiring", {"id": f"card_{n}", "object": "card",
                                         "customer": cus, "exp_month": 2, "exp_year": 2026},
            start + _gap(draw, 0, 400))
    events.sort(key=_stripe_time)
    return History(email, draw(st.booleans()), events)


def _stripe_time(delivery: Delivery) -> int:
    return delivery.body["created"]


def _mp_subscription(event: str, sub_id: int, member: dict) -> dict[str, Any]:
    return {"event": event, "type": "subscription", "data": {
        "id": sub_id, "subscr_id": f"sub_{sub_id}", "gateway": "stripe_gateway",
        "price": "29.00", "total": "29.00", "status": "cancelled", "period": "1",
        "period_type": "months", "created_at": "2025-04-18 16:47:14", "member": member,
        "membership": {"id": 15, "title": "Gold", "price": "29.00", "period": "1",
                       "period_type": "months"}}}


@st.composite
def memberpress_history(draw, n: int, start: datetime) -> History:  # noqa: ANN001
    email = f"m{n}@example.org"
    member, sub_id = mp_member(member_id=100 + n, email=email), 700 + n
    t, events, txn = start + _gap(draw, 0, 48), [], 1000 * n
    cycles = draw(st.integers(1, 2))
    for cycle in range(cycles):
        for _ in range(draw(st.integers(1, 3))):
            txn += 1
            failed = mp_transaction("recurring-transaction-failed", txn, created=t,
                                    sub_id=sub_id, member=member)
            events.append(Delivery("memberpress", failed))
            if draw(st.booleans()):  # MemberPress sends both names for a renewal
                failed = dict(failed, event="transaction-failed")
                events.append(Delivery("memberpress", failed))
        if cycle == 0 and draw(st.booleans()):  # a failure at sign-up: no case, any order
            txn += 1
            events.insert(0, Delivery("memberpress", mp_transaction(
                "transaction-failed", txn, created=start, sub_id=sub_id, member=member,
                renewal=False)))
            t += _gap(draw)
        end = draw(st.sampled_from(["paid", "open", "refunded"] +
                                   (["stopped"] if cycle == cycles - 1 else [])))
        if end in ("paid", "refunded"):
            txn += 1
            paid = mp_transaction("recurring-transaction-completed", txn, created=t,
                                  status="complete", sub_id=sub_id, member=member)
            events.append(Delivery("memberpress", paid))
            if end == "refunded":  # no time of its own: its arrival, after the payment
                events.append(Delivery("memberpress", dict(paid, event="transaction-refunded")))
        elif end == "stopped":  # no event time: its arrival (after every transaction) counts
            events.append(Delivery("memberpress", _mp_subscription(
                "subscription-stopped", sub_id, member)))
        t += _gap(draw)
    return History(email, draw(st.booleans()), events)


@st.composite
def generic_history(draw, n: int, start: datetime) -> History:  # noqa: ANN001
    email = f"m{n}@example.org"
    by_invoice = draw(st.booleans())
    t, events, ids = start + _gap(draw, 0, 48), [], iter(range(10**6))
    base = {"member": {"email": email, "id": f"g-{n}"},
            "subscription": {"id": f"gs-{n}", "plan": "Gold"}}

    def add(kind: str, at: datetime, **fields: Any) -> None:
        events.append(Delivery("generic", {
            "id": f"ev-{n}-{next(ids)}", "type": kind, "occurred_at": at.isoformat(),
            **base, **fields}))

    cycles = draw(st.integers(1, 2))
    for cycle in range(cycles):
        ref = {"invoice": f"gi-{n}-{cycle}"} if by_invoice else {}
        for attempt in range(1, draw(st.integers(1, 3)) + 1):
            add("failed", t, amount=2900, currency="EUR", attempt=attempt,
                decline_code=draw(st.sampled_from(CODES)), **ref)
            t += _gap(draw)
        end = draw(st.sampled_from(["recovered", "open"] +
                                   (["canceled"] if cycle == cycles - 1 else [])))
        if end != "open":
            add(end, t, **ref)
        t += _gap(draw)
    if draw(st.booleans()):
        add("card_expiring", start + _gap(draw, 0, 400))
    events.sort(key=lambda d: d.body["occurred_at"])
    return History(email, draw(st.booleans()), events)


BUILDERS = {"stripe": stripe_history, "memberpress": memberpress_history,
            "generic": generic_history}


@st.composite
def scenarios(draw, start: datetime) -> list[History]:  # noqa: ANN001
    providers = draw(st.lists(st.sampled_from(sorted(BUILDERS)), min_size=1, max_size=3))
    return [draw(BUILDERS[p](n, start)) for n, p in enumerate(providers, start=1)]


# --- delivering and looking ---------------------------------------------------------------


async def _wipe(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker() as session, session.begin():
        for table in reversed(Base.metadata.sorted_tables):
            await session.execute(delete(table))


async def _prepare(sessionmaker: async_sessionmaker[AsyncSession], histories: list[History],
                   now: datetime) -> None:
    """Members who linked Telegram before anything happened (the others are created by
    their first failure, or never)."""
    async with sessionmaker() as session, session.begin():
        for n, history in enumerate(histories, start=1):
            if history.linked:
                member = Member(email=history.email, name=f"Member {n}", created_at=now)
                session.add(member)
                await session.flush()
                session.add(TelegramLink(member_id=member.id, chat_id=5000 + n,
                                         telegram_user_id=5000 + n, linked_at=now))


async def _deliver(ingestor: Ingestor, config: Settings, now: datetime,
                   deliveries: list[Delivery], at_once: int) -> None:
    for i in range(0, len(deliveries), at_once):
        chunk = deliveries[i:i + at_once]
        outcomes = await asyncio.gather(*(ingestor.submit(d.signal(config, now))
                                          for d in chunk))
        assert all(o.status != "unknown_member" for o in outcomes)


async def _send_everything(sessionmaker: async_sessionmaker[AsyncSession], config: Settings,
                           now: datetime) -> None:
    """The scheduler and the notifier, twice: queue what the cases call for, re-check each
    row just before "sending" it, then let the closing words follow."""
    for _ in range(2):
        async with sessionmaker() as session:
            await dunning.reconcile(session, config, now)
        async with sessionmaker() as session, session.begin():
            queued = await session.scalars(select(Outbox).where(Outbox.status == "queued")
                                           .order_by(Outbox.id))
            for row in queued:
                if await dunning.still_wanted(session, row):
                    row.status, row.sent_at, row.telegram_message_id = "sent", now, row.id
                else:
                    row.status = "cancelled"


def _in_order(rows: Any) -> list[tuple[Any, ...]]:
    """Rows sorted whatever their values: None sorts before any value of a column."""
    return sorted(rows, key=lambda row: tuple((value is not None, str(value)) for value in row))


async def _state(sessionmaker: async_sessionmaker[AsyncSession], config: Settings,
                 now: datetime) -> dict[str, Any]:
    async with sessionmaker() as session:
        emails = {m.id: m.email for m in await session.scalars(select(Member))}
        invoices = {c.id: c.invoice_ref for c in await session.scalars(select(RecoveryCase))}
        case_rows = _in_order(
            (emails[c.member_id], c.provider, c.status, c.amount_minor, c.currency,
             c.attempt_count, c.decline_code, c.decline_category, c.action_required,
             c.opened_at, c.last_failure_at, c.recovered_at, c.recovered_amount_minor,
             c.lost_at, c.attribution, c.next_attempt_at)
            for c in await session.scalars(select(RecoveryCase)))
        subscriptions = _in_order(
            (emails[x.member_id], x.provider, x.external_id, x.status, x.ended_at,
             x.amount_minor, x.currency, x.plan_name, x.interval, x.interval_count)
            for x in await session.scalars(select(Subscription)))
        sent = _in_order(
            (emails.get(row.member_id), row.kind, row.method, row.payload.get("text"),
             invoices.get(row.case_id))
            for row in await session.scalars(select(Outbox).where(Outbox.status == "sent")))
        figures = await compute(session, Period(date(2025, 11, 1), date(2026, 2, 1),
                                                ZoneInfo("UTC")), config.hours, "en")
    return {"cases": case_rows, "subscriptions": subscriptions, "sent": sent,
            "figures": (figures.opened, figures.at_risk, figures.cohort_recovered,
                        figures.recovered, figures.recovered_amount, figures.lost,
                        figures.lost_amount, figures.attribution, figures.churned,
                        figures.mrr_saved, [(g.key, g.opened, g.recovered)
                                            for g in figures.by_category])}


async def _run(sessionmaker, ingestor, config, clock, histories, deliveries,  # noqa: ANN001
               at_once: int) -> dict[str, Any]:
    await _wipe(sessionmaker)
    await _prepare(sessionmaker, histories, clock.now())
    await _deliver(ingestor, config, clock.now(), deliveries, at_once)
    await _send_everything(sessionmaker, config, clock.now())
    return await _state(sessionmaker, config, clock.now())


START = datetime(2025, 12, 10, 9, 0, tzinfo=ZoneInfo("UTC"))


@PROPERTY
@given(histories=scenarios(START), data=st.data())
async def test_any_order_with_repeats_gives_the_state_of_the_in_order_delivery(
        sessionmaker, ingestor, billing_settings, clock, histories, data):  # noqa: ANN001
    in_order = [d for h in histories for d in h.events]
    expected = await _run(sessionmaker, ingestor, billing_settings, clock, histories,
                          in_order, at_once=1)

    shuffled = data.draw(st.permutations(in_order), label="arrival")
    repeats = data.draw(st.lists(st.sampled_from(in_order), max_size=4), label="repeats")
    arrival = list(shuffled)
    for repeat in repeats:  # a delivery again, somewhere later
        arrival.insert(data.draw(st.integers(0, len(arrival))), repeat)
    at_once = data.draw(st.integers(1, 4), label="at once")
    actual = await _run(sessionmaker, ingestor, billing_settings, clock, histories,
                        arrival, at_once=at_once)

    assert actual == expected
    ended = {x[0] for x in expected["subscriptions"] if x[3] == "canceled"}
    reminded = {row[0] for row in expected["sent"] if row[1] == "reminder"}
    assert not (ended & reminded), "a reminder about a subscription that has ended"


# --- each way the arrival order used to leak into the state ----------------------------------


async def test_a_payment_before_its_failures_still_counts_in_every_figure(
        client, session, clock, billing_settings):  # noqa: ANN001
    t0 = clock.now() - timedelta(days=3)
    paid = invoice("in_P", customer="cus_P", email="p@example.org", subscription="sub_P",
                   paid=True)
    for event in (stripe_event("invoice.paid", paid, t0 + timedelta(days=2)),
                  stripe_event("invoice.payment_failed", invoice(
                      "in_P", customer="cus_P", email="p@example.org", subscription="sub_P",
                      attempt_count=2), t0 + timedelta(days=1)),
                  stripe_event("invoice.payment_failed", invoice(
                      "in_P", customer="cus_P", email="p@example.org", subscription="sub_P"),
                      t0)):
        response = await post_stripe(client, event)
        assert response.status == 200
    figures = await compute(session, Period.last_days(7, clock.now(), ZoneInfo("UTC")),
                            billing_settings.hours, "en")
    assert (figures.opened, figures.recovered, figures.cohort_recovered) == (1, 1, 1)
    assert figures.recovered_amount == {"EUR": 2900}
    assert figures.attribution == {"no_contact": 1, "bot": 0, "agent": 0}
    case = await session.scalar(select(RecoveryCase))
    assert (case.attempt_count, case.opened_at) == (2, t0)


@pytest.mark.parametrize("arrival", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
async def test_the_subscription_status_is_that_of_its_latest_event(
        client, session, clock, arrival):  # noqa: ANN001
    t0 = clock.now() - timedelta(days=3)
    shape = dict(customer="cus_S", email="s@example.org", subscription="sub_S")
    events = [
        stripe_event("invoice.payment_failed", invoice("in_S", **shape), t0),
        stripe_event("customer.subscription.updated",
                     subscription("sub_S", status="past_due", customer="cus_S"),
                     t0 + timedelta(minutes=1)),
        stripe_event("invoice.paid", invoice("in_S", paid=True, **shape), t0 + timedelta(days=1)),
    ]
    for index in arrival:
        await post_stripe(client, events[index])
    sub = await session.scalar(select(Subscription))
    case = await session.scalar(select(RecoveryCase))
    assert (sub.status, case.status) == ("active", "recovered")


async def test_events_parked_for_an_unknown_customer_apply_when_an_import_names_them(
        client, session, clock, sessionmaker, tmp_path):  # noqa: ANN001
    t0 = clock.now() - timedelta(days=2)
    shape = dict(customer="cus_I", email="", subscription="sub_I")  # no e-mail to create from
    failed = await post_stripe(client, stripe_event("invoice.payment_failed",
                                                    invoice("in_I", **shape), t0))
    assert (await failed.json())["status"] == "parked"
    assert await session.scalar(select(RecoveryCase)) is None

    sheet = tmp_path / "members.csv"
    sheet.write_text("email,name,stripe_customer_id\nida@example.org,Ida Berg,cus_I\n")
    summary = await import_members(sessionmaker, sheet, clock.now())
    assert summary.created == 1
    case = await session.scalar(select(RecoveryCase))
    member = await session.get(Member, case.member_id)
    assert (case.status, case.opened_at, member.email) == ("open", t0, "ida@example.org")
    sub = await session.scalar(select(Subscription))
    assert (sub.external_id, sub.status) == ("sub_I", "past_due")


async def test_payrescue_cases_shows_each_case_with_its_events_in_provider_time(
        client, clock, database_url, monkeypatch, tmp_path, capsys):  # noqa: ANN001
    t0 = clock.now() - timedelta(days=5)
    shape = dict(customer="cus_C", email="c@example.org", subscription="sub_C")
    events = [
        stripe_event("invoice.payment_failed", invoice("in_C", **shape), t0),
        stripe_event("invoice.payment_failed", invoice("in_C", attempt_count=2, **shape),
                     t0 + timedelta(days=1)),
        stripe_event("customer.subscription.deleted", subscription(
            "sub_C", status="canceled", customer="cus_C", ended_at=t0 + timedelta(days=2)),
            t0 + timedelta(days=2)),
    ]
    monkeypatch.setenv("PAYRESCUE_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYRESCUE_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("PAYRESCUE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PAYRESCUE_CONFIG", raising=False)
    assert await asyncio.to_thread(main, ["cases"]) == 0  # nothing yet: said, not blank
    assert "No subscriptions or cases yet" in capsys.readouterr().out
    for event in reversed(events):  # the end first, as a late retry makes it happen
        await post_stripe(client, event)
    status = await asyncio.to_thread(main, ["cases", "--member", "C@example.org",
                                            "--format", "json"])
    assert status == 0
    [member] = json.loads(capsys.readouterr().out)
    [sub] = member["subscriptions"]
    # the plan's name from the subscription's price (its latest event), not an invoice line
    assert (sub["subscription"], sub["status"], sub["plan"]) == ("sub_C", "canceled", "Gold")
    [case] = sub["cases"]
    assert (case["status"], case["attempts"]) == ("lost", 2)
    assert [e["type"] for e in case["events"]] == [
        "invoice.payment_failed", "invoice.payment_failed", "customer.subscription.deleted"]
    assert [e["occurred_at"] for e in case["events"]] == [
        (t0 + timedelta(days=n)).isoformat() for n in range(3)]

    assert await asyncio.to_thread(main, ["cases"]) == 0
    table = capsys.readouterr().out
    assert "stripe sub_C  Gold  canceled" in table
    assert "lost, 2900 EUR, 2 attempt(s)" in table
    assert await asyncio.to_thread(main, ["cases", "--member", "nobody@example.org"]) == 1
