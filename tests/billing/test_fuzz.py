"""Fuzzing the three endpoints: whatever arrives, never a 500, nothing stored on rejection."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from payrescue.db.models import PaymentEvent, RejectedEvent
from tests.billing.conftest import MP_KEY, sign_generic, sign_stripe

FUZZ = settings(max_examples=50, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
_event_like = st.fixed_dictionaries({
    "id": st.one_of(st.text(max_size=30), st.integers(), st.none()),
    "type": st.sampled_from(["invoice.payment_failed", "invoice.paid", "failed", "recovered",
                             "transaction-failed", "charge.failed", "x"]),
    "event": st.sampled_from(["transaction-failed", "subscription-stopped",
                              "member-account-updated", "nope"]),
    "created": st.one_of(st.integers(-10**12, 10**12), st.text(max_size=5)),
    "occurred_at": st.one_of(st.text(max_size=30), st.just("2026-01-05T09:00:00Z")),
    "data": st.one_of(_json, st.fixed_dictionaries({"object": _json, "id": _json})),
    "member": _json, "subscription": _json, "amount": _json, "currency": _json,
})
_bodies = st.one_of(st.binary(max_size=200), _event_like.map(lambda d: json.dumps(d).encode()),
                    _json.map(lambda d: json.dumps(d).encode()))


async def _stored(session) -> int:  # noqa: ANN001
    return await session.scalar(select(func.count()).select_from(PaymentEvent))


def _headers(path: str, body: bytes) -> dict[str, str]:
    if path == "/webhooks/stripe":
        try:
            return {"Stripe-Signature": sign_stripe(body)}
        except UnicodeDecodeError:
            return {"Stripe-Signature": "t=1,v1=00"}
    if path == "/api/v1/events":
        return {"PayRescue-Signature": sign_generic(body)}
    return {"MEMBERPRESS-WEBHOOK-KEY": MP_KEY}


@FUZZ
@given(body=_bodies, path=st.sampled_from(["/webhooks/stripe", "/webhooks/memberpress",
                                           "/api/v1/events"]))
async def test_signed_garbage_never_breaks_the_endpoints(client, session, body, path):
    before = await _stored(session)
    response = await client.post(path, data=body, headers=_headers(path, body))
    assert response.status in {200, 400}, await response.text()
    if response.status == 400:
        assert "error" in await response.json()
        assert await _stored(session) == before


@FUZZ
@given(body=_bodies, header=st.text(max_size=80))
async def test_unsigned_garbage_is_refused(client, session, body, header):
    for path, name in (("/webhooks/stripe", "Stripe-Signature"),
                       ("/api/v1/events", "PayRescue-Signature"),
                       ("/webhooks/memberpress", "MEMBERPRESS-WEBHOOK-KEY")):
        try:
            response = await client.post(path, data=body, headers={name: header})
        except ValueError:  # a header aiohttp itself refuses to send
            continue
        assert response.status in {400, 401}, await response.text()
    assert await _stored(session) == 0


async def test_signed_json_a_database_cannot_store_is_kept_as_rejected(client, session):
    tricky = [b'{"id": "evt_1", "type": "invoice.paid", "created": NaN}',
              b'{"id": "evt_\\ud800", "type": "x", "event": "transaction-failed"}',
              b'{"id": "evt_\\u0000", "type": "x", "event": "transaction-failed"}',
              json.dumps({"id": "evt_long", "type": "invoice.payment_failed", "created": 1,
                          "data": {"object": {"id": "in_1", "customer": "c" * 101,
                                              "currency": "eur", "amount_due": 1}}}).encode()]
    for body in tricky:
        for path in ("/webhooks/stripe", "/webhooks/memberpress", "/api/v1/events"):
            response = await client.post(path, data=body, headers=_headers(path, body))
            # signed, so the provider's: 200 stops its retries, an admin sees the reason
            assert response.status == 200, (path, body[:40], await response.text())
            assert (await response.json())["status"] == "rejected"
    assert await _stored(session) == 0
    kept = await session.scalar(select(func.count()).select_from(RejectedEvent))
    assert kept == len(tricky) * 3


async def test_json_nested_too_deeply_is_refused_before_anything_reads_it(client, session):
    for depth in (3000, 100_000):
        body = b"[" * depth + b"]" * depth
        for path in ("/webhooks/stripe", "/webhooks/memberpress", "/api/v1/events"):
            response = await client.post(path, data=body, headers=_headers(path, body))
            assert response.status == 400, (path, await response.text())
            assert "nested deeper" in (await response.json())["error"]
    assert await session.scalar(select(func.count()).select_from(RejectedEvent)) == 0


@FUZZ
@given(token=st.text(alphabet=st.characters(blacklist_categories=["Cs"],
                                            blacklist_characters="/"), min_size=1, max_size=60)
       .filter(lambda t: t.strip(".") and t != "thanks"))  # "/u/." is a different path
async def test_any_link_token_gets_a_friendly_page(client, token):
    from urllib.parse import quote

    response = await client.get("/u/" + quote(token, safe=""))
    assert response.status in {404, 410}, token
    assert "text/html" in response.headers["Content-Type"]
