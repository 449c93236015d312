"""Real provider payloads, read as the provider means them (issue 17).

Each test posts payloads shaped like Stripe's (acacia, basil, dahlia) and MemberPress's
Developer Tools through the real webhook path, on SQLite and PostgreSQL, and checks what an
owner or member would notice: cases, figures, languages, plan names, messages.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from payrescue import dunning
from payrescue.billing.stripe_events import clean_plan_name
from payrescue.db.models import (
    Member,
    Outbox,
    PaymentEvent,
    RecoveryCase,
    Subscription,
    TelegramLink,
)
from payrescue.reports import Period, compute
from tests.billing.conftest import (
    billing_app,
    count_rows,
    mp_member,
    mp_subscription,
    mp_transaction,
    post_mp,
    post_stripe,
)
from tests.billing.payloads import (
    ACACIA,
    BASIL,
    DAHLIA,
    VERSIONS,
    event,
    failed_intent,
    real_invoice,
    real_subscription,
    updated_card,
)
from tests.billing.stripe_standin import customer, price, product


@pytest.fixture
async def keyless(billing_settings, engine, clock, bus) -> AsyncIterator[TestClient]:  # noqa: ANN001
    """The service without a Stripe API key: only what the webhooks carry."""
    settings = billing_settings.model_copy(update={"stripe_api_key": None})
    async with TestClient(TestServer(billing_app(settings, engine, clock, bus))) as client:
        yield client


async def _status(response) -> str:  # noqa: ANN001
    assert response.status == 200, await response.text()
    return (await response.json())["status"]


async def _cases(session) -> list[RecoveryCase]:  # noqa: ANN001
    session.expire_all()
    return list(await session.scalars(select(RecoveryCase).order_by(RecoveryCase.id)))


async def _one(session, model: type) -> Any:  # noqa: ANN001
    session.expire_all()
    return await session.scalar(select(model).order_by(model.id))


# --- 1. MemberPress first-payment failures ----------------------------------------------------


async def test_memberpress_failure_at_sign_up_opens_no_case(client, session, clock):
    first = mp_transaction("transaction-failed", 501, created=clock.now(), renewal=False)
    assert await _status(await post_mp(client, first)) == "ignored"
    assert await _cases(session) == []
    assert await count_rows(session, Member) == 0  # nobody to remind of a renewal

    # a renewal: MemberPress sends both names for the one transaction; one attempt counts
    later = clock.now() + timedelta(days=31)
    for name in ("transaction-failed", "recurring-transaction-failed"):
        renewal = mp_transaction(name, 502, created=later)
        assert await _status(await post_mp(client, renewal)) in ("processed", "stale")
    [case] = await _cases(session)
    assert (case.status, case.attempt_count, case.amount_minor) == ("open", 1, 2900)


async def test_memberpress_renewal_is_told_by_the_subscriptions_earlier_transactions(
        client, session, clock):
    body = mp_transaction("transaction-failed", 503, created=clock.now(), renewal=False)
    body["data"]["subscription"]["txn_count"] = "4"  # index and rebill left out
    del body["data"]["rebill"], body["data"]["subscription_payment_index"]
    assert await _status(await post_mp(client, body)) == "processed"
    assert len(await _cases(session)) == 1


# --- 2. every end state closes the case as lost ------------------------------------------------


END_STATES = [
    ("customer.subscription.updated", "unpaid"),
    ("customer.subscription.updated", "canceled"),
    ("customer.subscription.deleted", "canceled"),
    ("invoice.marked_uncollectible", "past_due"),
    ("invoice.voided", "past_due"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("end", "sub_status"), END_STATES)
async def test_every_end_state_loses_the_case(client, session, clock, billing_settings,
                                              version, end, sub_status):
    t0 = clock.now() - timedelta(days=20)
    await post_stripe(client, event("invoice.payment_failed", real_invoice(version), t0, version))
    at = t0 + timedelta(days=14)
    if end.startswith("invoice."):
        obj = real_invoice(version, status="uncollectible" if "uncollectible" in end
                           else "void", attempt_count=4)
    else:
        obj = real_subscription(sub_status, ended_at=int(at.timestamp())
                                if sub_status == "canceled" else None)
    assert await _status(await post_stripe(client, event(end, obj, at, version))) == "processed"

    [case] = await _cases(session)
    assert (case.status, case.lost_at, case.next_attempt_at) == ("lost", at, None)
    sub = await _one(session, Subscription)
    assert sub.status == sub_status
    figures = await compute(session, Period.last_days(30, clock.now(), ZoneInfo("UTC")),
                            billing_settings.hours, "en")
    assert (figures.opened, figures.lost, figures.recovered) == (1, 1, 0)


@pytest.mark.parametrize("give_up", ["invoice.marked_uncollectible", "unpaid"])
async def test_an_invoice_paid_after_stripe_gave_up_still_recovers(client, session, clock,
                                                                  give_up):
    t0 = clock.now() - timedelta(days=20)
    await post_stripe(client, event("invoice.payment_failed", real_invoice(BASIL), t0))
    gave_up = t0 + timedelta(days=14)
    if give_up == "unpaid":
        given = event("customer.subscription.updated", real_subscription("unpaid"), gave_up)
    else:
        given = event(give_up, real_invoice(BASIL, status="uncollectible"), gave_up)
    paid = event("invoice.paid", real_invoice(BASIL, status="paid"), gave_up + timedelta(days=2))
    for delivery in (paid, given):  # the payment's delivery first: order must not matter
        await post_stripe(client, delivery)
    [case] = await _cases(session)
    assert (case.status, case.recovered_at) == ("recovered", gave_up + timedelta(days=2))
    assert (await _one(session, Subscription)).status == "active"


# --- 3. the card network's update, by its current name and its old one -------------------------


@pytest.mark.parametrize("name", ["payment_method.automatically_updated",
                                  "payment_method.card_automatically_updated"])
async def test_automatically_updated_card_is_read_under_both_names(client, session, clock, bus,
                                                                  name):
    await post_stripe(client, event("invoice.payment_failed", real_invoice(DAHLIA), clock.now(),
                                    DAHLIA))
    async with bus.subscribe() as queue:
        response = await post_stripe(client, event(name, updated_card(), clock.now(), DAHLIA))
        topics = [queue.get_nowait().topic for _ in range(queue.qsize())]
    assert await _status(response) == "recorded"
    assert "member.card_updated" in topics


# --- 4. the member's language -----------------------------------------------------------------


async def test_language_comes_from_the_customers_preferred_locales(client, session, clock,
                                                                  standin):
    _, state = standin
    state.customers["cus_Real"] = customer("cus_Real", email="rita@example.org",
                                           locales=["fr-FR", "en-GB"])
    await post_stripe(client, event("invoice.payment_failed", real_invoice(BASIL),
                                    clock.now()))
    member = await _one(session, Member)
    assert member.language == "en"  # French first, which we do not speak; then English
    assert "GET /v1/customers/cus_Real" in state.requests


@pytest.mark.parametrize(("country", "account", "expected"), [
    ("AT", "US", "de"), ("US", "DE", "en"), (None, "DE", "de"), (None, "GB", "en")])
async def test_language_without_locales_is_guessed_from_the_country(
        keyless, session, clock, country, account, expected):
    obj = real_invoice(ACACIA, country=country, account_country=account)
    await post_stripe(keyless, event("invoice.payment_failed", obj, clock.now(), ACACIA))
    assert (await _one(session, Member)).language == expected


async def test_a_language_the_member_chose_is_kept(client, session, clock):
    session.add(Member(email="rita@example.org", language="en", created_at=clock.now()))
    await session.commit()
    await post_stripe(client, event("invoice.payment_failed", real_invoice(BASIL), clock.now()))
    assert (await _one(session, Member)).language == "en"


# --- 5. events that should wait or create ------------------------------------------------------


async def test_failure_without_email_fetches_the_customer_else_waits(client, keyless, session,
                                                                    clock, standin):
    _, state = standin
    lone = real_invoice(BASIL, "in_Lone", customer="cus_Lone", email=None, sub="sub_Lone")
    assert await _status(await post_stripe(
        keyless, event("invoice.payment_failed", lone, clock.now()))) == "parked"
    assert await _cases(session) == []

    state.customers["cus_Api"] = customer("cus_Api", email="api@example.org", name="Ada",
                                          locales=["de-AT"])
    known = real_invoice(BASIL, "in_Api", customer="cus_Api", email=None, sub="sub_Api")
    assert await _status(await post_stripe(
        client, event("invoice.payment_failed", known, clock.now()))) == "processed"
    [case] = await _cases(session)
    member = await session.get(Member, case.member_id)
    assert (member.email, member.name, member.language, member.stripe_customer_id) == (
        "api@example.org", "Ada", "de", "cus_Api")

    # the parked failure joins its member once they are known (their card is expiring)
    state.customers["cus_Lone"] = customer("cus_Lone", email="lone@example.org")
    card = {"id": "card_1", "object": "card", "customer": "cus_Lone", "brand": "Visa",
            "exp_month": 1, "exp_year": 2026, "last4": "4242"}
    assert await _status(await post_stripe(
        client, event("customer.source.expiring", card, clock.now()))) == "recorded"
    lone_id = await session.scalar(select(Member.id).where(Member.email == "lone@example.org"))
    assert lone_id is not None
    assert [c.member_id for c in await _cases(session)].count(lone_id) == 1


async def test_memberpress_card_reminder_creates_a_member_not_known_yet(client, session,
                                                                       clock, bus):
    reminder = mp_subscription("before-cc-expires-reminder", status="active",
                               member=mp_member(88, "neu@example.org"))
    async with bus.subscribe() as queue:
        assert await _status(await post_mp(client, reminder)) == "recorded"
        topics = [queue.get_nowait().topic for _ in range(queue.qsize())]
    member = await _one(session, Member)
    assert (member.email, member.memberpress_member_id) == ("neu@example.org", "88")
    assert "member.card_expiring" in topics


# --- 6. legitimate MemberPress repeats ----------------------------------------------------------


async def test_memberpress_second_pause_and_new_card_reminder_are_news(client, session, clock):
    await post_mp(client, mp_transaction("recurring-transaction-failed", 601, created=clock.now()))
    statuses = []
    for name, status in (("subscription-paused", "suspended"), ("subscription-resumed", "active"),
                         ("subscription-paused", "suspended")):
        await clock.advance(600)
        statuses.append(await _status(await post_mp(client, mp_subscription(name, status=status))))
    assert "duplicate" not in statuses
    assert (await _one(session, Subscription)).status == "paused"
    # the same event fired twice in one go is one
    again = await post_mp(client, mp_subscription("subscription-paused", status="suspended"))
    assert await _status(again) == "duplicate"

    first = mp_subscription("before-cc-expires-reminder", status="active")
    await post_mp(client, first)
    new_card = mp_subscription("before-cc-expires-reminder", status="active",
                               card=("1881", 3, 2027))
    assert await _status(await post_mp(client, new_card)) == "recorded"


# --- 7. events a dunning service reads ---------------------------------------------------------


async def test_overdue_sent_invoice_opens_a_case_and_notices_are_only_kept(
        client, session, clock, standin):
    _, state = standin
    sent = real_invoice(BASIL, "in_Sent", collection="send_invoice", attempt_count=0,
                        next_attempt=None)
    assert await _status(await post_stripe(client, event("invoice.will_be_due", sent,
                                                         clock.now()))) == "recorded"
    assert await _cases(session) == []
    assert await _status(await post_stripe(client, event("invoice.overdue", sent,
                                                         clock.now()))) == "processed"
    [case] = await _cases(session)
    assert (case.status, case.attempt_count, case.decline_category) == ("open", 1, "unknown")
    assert "GET /v1/invoice_payments" not in state.requests  # nothing was charged

    charged = real_invoice(BASIL, "in_Charged")
    for name in ("invoice.overdue", "invoice.payment_attempt_required"):
        assert await _status(await post_stripe(client, event(name, charged,
                                                             clock.now()))) == "recorded"
    assert len(await _cases(session)) == 1


@pytest.mark.parametrize("version", [ACACIA, DAHLIA])
async def test_paused_and_resumed_subscription(client, session, clock, version):
    await post_stripe(client, event("invoice.payment_failed", real_invoice(version),
                                    clock.now(), version))
    paused = event("customer.subscription.paused", real_subscription("paused"),
                   clock.now() + timedelta(hours=1), version)
    assert await _status(await post_stripe(client, paused)) in ("processed", "recorded")
    assert (await _one(session, Subscription)).status == "paused"
    assert (await _cases(session))[0].status == "open"
    resumed = event("customer.subscription.resumed", real_subscription("active"),
                    clock.now() + timedelta(hours=2), version)
    await post_stripe(client, resumed)
    assert (await _one(session, Subscription)).status == "active"


async def _send_due(sessionmaker, billing_settings, clock) -> list[str]:  # noqa: ANN001
    """The scheduler, then every queued row "sent"; the templates of what went out."""
    async with sessionmaker() as session:
        await dunning.reconcile(session, billing_settings, clock.now())
    async with sessionmaker() as session, session.begin():
        rows = list(await session.scalars(select(Outbox).where(Outbox.status == "queued")))
        for row in rows:
            row.status, row.sent_at = "sent", clock.now()
        return [row.payload.get("template") or row.payload.get("text", "") for row in rows]


async def test_a_refunded_recovery_is_not_saved_and_says_nothing_more(
        client, session, sessionmaker, clock, billing_settings):
    t0 = clock.now() - timedelta(minutes=30)
    await post_mp(client, mp_transaction("recurring-transaction-failed", 701, created=t0))
    member = await _one(session, Member)
    session.add(TelegramLink(member_id=member.id, chat_id=7001, telegram_user_id=7001,
                             linked_at=t0))
    await session.commit()
    first = await _send_due(sessionmaker, billing_settings, clock)
    assert first  # the first reminder went out
    paid = mp_transaction("recurring-transaction-completed", 702,
                          created=t0 + timedelta(minutes=20), status="complete")
    await post_mp(client, paid)
    [case] = await _cases(session)
    assert case.status == "recovered"
    thanks = await _send_due(sessionmaker, billing_settings, clock)

    refund = dict(paid, event="transaction-refunded")
    refund["data"] = dict(paid["data"], status="refunded")
    assert await _status(await post_mp(client, refund)) == "processed"
    [case] = await _cases(session)
    assert (case.status, case.lost_at, case.attribution) == ("lost", clock.now(), None)
    figures = await compute(session, Period.last_days(7, clock.now(), ZoneInfo("UTC")),
                            billing_settings.hours, "en")
    assert (figures.recovered, figures.recovered_amount, figures.mrr_saved) == (0, {}, {})
    assert (figures.lost, figures.lost_amount) == (1, {"EUR": 2900})
    assert len(thanks) == 1
    assert await _send_due(sessionmaker, billing_settings, clock) == []  # no "it has ended"


@pytest.mark.parametrize("full", [True, False])
async def test_a_stripe_refund_in_full_of_the_recovering_charge_loses_the_case(
        client, session, clock, billing_settings, full):
    t0 = clock.now() - timedelta(days=3)
    await post_stripe(client, event("invoice.payment_failed", real_invoice(ACACIA), t0, ACACIA))
    await post_stripe(client, event("invoice.paid", real_invoice(ACACIA, status="paid"),
                                    t0 + timedelta(days=1), ACACIA))
    charge = {"id": "ch_1Real", "object": "charge", "amount": 1400,
              "amount_captured": 1400, "amount_refunded": 1400 if full else 400,
              "captured": True, "currency": "eur", "customer": "cus_Real",
              "invoice": "in_1Real", "paid": True, "payment_intent": "pi_in_1Real",
              "refunded": full, "status": "succeeded", "livemode": False}
    answer = await _status(await post_stripe(client, event("charge.refunded", charge,
                                                           clock.now(), ACACIA)))
    [case] = await _cases(session)
    figures = await compute(session, Period.last_days(7, clock.now(), ZoneInfo("UTC")),
                            billing_settings.hours, "en")
    if full:
        assert (answer, case.status, figures.recovered, figures.lost) == (
            "processed", "lost", 0, 1)
    else:  # a partial refund leaves the renewal paid
        assert (answer, case.status, figures.recovered) == ("recorded", "recovered", 1)


@pytest.mark.parametrize(("sub_status", "expected"), [("cancelled", "lost"), ("active", "open")])
async def test_memberpress_expired_transaction(client, session, clock, sub_status, expected):
    t0 = clock.now() - timedelta(days=5)
    await post_mp(client, mp_transaction("recurring-transaction-failed", 801, created=t0))
    expired = mp_transaction("recurring-transaction-expired", 790, created=t0 - timedelta(
        days=31), status="complete", expires=t0 + timedelta(days=1), sub_status=sub_status)
    answer = await _status(await post_mp(client, expired))
    assert answer == ("processed" if expected == "lost" else "recorded")
    [case] = await _cases(session)
    assert case.status == expected


async def test_memberpress_card_expired_reminder_warns(client, session, sessionmaker, clock,
                                                      bus, billing_settings):
    member = Member(email="max@example.org", memberpress_member_id="56",
                    created_at=clock.now())
    session.add(member)
    await session.flush()
    session.add(TelegramLink(member_id=member.id, chat_id=9001, telegram_user_id=9001,
                             linked_at=clock.now()))
    await session.commit()
    async with bus.subscribe() as queue:
        response = await post_mp(client, mp_subscription("after-cc-expires-reminder",
                                                         status="active"))
        events = [queue.get_nowait() for _ in range(queue.qsize())]
    assert await _status(response) == "recorded"
    assert ("member.card_expiring", None) in {(e.topic, e.data.get("change")) for e in events}
    [text] = await _send_due(sessionmaker, billing_settings, clock)
    assert "has expired" in text or "abgelaufen" in text


# --- 8. plan names ------------------------------------------------------------------------


async def test_plan_name_from_the_price_or_its_product_with_the_api_key(client, session, clock,
                                                                       standin):
    _, state = standin
    state.prices["price_Gold"] = price("price_Gold", "prod_Gold")
    state.products["prod_Gold"] = product("prod_Gold", "Yoga Duo")
    await post_stripe(client, event("invoice.payment_failed", real_invoice(BASIL), clock.now()))
    assert (await _one(session, Subscription)).plan_name == "Yoga Duo"

    state.prices["price_Gold"] = price("price_Gold", "prod_Gold", nickname="Duo monatlich")
    other = real_invoice(DAHLIA, "in_2", customer="cus_2", email="b@example.org", sub="sub_2")
    other["lines"]["data"][0]["pricing"]["price_details"]["price"] = "price_Other"
    state.prices["price_Other"] = price("price_Other", "prod_Gold", nickname="Duo monatlich")
    await post_stripe(client, event("invoice.payment_failed", other, clock.now(), DAHLIA))
    sub = await session.scalar(select(Subscription).where(Subscription.external_id == "sub_2"))
    assert sub.plan_name == "Duo monatlich"


async def test_plan_name_without_the_key_drops_stripes_wrapper(keyless, session, clock):
    for version in (ACACIA, BASIL):
        n = version[:5]
        obj = real_invoice(version, f"in_{n}", customer=f"cus_{n}", email=f"{n}@example.org",
                           sub=f"sub_{n}")
        await post_stripe(keyless, event("invoice.payment_failed", obj, clock.now(), version))
    session.expire_all()
    names = set(await session.scalars(select(Subscription.plan_name)))
    assert names == {"Happy Couple"}


@pytest.mark.parametrize(("description", "name"), [
    ("1 × Happy Couple (at $14.00 / month)", "Happy Couple"),
    ("3 × Seat (at €5.00 / month)", "Seat"),
    ("Trial period for Happy Couple", "Happy Couple"),
    ("Remaining time on 1 × Happy Couple after 05 Jan 2026", "Happy Couple"),
    ("Unused time on 2 × Seat after 05 Jan 2026", "Seat"),
    ("Happy Couple (Tier 1 at $0.00 / month)", "Happy Couple"),
    ("Gold membership", "Gold membership"),
])
def test_clean_plan_name(description, name):
    assert clean_plan_name(description) == name


# --- 9. a basil decline code before its invoice event, without an API key ----------------------


@pytest.mark.parametrize("intent_first", [True, False])
async def test_basil_payment_intent_before_or_after_its_invoice_sets_the_category(
        keyless, session, clock, intent_first):
    t0 = clock.now() - timedelta(days=4)
    deliveries = []
    for attempt, code in ((1, "insufficient_funds"), (2, "expired_card")):
        at = t0 + timedelta(days=3 * (attempt - 1))
        deliveries.append([
            event("payment_intent.payment_failed", failed_intent(f"pi_{attempt}",
                                                                 decline_code=code), at),
            event("invoice.payment_failed", real_invoice(BASIL, attempt_count=attempt),
                  at + timedelta(seconds=1))])
    for pair in deliveries:
        for delivery in (pair if intent_first else reversed(pair)):
            assert await _status(await post_stripe(keyless, delivery)) != "rejected"
        [case] = await _cases(session)
        assert case.decline_code == pair[0]["data"]["object"]["last_payment_error"][
            "decline_code"]
    assert (case.decline_category, case.attempt_count) == ("expired_card", 2)


async def test_a_lookup_that_finds_nothing_is_corrected_by_the_waiting_intent(
        client, session, clock, standin):
    _, state = standin  # the API key is there, but InvoicePayment.list has nothing yet
    await post_stripe(client, event("payment_intent.payment_failed",
                                    failed_intent("pi_9", decline_code="expired_card"),
                                    clock.now()))
    await post_stripe(client, event("invoice.payment_failed", real_invoice(BASIL), clock.now()))
    [case] = await _cases(session)
    assert case.decline_category == "expired_card"
    assert "GET /v1/invoice_payments" in state.requests


# --- order: posted in order and shuffled, the same outcome --------------------------------------


def _story(n: int, t0) -> list[tuple[str, dict[str, Any]]]:  # noqa: ANN001
    """One Stripe (basil) and one MemberPress subscription, each through a realistic life."""
    cus, sub, email = f"cus_S{n}", f"sub_S{n}", f"s{n}@example.org"
    shape = dict(customer=cus, email=email, sub=sub)
    member = mp_member(900 + n, f"mp{n}@example.org")
    mp_sub = 9000 + n
    day = timedelta(days=1)
    return [
        ("stripe", event("payment_intent.payment_failed", failed_intent(
            f"pi_S{n}a", customer=cus, decline_code="insufficient_funds"), t0)),
        ("stripe", event("invoice.payment_failed", real_invoice(BASIL, f"in_S{n}", **shape),
                         t0 + timedelta(seconds=1))),
        ("stripe", event("customer.subscription.updated",
                         real_subscription("past_due", sub=sub, customer=cus),
                         t0 + timedelta(seconds=2))),
        ("stripe", event("invoice.payment_failed", real_invoice(
            BASIL, f"in_S{n}", attempt_count=2, **shape), t0 + 3 * day)),
        ("stripe", event("invoice.marked_uncollectible", real_invoice(
            BASIL, f"in_S{n}", status="uncollectible", attempt_count=4, **shape), t0 + 9 * day)),
        ("stripe", event("customer.subscription.updated",
                         real_subscription("unpaid", sub=sub, customer=cus),
                         t0 + 9 * day + timedelta(seconds=1))),
        ("memberpress", mp_transaction("transaction-failed", 10 * n, created=t0,
                                       renewal=False, sub_id=mp_sub, member=member)),
        ("memberpress", mp_transaction("recurring-transaction-failed", 10 * n + 1,
                                       created=t0 + 2 * day, sub_id=mp_sub, member=member)),
        ("memberpress", mp_transaction("recurring-transaction-completed", 10 * n + 2,
                                       created=t0 + 4 * day, status="complete",
                                       sub_id=mp_sub, member=member)),
    ]


async def _post(client, provider: str, body: dict[str, Any]) -> str:  # noqa: ANN001
    return await _status(await (post_stripe(client, body) if provider == "stripe"
                                else post_mp(client, body)))


async def test_in_order_and_shuffled_deliveries_give_the_same_outcome(keyless, session, clock,
                                                                     billing_settings):
    t0 = clock.now() - timedelta(days=12)
    outcomes = []
    for n, seed in enumerate((None, 1, 2, 3), start=1):
        story = _story(n, t0)
        if seed is not None:
            random.Random(seed).shuffle(story)
        for provider, body in story:
            await _post(keyless, provider, body)
        session.expire_all()
        rows = await session.execute(
            select(RecoveryCase, Subscription.status).join(
                Subscription, Subscription.id == RecoveryCase.subscription_id)
            .join(Member, Member.id == RecoveryCase.member_id)
            .where(Member.email.in_([f"s{n}@example.org", f"mp{n}@example.org"]))
            .order_by(RecoveryCase.provider))
        outcomes.append([(c.provider, c.status, c.attempt_count, c.decline_code,
                          c.decline_category, c.opened_at, c.lost_at, c.recovered_at,
                          status) for c, status in rows])
    assert outcomes[0] == [
        ("memberpress", "recovered", 1, None, "unknown", t0 + timedelta(days=2), None,
         t0 + timedelta(days=4), "active"),
        ("stripe", "lost", 2, "insufficient_funds", "insufficient_funds",
         t0 + timedelta(seconds=1), t0 + timedelta(days=9), None, "unpaid")]
    assert outcomes[1:] == [outcomes[0]] * 3
    figures = await compute(session, Period(date(2025, 12, 1), date(2026, 1, 31),
                                            ZoneInfo("UTC")), billing_settings.hours, "en")
    assert (figures.opened, figures.recovered, figures.lost) == (8, 4, 4)
    assert await count_rows(session, PaymentEvent) == 4 * 9
