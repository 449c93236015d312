"""MemberPress webhooks (static key) and the generic signed API."""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta

from sqlalchemy import select

from payrescue.db.models import Member, PaymentEvent, RecoveryCase, RejectedEvent, Subscription
from tests.billing.conftest import (
    MP_KEY,
    count_rows,
    mp_subscription,
    mp_transaction,
    post_generic,
    post_mp,
)


async def test_memberpress_failure_retry_and_renewal(client, session, clock):
    t0 = clock.now()
    first = await post_mp(client, mp_transaction("recurring-transaction-failed", 901, created=t0))
    retry = await post_mp(client, mp_transaction("recurring-transaction-failed", 902,
                                                 created=t0 + timedelta(days=3)))
    assert (first.status, retry.status) == (200, 200)
    case = await session.scalar(select(RecoveryCase))
    assert (case.amount_minor, case.currency, case.attempt_count) == (2900, "EUR", 2)
    assert case.decline_category == "unknown"
    assert case.update_url == "https://members.example.org/account/?action=update&sub=77"
    member = await session.get(Member, case.member_id)
    assert (member.email, member.name, member.memberpress_member_id) == (
        "max@example.org", "Max Müller", "56")

    paid = await post_mp(client, mp_transaction("renewal-transaction-completed", 903,
                                                created=t0 + timedelta(days=4),
                                                status="complete"))
    assert paid.status == 200
    await session.refresh(case)
    assert case.status == "recovered" and case.recovered_amount_minor == 2900


async def test_memberpress_wrong_key_is_refused_and_nothing_stored(client, session, clock):
    body = mp_transaction("transaction-failed", 1, created=clock.now())
    wrong = await post_mp(client, body, key="guess")
    missing = await client.post("/webhooks/memberpress", data=json.dumps(body))
    assert (wrong.status, missing.status) == (401, 401)
    assert "MEMBERPRESS-WEBHOOK-KEY" in (await wrong.json())["error"]
    assert await count_rows(session, PaymentEvent) == 0


async def test_memberpress_repeats_dedupe_on_event_id_and_status(client, session, clock):
    body = mp_transaction("transaction-failed", 5, created=clock.now())
    await post_mp(client, body)
    again = await post_mp(client, body)
    assert (await again.json())["status"] == "duplicate"
    assert await count_rows(session, PaymentEvent) == 1


async def test_memberpress_stopped_subscription_loses_the_case(client, session, clock):
    await post_mp(client, mp_transaction("transaction-failed", 7, created=clock.now()))
    clock_later = clock.now() + timedelta(days=1)
    await clock.advance(to=clock_later)
    await post_mp(client, mp_subscription("subscription-stopped"))
    case = await session.scalar(select(RecoveryCase))
    assert case.status == "lost"


async def test_memberpress_member_update_changes_name_and_address(client, session, clock):
    await post_mp(client, mp_transaction("transaction-failed", 8, created=clock.now()))
    update = {"event": "member-account-updated", "type": "member", "data": {
        "id": 56, "email": "max.neu@example.org", "first_name": "Maximilian",
        "last_name": "Müller"}}
    assert (await post_mp(client, update)).status == 200
    member = await session.scalar(select(Member))
    assert (member.email, member.name) == ("max.neu@example.org", "Maximilian Müller")


async def test_memberpress_bad_amount_is_kept_as_rejected(client, session, clock):
    body = mp_transaction("transaction-failed", 9, created=clock.now(), total="twenty")
    response = await post_mp(client, body)
    assert response.status == 200  # the key was right: MemberPress must stop retrying
    answer = await response.json()
    assert answer["status"] == "rejected" and "data.total" in answer["reason"]
    assert await count_rows(session, PaymentEvent) == 0
    kept = await session.scalar(select(RejectedEvent))
    assert (kept.provider, kept.event_ref) == ("memberpress", "transaction-failed")
    assert "data.total" in kept.reason


async def test_memberpress_yearly_membership_is_known_as_yearly(client, session, clock):
    body = mp_transaction("recurring-transaction-failed", 904, created=clock.now(),
                          total="348.00", period_type="years")
    assert (await post_mp(client, body)).status == 200
    sub = await session.scalar(select(Subscription))
    assert (sub.interval, sub.interval_count, sub.amount_minor) == ("year", 1, 34800)


