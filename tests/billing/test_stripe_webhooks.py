"""Stripe webhooks end to end: signature, both invoice shapes, replays, out of order."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import timedelta

from sqlalchemy import select

from payrescue.db.models import Member, PaymentEvent, RecoveryCase, Subscription
from tests.billing.conftest import (
    WHSEC,
    count_rows,
    invoice,
    post_stripe,
    sign_stripe,
    stripe_event,
    subscription,
)
from tests.billing.stripe_standin import invoice_payment, payment_intent


async def test_failed_invoice_opens_a_case_with_the_decline_from_invoice_payments(
        client, session, clock, standin):
    _, state = standin
    intent = payment_intent("pi_1", decline_code="expired_card", code="expired_card")
    state.invoice_payments["in_1Abc"] = [invoice_payment("in_1Abc", intent, 1767600000)]
    next_try = clock.now() + timedelta(days=3)
    event = stripe_event("invoice.payment_failed",
                         invoice(attempt_count=1, next_attempt=next_try), clock.now())

    response = await post_stripe(client, event)

    assert response.status == 200, await response.text()
    case = await session.scalar(select(RecoveryCase))
    assert (case.status, case.amount_minor, case.currency) == ("open", 2900, "EUR")
    assert (case.decline_code, case.decline_category) == ("expired_card", "expired_card")
    assert case.next_attempt_at == next_try.replace(microsecond=0)
    assert case.billing_reason == "subscription_cycle"
    member = await session.get(Member, case.member_id)
    assert (member.email, member.stripe_customer_id) == ("anna@example.org", "cus_Anna")
    assert "GET /v1/invoice_payments" in state.requests


async def test_older_api_version_reads_the_expanded_payment_intent(client, session, clock):
    intent = payment_intent("pi_2", decline_code="insufficient_funds")
    event = stripe_event("invoice.payment_failed",
                         invoice(basil=False, payment_intent=intent), clock.now(),
                         api_version="2024-06-20")

    assert (await post_stripe(client, event)).status == 200
    case = await session.scalar(select(RecoveryCase))
    assert case.decline_category == "insufficient_funds"
    sub = await session.scalar(select(Subscription))
    assert (sub.external_id, sub.status) == ("sub_Anna", "past_due")


async def test_failed_lookup_opens_unknown_and_payment_intent_event_corrects_it(
        client, session, clock, standin):
    _, state = standin
    state.fail_with = 500
    failed = stripe_event("invoice.payment_failed", invoice(), clock.now())
    assert (await post_stripe(client, failed)).status == 200
    case = await session.scalar(select(RecoveryCase))
    assert case.decline_category == "unknown"

    sepa = payment_intent("pi_3", decline_code=None, code="account_closed",
                          method_type="sepa_debit")
    sepa["customer"] = "cus_Anna"
    await post_stripe(client, stripe_event("payment_intent.payment_failed", sepa, clock.now()))
    await session.refresh(case)
    assert (case.decline_code, case.decline_category) == ("account_closed", "bank_account_closed")


async def test_bad_or_stale_signature_is_refused_and_nothing_stored(client, session, clock):
    event = stripe_event("invoice.payment_failed", invoice(), clock.now())
    body = json.dumps(event).encode()
    wrong = await client.post("/webhooks/stripe", data=body,
                              headers={"Stripe-Signature": sign_stripe(body, "whsec_other")})
    stale = await client.post("/webhooks/stripe", data=body, headers={
        "Stripe-Signature": sign_stripe(body, timestamp=int(time.time()) - 301)})
    missing = await client.post("/webhooks/stripe", data=body)

    assert [wrong.status, stale.status, missing.status] == [400, 400, 400]
    assert "Stripe-Signature" in (await stale.json())["error"]
    assert await count_rows(session, PaymentEvent) == 0


async def test_rotation_several_v1_and_test_v0_are_accepted(client, session, clock):
    event = stripe_event("invoice.payment_failed", invoice(), clock.now())
    body = json.dumps(event).encode()
    t = int(time.time())
    good = sign_stripe(body, WHSEC, t).split(",")[1]
    old = sign_stripe(body, "whsec_old_secret", t).split(",")[1]
    test_v0 = "v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    header = f"t={t},{old},{good},{test_v0}"

    response = await client.post("/webhooks/stripe", data=body,
                                 headers={"Stripe-Signature": header})
    assert response.status == 200
    assert await count_rows(session, RecoveryCase) == 1


async def test_replay_answers_200_and_changes_nothing(client, session, clock):
    event = stripe_event("invoice.payment_failed", invoice(attempt_count=1), clock.now())
    first = await post_stripe(client, event)
    again = await post_stripe(client, event)

    assert (first.status, again.status) == (200, 200)
    assert (await again.json())["status"] == "duplicate"
    case = await session.scalar(select(RecoveryCase))
    assert case.attempt_count == 1
    assert await count_rows(session, PaymentEvent) == 1


async def test_ten_identical_deliveries_at_once_have_one_effect(client, session, clock, bus):
    event = stripe_event("invoice.payment_failed", invoice(), clock.now())
    async with bus.subscribe() as queue:
        responses = await asyncio.gather(*(post_stripe(client, event) for _ in range(10)))
        assert [r.status for r in responses] == [200] * 10
        statuses = sorted([(await r.json())["status"] for r in responses])
        assert statuses == ["duplicate"] * 9 + ["processed"]
        opened = [queue.get_nowait() for _ in range(queue.qsize())]
    assert await count_rows(session, RecoveryCase) == 1
    assert await count_rows(session, PaymentEvent) == 1
    assert [e.data["change"] for e in opened if e.topic == "case.changed"] == ["opened"]


async def test_shuffled_and_duplicated_sequence_ends_recovered(client, session, clock):
    t0 = clock.now()
    sequence = [
        stripe_event("invoice.payment_failed", invoice(attempt_count=1), t0),
        stripe_event("invoice.payment_failed", invoice(attempt_count=2),
                     t0 + timedelta(days=3)),
        stripe_event("customer.subscription.updated", subscription(status="past_due"),
                     t0 + timedelta(seconds=5)),
        stripe_event("invoice.paid", invoice(paid=True, attempt_count=3),
                     t0 + timedelta(days=5)),
        stripe_event("invoice.payment_succeeded", invoice(paid=True, attempt_count=3),
                     t0 + timedelta(days=5)),
        stripe_event("customer.subscription.updated", subscription(status="active"),
                     t0 + timedelta(days=5, seconds=2)),
    ]
    deliveries = sequence + random.Random(3).sample(sequence, 4)
    random.Random(7).shuffle(deliveries)
    for event in deliveries:
        assert (await post_stripe(client, event)).status == 200

    cases = list(await session.scalars(select(RecoveryCase)))
    assert len(cases) <= 1
    if cases:  # the success may have come first: then no case was ever opened
        assert cases[0].status == "recovered"
        assert cases[0].recovered_amount_minor == 2900
        assert cases[0].attribution == "no_contact"


async def test_success_older_than_a_new_failure_does_not_close_it(client, session, clock):
    t0 = clock.now()
    await post_stripe(client, stripe_event("invoice.payment_failed", invoice(attempt_count=2),
                                           t0 + timedelta(hours=2)))
    await post_stripe(client, stripe_event("invoice.paid", invoice(paid=True), t0))
    case = await session.scalar(select(RecoveryCase))
    assert case.status == "open"


async def test_failure_arriving_after_its_payment_opens_a_case_recovered_at_once(
        client, session, clock):
    t0 = clock.now()
    paid = await post_stripe(client, stripe_event("invoice.paid", invoice(paid=True),
                                                  t0 + timedelta(hours=1)))
    late = await post_stripe(client, stripe_event("invoice.payment_failed", invoice(), t0))
    assert (await paid.json())["status"] == "parked"  # kept until the member is known
    assert (await late.json())["status"] == "processed"
    # the failed payment and its recovery count, as if they had come in order; nobody was
    # told anything, so the provider's retry won it back
    case = await session.scalar(select(RecoveryCase))
    assert (case.status, case.attribution) == ("recovered", "no_contact")
    assert (case.opened_at, case.recovered_at) == (t0, t0 + timedelta(hours=1))
    assert case.recovered_amount_minor == 2900


async def test_action_required_then_deleted_subscription_loses_the_case(client, session, clock):
    t0 = clock.now()
    await post_stripe(client, stripe_event("invoice.payment_action_required", invoice(), t0))
    case = await session.scalar(select(RecoveryCase))
    assert case.action_required and case.decline_category == "authentication_required"
    await post_stripe(client, stripe_event(
        "customer.subscription.deleted", subscription(status="canceled",
                                                      ended_at=t0 + timedelta(days=20)),
        t0 + timedelta(days=20)))
    await session.refresh(case)
    assert case.status == "lost"
    assert (await session.scalar(select(Subscription))).status == "canceled"


async def test_unknown_event_types_are_accepted_and_ignored(client, session, clock):
    event = stripe_event("customer.created", {"id": "cus_X", "object": "customer"}, clock.now())
    response = await post_stripe(client, event)
    assert (response.status, (await response.json())["status"]) == (200, "ignored")
    assert await count_rows(session, Member) == 0


async def test_member_is_matched_by_customer_id_before_email(client, session, clock):
    session.add(Member(email="other@example.org", stripe_customer_id="cus_Anna",
                       created_at=clock.now()))
    await session.commit()
    await post_stripe(client, stripe_event("invoice.payment_failed", invoice(), clock.now()))
    assert await count_rows(session, Member) == 1
    case = await session.scalar(select(RecoveryCase))
    member = await session.get(Member, case.member_id)
    assert member.email == "other@example.org"


async def test_invoice_updated_moves_the_next_attempt(client, session, clock):
    t0 = clock.now()
    await post_stripe(client, stripe_event("invoice.payment_failed", invoice(), t0))
    later = t0 + timedelta(days=6)
    await post_stripe(client, stripe_event("invoice.updated", invoice(next_attempt=later),
                                           t0 + timedelta(minutes=1)))
    case = await session.scalar(select(RecoveryCase))
    assert case.next_attempt_at == later.replace(microsecond=0)


async def test_dispute_puts_the_member_in_the_agents_queue(client, session, clock, standin, bus):
    from payrescue.db.models import Conversation, Handoff

    _, state = standin
    await post_stripe(client, stripe_event("invoice.payment_failed", invoice(), clock.now()))
    state.charges["ch_9"] = {"id": "ch_9", "object": "charge", "customer": "cus_Anna"}
    dispute = {"id": "dp_1", "object": "dispute", "amount": 2900, "currency": "eur",
               "charge": "ch_9", "reason": "fraudulent", "status": "needs_response",
               "evidence": {"customer_email_address": None}}
    async with bus.subscribe() as queue:
        response = await post_stripe(client, stripe_event("charge.dispute.created", dispute,
                                                          clock.now()))
        topics = [queue.get_nowait().topic for _ in range(queue.qsize())]
    assert response.status == 200
    conversation = await session.scalar(select(Conversation))
    assert conversation.status == "waiting" and "dispute" in conversation.handoff_reasons
    assert (await session.scalar(select(Handoff))).reasons == ["dispute"]
    assert "conversation.waiting" in topics


async def test_expiring_card_is_announced_for_the_member(client, session, clock, bus):
    await post_stripe(client, stripe_event("invoice.payment_failed", invoice(), clock.now()))
    card = {"id": "card_1", "object": "card", "customer": "cus_Anna", "exp_month": 1,
            "exp_year": 2026, "last4": "4242", "brand": "Visa"}
    async with bus.subscribe() as queue:
        await post_stripe(client, stripe_event("customer.source.expiring", card, clock.now()))
        events = [queue.get_nowait() for _ in range(queue.qsize())]
    changes = {(e.topic, e.data.get("change")) for e in events}
    assert ("case.changed", "card_expiring") in changes
    assert ("member.card_expiring", None) in changes


async def test_decline_code_that_arrived_first_is_used_when_the_case_opens(client, session,
                                                                         clock):
    intent = payment_intent("pi_7", decline_code="expired_card", code="expired_card")
    intent.update(customer="cus_Anna", invoice="in_1Abc")
    early = await post_stripe(client, stripe_event("payment_intent.payment_failed", intent,
                                                   clock.now(), api_version="2024-06-20"))
    assert (await early.json())["status"] == "parked"
    await post_stripe(client, stripe_event("invoice.payment_failed", invoice(
        basil=False, payment_intent="pi_7"), clock.now(), api_version="2024-06-20"))
    case = await session.scalar(select(RecoveryCase))
    assert case.decline_category == "expired_card"


async def _interval(session) -> tuple[str | None, int | None]:  # noqa: ANN001
    sub = await session.scalar(select(Subscription))
    await session.refresh(sub)
    return sub.interval, sub.interval_count


async def test_how_often_a_plan_bills_is_read_from_every_api_version(client, session, clock):
    # basil invoices name the price only by id: the billed period says "a year"
    yearly = invoice("in_year", amount=34800, every=("year", 1))
    assert (await post_stripe(client, stripe_event("invoice.payment_failed", yearly,
                                                   clock.now()))).status == 200
    assert await _interval(session) == ("year", 1)
    # older versions carry the price and its `recurring` on the line
    older = invoice("in_quarter", basil=False, amount=8700, every=("month", 3))
    assert (await post_stripe(client, stripe_event("invoice.payment_failed", older, clock.now(),
                                                   api_version="2024-06-20"))).status == 200
    assert await _interval(session) == ("month", 3)
    # a subscription's items always carry their price
    weekly = subscription(status="past_due", every=("week", 2))
    assert (await post_stripe(client, stripe_event("customer.subscription.updated", weekly,
                                                   clock.now()))).status == 200
    assert await _interval(session) == ("week", 2)


async def test_the_plan_name_is_the_price_or_product_never_the_raw_line(client, session, clock):
    bare = invoice("in_n1", customer="cus_n1", email="n1@example.org", subscription="sub_n1")
    bare["lines"]["data"][0]["description"] = "1 × Happy Couple (at $14.00 / month)"
    named = invoice("in_n2", customer="cus_n2", email="n2@example.org", subscription="sub_n2",
                    basil=False)
    named["lines"]["data"][0]["price"]["nickname"] = "Pro"
    for obj in (bare, named):
        await post_stripe(client, stripe_event("invoice.payment_failed", obj, clock.now()))
    names = dict((await session.execute(
        select(Subscription.external_id, Subscription.plan_name))).all())
    assert names == {"sub_n1": "Happy Couple", "sub_n2": "Pro"}
