"""Signed events that do not make sense: kept as `rejected` with the reason and answered 200
(the provider stops retrying), never a 500 and never a false "database unavailable"."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from payrescue.db.models import PaymentEvent, RejectedEvent
from tests.billing.conftest import (
    count_rows,
    invoice,
    mp_transaction,
    post_generic,
    post_mp,
    post_stripe,
    sign_stripe,
    stripe_event,
)


def _failed_invoice(clock, **changes):  # noqa: ANN001, ANN003, ANN202
    obj = invoice()
    for path, value in changes.items():
        target = obj
        *parents, last = path.split("__")
        for part in parents:
            target = target[part] if not isinstance(target, list) else target[int(part)]
        target[last] = value
    return stripe_event("invoice.payment_failed", obj, clock.now())


async def _assert_rejected(response, session, reason: str) -> None:  # noqa: ANN001
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["status"] == "rejected"
    assert reason in answer["reason"]
    assert await count_rows(session, PaymentEvent) == 0
    kept = (await session.scalars(select(RejectedEvent))).all()
    assert [row.reason for row in kept] == [answer["reason"]]


async def test_a_huge_amount_is_rejected_not_a_database_outage(client, session, clock, caplog):
    response = await post_stripe(client, _failed_invoice(clock, amount_remaining=10**20,
                                                         amount_due=10**20))
    await _assert_rejected(response, session, "amount_remaining: out of range")
    assert "database unavailable" not in caplog.text


@pytest.mark.parametrize("change, reason", [
    ({"created": 10**400}, "created: timestamp out of range"),
    ({"created": -1}, "created: timestamp out of range"),
    ({"next_payment_attempt": 10**15}, "next_payment_attempt: timestamp out of range"),
])
async def test_stripe_timestamps_out_of_range(client, session, clock, change, reason):
    event = _failed_invoice(clock)
    if "next_payment_attempt" in change:
        event["data"]["object"].update(change)
    else:
        event.update(change)
    await _assert_rejected(await post_stripe(client, event), session, reason)


async def test_odd_but_harmless_stripe_fields_are_ignored(client, session, clock):
    """A superscript digit, a period ending in 10**400 and a locale that is a number are
    no reason to refuse the failure itself: the plan's interval stays unknown."""
    event = _failed_invoice(clock, customer_preferred_locales=[123])
    line = event["data"]["object"]["lines"]["data"][0]
    line["period"]["end"] = 10**400
    line["price"] = {"recurring": {"interval": "month", "interval_count": "²"}}
    response = await post_stripe(client, event)
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "processed"
    assert await count_rows(session, RejectedEvent) == 0


async def test_memberpress_date_beyond_utc_is_rejected(client, session, clock):
    body = mp_transaction("transaction-failed", 9, created=clock.now())
    body["data"]["created_at"] = "0001-01-01T00:00:00+01:00"
    await _assert_rejected(await post_mp(client, body), session, "data.created_at: out of range")


async def test_memberpress_superscript_period_is_no_interval(client, session, clock):
    body = mp_transaction("transaction-failed", 9, created=clock.now())
    body["data"]["subscription"]["period"] = "²"
    body["data"]["membership"]["period"] = "²"
    response = await post_mp(client, body)
    assert (response.status, (await response.json())["status"]) == (200, "processed")


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                    "1900-01-01T00:00:00Z"])
async def test_generic_occurred_at_out_of_range(client, session, moment):
    body = {"id": "e1", "type": "failed", "occurred_at": moment, "amount": 100,
            "currency": "EUR", "member": {"email": "lea@example.org"},
            "subscription": {"id": "plan-7"}}
    await _assert_rejected(await post_generic(client, body), session, "occurred_at")


async def test_the_raw_body_of_a_rejected_event_is_kept_for_the_admin(client, session, clock):
    event = _failed_invoice(clock, currency="euro")
    body = json.dumps(event).encode()
    response = await client.post("/webhooks/stripe", data=body,
                                 headers={"Stripe-Signature": sign_stripe(body)})
    await _assert_rejected(response, session, "invoice.currency")
    kept = await session.scalar(select(RejectedEvent))
    assert (kept.provider, kept.event_ref, kept.seen_at) == ("stripe", event["id"], None)
    assert json.loads(kept.body) == event


@pytest.mark.parametrize("header", ["t=1,v1=é", "v1=é", "t=é", "t=99999999999999999999,v1=00"])
async def test_non_ascii_or_absurd_signatures_are_400(client, session, header):
    for path, name in (("/webhooks/stripe", "Stripe-Signature"),
                       ("/api/v1/events", "PayRescue-Signature"),
                       ("/webhooks/memberpress", "MEMBERPRESS-WEBHOOK-KEY")):
        response = await client.post(path, data=b"{}", headers={name: header})
        assert response.status in {400, 401}, (path, await response.text())
    assert await count_rows(session, RejectedEvent) == 0