def _generic(event_type: str, event_id: str, occurred: str, **extra) -> dict:  # noqa: ANN003
    body = {"id": event_id, "type": event_type, "occurred_at": occurred,
            "member": {"email": "lea@example.org", "name": "Lea", "language": "de",
                       "id": "crm-42"},
            "subscription": {"id": "plan-7", "plan": "Basic"}}
    body.update(extra)
    return body


async def test_generic_failure_then_recovery(client, session, clock):
    failed = _generic("failed", "e1", "2026-01-05T09:00:00Z", invoice="inv-1", amount=1500,
                      currency="eur", decline_code="insufficient_funds",
                      update_url="https://billing.example.org/update?s=plan-7")
    response = await post_generic(client, failed)
    assert response.status == 200, await response.text()
    case = await session.scalar(select(RecoveryCase))
    assert (case.amount_minor, case.currency, case.decline_category) == (
        1500, "EUR", "insufficient_funds")
    assert case.update_url == "https://billing.example.org/update?s=plan-7"
    recovered = _generic("recovered", "e2", "2026-01-06T09:00:00+01:00", invoice="inv-1")
    assert (await post_generic(client, recovered)).status == 200
    await session.refresh(case)
    assert case.status == "recovered"
    member = await session.get(Member, case.member_id)
    assert (member.external_id, member.language) == ("crm-42", "de")


async def test_generic_plan_interval_is_stored_and_checked(client, session, clock):
    yearly = _generic("failed", "y1", "2026-01-05T09:00:00Z", amount=34800, currency="EUR",
                      subscription={"id": "plan-9", "interval": "year"})
    assert (await post_generic(client, yearly)).status == 200
    sub = await session.scalar(select(Subscription))
    assert (sub.interval, sub.interval_count) == ("year", 1)
    for bad, reason in ((
            {"id": "plan-9", "interval": "year", "interval_count": 5}, "every 5 years"),
            ({"id": "plan-9", "interval": "fortnight"}, "subscription.interval")):
        body = _generic("failed", "y2", "2026-01-05T09:00:00Z", amount=100, currency="EUR",
                        subscription=bad)
        response = await post_generic(client, body)
        assert response.status == 200
        assert reason in (await response.json())["reason"]
    assert await count_rows(session, PaymentEvent) == 1
    assert await count_rows(session, RejectedEvent) == 2


async def test_generic_without_invoice_groups_by_subscription(client, session, clock):
    for number, day in enumerate((5, 8), start=1):
        body = _generic("failed", f"g{number}", f"2026-01-0{day}T09:00:00Z", amount=900,
                        currency="USD")
        assert (await post_generic(client, body)).status == 200
    case = await session.scalar(select(RecoveryCase))
    assert case.attempt_count == 2
    assert await count_rows(session, RecoveryCase) == 1


async def test_generic_refuses_bad_signature_missing_fields_and_stale(client, session):
    body = json.dumps(_generic("failed", "x1", "2026-01-05T09:00:00Z")).encode()
    missing = await post_generic(client, body)
    assert missing.status == 200
    assert (await missing.json()) == {"status": "rejected",
                                      "reason": "amount and currency are required for failed"}
    forged = await client.post("/api/v1/events", data=body,
                               headers={"PayRescue-Signature": "t=1,v1=00"})
    stale = await post_generic(client, body, timestamp=int(time.time()) - 600)
    future = await post_generic(client, body, timestamp=int(time.time()) + 3600)
    naive = await post_generic(client, _generic("canceled", "x2", "2026-01-05T09:00:00"))
    assert (forged.status, stale.status, future.status) == (400, 400, 400)
    assert (naive.status, (await naive.json())["status"]) == (200, "rejected")
    assert "occurred_at" in (await naive.json())["reason"]
    assert await count_rows(session, PaymentEvent) == 0


async def test_oversized_body_is_413_json(client):
    body = b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    for path in ("/webhooks/stripe", "/api/v1/events", "/webhooks/memberpress"):
        response = await client.post(path, data=io.BytesIO(body), headers={
            "MEMBERPRESS-WEBHOOK-KEY": MP_KEY,
            "Stripe-Signature": "t=1,v1=00", "PayRescue-Signature": "t=1,v1=00"})
        assert response.status == 413
        assert "1 MiB" in (await response.json())["error"]
