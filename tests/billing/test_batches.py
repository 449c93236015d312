"""Deliveries that arrive together share a transaction (group commit), on both databases,
without changing what each one does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from payrescue.billing import signals as s
from payrescue.billing import stripe_events
from payrescue.billing.batches import Ingestor, _Waiting, keys_of, next_batch
from payrescue.db.models import Member, PaymentEvent, RecoveryCase, Subscription
from tests.billing.conftest import count_rows, invoice, post_stripe, stripe_event


def _signal(event: dict) -> s.Signal:
    return stripe_events.parse(json.dumps(event).encode())


def _failure(n: int, at, **extra) -> dict:  # noqa: ANN001
    return stripe_event("invoice.payment_failed", invoice(
        f"in_{n}", customer=f"cus_{n}", email=f"m{n}@example.org", subscription=f"sub_{n}",
        **extra), at)



@pytest.fixture
async def ingestor(sessionmaker, billing_settings, clock, bus) -> AsyncIterator[Ingestor]:  # noqa: ANN001
    writer = Ingestor(sessionmaker, billing_settings, clock, bus, timeout=15)
    writer.start()
    yield writer
    await writer.close()


async def test_a_burst_of_members_is_stored_in_few_transactions_one_case_each(
        client, session, clock, bus, engine):  # noqa: ANN001
    commits = []

    def count(_connection) -> None:  # noqa: ANN001
        commits.append(1)

    event.listen(engine.sync_engine, "commit", count)
    try:
        async with bus.subscribe() as queue:
            responses = await asyncio.gather(*(
                post_stripe(client, _failure(n, clock.now())) for n in range(30)))
            published = [queue.get_nowait() for _ in range(queue.qsize())]
    finally:
        event.remove(engine.sync_engine, "commit", count)

    answers = [await r.json() for r in responses]
    assert [r.status for r in responses] == [200] * 30
    assert {a["status"] for a in answers} == {"processed"}
    assert len(commits) < 30  # batches formed: several deliveries shared a commit
    for model in (Member, Subscription, RecoveryCase, PaymentEvent):
        assert await count_rows(session, model) == 30
    # each answer names its own case, and the raw row and the bus say the same
    rows = {row.event_id: row for row in await session.scalars(select(PaymentEvent))}
    case_ids = {a["case_id"] for a in answers}
    assert len(case_ids) == 30
    assert {row.case_id for row in rows.values()} == case_ids
    assert {row.outcome for row in rows.values()} == {"processed"}
    opened = [e.data["case_id"] for e in published if e.topic == "case.changed"]
    assert sorted(opened) == sorted(case_ids)
    cases = {c.invoice_ref: c for c in await session.scalars(select(RecoveryCase))}
    members = {m.id: m for m in await session.scalars(select(Member))}
    assert all(members[c.member_id].email == f"m{c.invoice_ref[3:]}@example.org"
               for c in cases.values())


async def test_events_about_one_invoice_in_a_burst_apply_in_provider_time(
        ingestor, session, clock):  # noqa: ANN001
    t0 = clock.now()
    paid = stripe_event("invoice.paid", invoice("in_1", customer="cus_1", email="m1@example.org",
                                                subscription="sub_1", paid=True),
                        t0 + timedelta(days=1))
    failed = _failure(1, t0)
    # older than the success: no reopening, but the case began an hour earlier
    late_attempt = _failure(1, t0 - timedelta(hours=1))
    arriving = [failed, _failure(2, t0), paid, _failure(3, t0), failed, late_attempt]
    tasks = [asyncio.create_task(ingestor.submit(_signal(e))) for e in arriving]
    outcomes = await asyncio.gather(*tasks)

    assert [o.status for o in outcomes] == [
        "processed", "processed", "processed", "processed", "duplicate", "processed"]
    status = dict((await session.execute(
        select(RecoveryCase.invoice_ref, RecoveryCase.status))).all())
    assert status == {"in_1": "recovered", "in_2": "open", "in_3": "open"}
    first = await session.scalar(select(RecoveryCase).where(RecoveryCase.invoice_ref == "in_1"))
    assert first.opened_at == t0 - timedelta(hours=1)


async def test_one_bad_event_in_a_burst_costs_the_others_nothing(ingestor, session, clock):  # noqa: ANN001
    bad = _signal(_failure(2, clock.now()))
    bad.amount_minor = None  # passes the parser, fails when acted on
    tasks = [asyncio.create_task(ingestor.submit(signal))
             for signal in (_signal(_failure(1, clock.now())), bad,
                            _signal(_failure(3, clock.now())))]
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [r.status for r in (results[0], results[2])] == ["processed", "processed"]
    assert isinstance(results[1], s.BadEvent)
    stored = set(await session.scalars(select(PaymentEvent.event_id)))
    assert bad.event_id not in stored and len(stored) == 2
    assert await count_rows(session, RecoveryCase) == 2


def _waiting(event: dict, loop: asyncio.AbstractEventLoop) -> _Waiting:
    signal = _signal(event)
    return _Waiting(signal, keys_of(signal), loop.create_future())


async def test_a_batch_takes_one_event_per_member_and_later_ones_keep_their_order(clock):  # noqa: ANN001
    loop = asyncio.get_running_loop()
    t0 = clock.now()
    first, other, same_member, after_held, gave_up, last = (
        _waiting(_failure(1, t0), loop), _waiting(_failure(2, t0), loop),
        # another invoice of member 1: same customer and e-mail
        _waiting(stripe_event("invoice.payment_failed", invoice(
            "in_9", customer="cus_1", email="m1@example.org", subscription="sub_9"), t0), loop),
        # shares only its subscription with the held one: it must not overtake it
        _waiting(stripe_event("invoice.payment_failed", invoice(
            "in_8", customer="cus_8", email="m8@example.org", subscription="sub_9"), t0), loop),
        _waiting(_failure(4, t0), loop), _waiting(_failure(5, t0), loop))
    gave_up.answer.cancel()  # its sender timed out; the provider retries it

    batch, later = next_batch([first, other, same_member, after_held, gave_up, last], limit=50)
    assert batch == [first, other, last]
    assert later == [same_member, after_held]
    batch, later = next_batch(later, limit=50)
    assert (batch, later) == ([same_member], [after_held])

    small, rest = next_batch([first, other, last], limit=2)
    assert (small, rest) == ([first, other], [last])
