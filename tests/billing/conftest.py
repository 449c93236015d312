"""Fixtures for payment events: a billing app over the test database, a Stripe stand-in,
and payloads shaped like the providers send them (signed the way they sign)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from payrescue.app import MAX_BODY_BYTES
from payrescue.billing.http import setup_billing
from payrescue.clock import FakeClock
from payrescue.config import Settings, load_settings
from payrescue.db import create_sessionmaker
from payrescue.edge import setup_edge
from payrescue.events import Bus
from payrescue.keys import BUS, CLOCK, ENGINE, SESSIONMAKER, SETTINGS
from tests.billing.stripe_standin import STATE, StandinState, create_standin
from tests.conftest import TEST_SECRET

WHSEC = "whsec_test_0123456789abcdef"
MP_KEY = "mp-key-0123456789"
API_SECRET = "generic-api-secret-0123456789"
STRIPE_KEY = "sk_test_standin_0123456789"
_ids = itertools.count(1)


@pytest.fixture
async def standin() -> AsyncIterator[tuple[TestServer, StandinState]]:
    server = TestServer(create_standin())
    await server.start_server()
    yield server, server.app[STATE]
    await server.close()


@pytest.fixture
def billing_settings(tmp_path: Path, database_url: str,
                     standin: tuple[TestServer, StandinState]) -> Settings:
    server, _ = standin
    return load_settings(
        data_dir=tmp_path, database_url=database_url, secret_key=TEST_SECRET,
        public_base_url="http://127.0.0.1:8080", bot_username="payrescue_test_bot",
        stripe_webhook_secret=WHSEC, stripe_api_key=STRIPE_KEY,
        stripe_api_base=str(server.make_url("")).rstrip("/"),
        memberpress_webhook_key=MP_KEY,
        memberpress_account_url="https://members.example.org/account/",
        memberpress_currency="EUR", generic_api_secret=API_SECRET, admin_chat_id=-100500,
    )


def billing_app(settings: Settings, engine: AsyncEngine, clock: FakeClock, bus: Bus
                ) -> web.Application:
    """The billing part alone, wired like `payrescue.app.init_app` wires it."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS], app[CLOCK], app[BUS] = settings, clock, bus
    app[ENGINE], app[SESSIONMAKER] = engine, create_sessionmaker(engine)
    setup_edge(app)
    setup_billing(app)
    return app


@pytest.fixture
def bus() -> Bus:
    return Bus()


@pytest.fixture
async def client(billing_settings: Settings, engine: AsyncEngine, clock: FakeClock, bus: Bus
                 ) -> AsyncIterator[TestClient]:
    server = TestServer(billing_app(billing_settings, engine, clock, bus))
    async with TestClient(server) as test_client:
        yield test_client


async def count_rows(session: AsyncSession, model: type) -> int:
    return await session.scalar(select(func.count()).select_from(model))


# --- Stripe -------------------------------------------------------------------------------


def stripe_event(event_type: str, obj: dict[str, Any], created: datetime, *,
                 event_id: str | None = None, api_version: str = "2025-03-31.basil",
                 previous: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": event_id or f"evt_{next(_ids):06d}test", "object": "event",
        "api_version": api_version, "created": int(created.timestamp()), "data": data,
        "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": event_type,
    }


def invoice(invoice_id: str = "in_1Abc", *, customer: str = "cus_Anna",
            email: str = "anna@example.org", name: str = "Anna Schmidt",
            subscription: str = "sub_Anna", amount: int = 2900, currency: str = "eur",
            attempt_count: int = 1, next_attempt: datetime | None = None,
            status: str = "open", billing_reason: str = "subscription_cycle",
            basil: bool = True, payment_intent: Any = None, paid: bool = False,
            every: tuple[str, int] = ("month", 1)) -> dict[str, Any]:
    """An Invoice in the shape of the API version (basil: no payment_intent/charge, and its
    lines name their price only by id)."""
    line: dict[str, Any] = {"id": "il_1", "object": "line_item", "amount": amount,
                            "currency": currency, "description": "1 × Gold membership",
                            "period": _period(*every)}
    if basil:
        line["pricing"] = {"type": "price_details", "unit_amount_decimal": str(amount),
                           "price_details": {"price": "price_1", "product": "prod_1"}}
        line["parent"] = {"type": "subscription_item_details", "subscription_item_details": {
            "subscription": subscription, "subscription_item": "si_1", "proration": False}}
    else:
        line.update(proration=False, type="subscription", subscription=subscription,
                    price={"id": "price_1", "object": "price", "unit_amount": amount,
                           "recurring": _recurring(*every)})
    obj: dict[str, Any] = {
        "id": invoice_id, "object": "invoice", "account_country": "DE",
        "amount_due": amount, "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount, "attempt_count": attempt_count,
        "attempted": True, "billing_reason": billing_reason, "collection_method":
        "charge_automatically", "currency": currency, "customer": customer,
        "customer_email": email, "customer_name": name, "hosted_invoice_url":
        f"https://invoice.stripe.com/i/acct_test/{invoice_id}",
        "lines": {"object": "list", "data": [line]},
        "livemode": False, "next_payment_attempt":
        int(next_attempt.timestamp()) if next_attempt else None,
        "status": "paid" if paid else status,
    }
    if basil:
        obj["parent"] = {"type": "subscription_details", "quote_details": None,
                         "subscription_details": {"metadata": {}, "subscription": subscription}}
    else:
        obj["subscription"] = subscription
        obj["payment_intent"] = payment_intent
        obj["charge"] = None
    return obj


def _recurring(interval: str, count: int) -> dict[str, Any]:
    return {"interval": interval, "interval_count": count, "usage_type": "licensed"}


def _period(interval: str, count: int) -> dict[str, int]:
    """An invoice line's billing period, beginning 5 January 2026."""
    start = datetime(2026, 1, 5, tzinfo=UTC)
    if interval in ("month", "year"):
        months = count * (12 if interval == "year" else 1)
        end = start.replace(year=2026 + (months // 12), month=1 + months % 12)
    else:
        end = start + timedelta(days=count * (7 if interval == "week" else 1))
    return {"start": int(start.timestamp()), "end": int(end.timestamp())}


def subscription(sub_id: str = "sub_Anna", *, status: str, customer: str = "cus_Anna",
                 ended_at: datetime | None = None, every: tuple[str, int] = ("month", 1)
                 ) -> dict[str, Any]:
    return {
        "id": sub_id, "object": "subscription", "customer": customer, "status": status,
        "canceled_at": int(ended_at.timestamp()) if ended_at else None,
        "ended_at": int(ended_at.timestamp()) if ended_at else None,
        "items": {"object": "list", "data": [{"id": "si_1", "object": "subscription_item",
                                              "price": {"id": "price_1", "nickname": "Gold",
                                                        "unit_amount": 2900,
                                                        "currency": "eur",
                                                        "recurring": _recurring(*every)}}]},
    }


def sign_stripe(body: bytes, secret: str = WHSEC, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp if timestamp is not None else int(time.time()))


async def post_stripe(client: TestClient, event: dict[str, Any], **sign: Any):  # noqa: ANN201
    body = json.dumps(event).encode()
    return await client.post("/webhooks/stripe", data=body, headers={
        "Stripe-Signature": sign_stripe(body, **sign), "Content-Type": "application/json"})


# --- MemberPress and the generic API --------------------------------------------------------


def mp_member(member_id: int = 56, email: str = "max@example.org") -> dict[str, Any]:
    return {"id": member_id, "email": email, "username": "max", "nicename": "max",
            "first_name": "Max", "last_name": "Müller", "display_name": "max",
            "registered_at": "2025-04-18 16:47:14"}


def mp_membership(period_type: str = "months") -> dict[str, Any]:
    return {"id": 15, "title": "Gold", "price": "29.00", "period": "1",
            "period_type": period_type}


def mp_transaction(event: str, txn_id: int, *, created: datetime, total: str = "29.00",
                   status: str = "failed", sub_id: int = 77,
                   member: dict[str, Any] | None = None,
                   period_type: str = "months", renewal: bool = True,
                   expires: datetime | None = None, sub_status: str = "active"
                   ) -> dict[str, Any]:
    """A transaction as MemberPress's Developer Tools sends it: ids and flags often as
    strings, `rebill` / `subscription_payment_index` saying whether it renews, and the
    subscription nested with its `txn_count` (transactions it had before)."""
    expires = expires or created + timedelta(days=31)
    return {"event": event, "type": "transaction", "data": {
        "id": txn_id, "amount": total, "total": total, "tax_amount": "0.00",
        "tax_rate": "0.000", "tax_desc": "", "tax_class": "standard",
        "trans_num": f"mp-txn-{txn_id}", "status": status, "txn_type": "payment",
        "gateway": "stripe_gateway", "prorated": "0",
        "created_at": created.strftime("%Y-%m-%d %H:%M:%S"),
        "expires_at": expires.strftime("%Y-%m-%d %H:%M:%S"), "corporate_account_id": "0",
        "parent_transaction_id": "0", "tax_compound": "0", "tax_shipping": "1",
        "response": None, "rebill": renewal, "subscription_payment_index": 2 if renewal else 1,
        "membership": mp_membership(period_type),
        "member": member or mp_member(),
        "subscription": {"id": sub_id, "subscr_id": f"sub_{sub_id}", "status": sub_status,
                         "period": "1", "period_type": period_type,
                         "txn_count": "1" if renewal else "0",
                         "created_at": "2025-04-18 16:47:14"},
    }}


def mp_subscription(event: str, sub_id: int = 77, status: str = "cancelled", *,
                    member: dict[str, Any] | None = None, txn_count: int = 3,
                    card: tuple[str, int, int] = ("4242", 2, 2026)) -> dict[str, Any]:
    """A subscription as Developer Tools sends it (no event time of its own)."""
    last4, month, year = card
    return {"event": event, "type": "subscription", "data": {
        "id": sub_id, "subscr_id": f"sub_{sub_id}", "gateway": "stripe_gateway",
        "price": "29.00", "total": "29.00", "tax_amount": "0.00", "status": status,
        "period": "1", "period_type": "months", "limit_cycles": "0", "trial": "0",
        "created_at": "2025-04-18 16:47:14", "cc_last4": last4, "cc_exp_month": str(month),
        "cc_exp_year": str(year), "txn_count": str(txn_count),
        "member": member or mp_member(), "membership": mp_membership()}}


async def post_mp(client: TestClient, body: dict[str, Any], key: str = MP_KEY):  # noqa: ANN201
    return await client.post("/webhooks/memberpress", data=json.dumps(body).encode(),
                             headers={"MEMBERPRESS-WEBHOOK-KEY": key,
                                      "Content-Type": "application/json"})


def sign_generic(body: bytes, secret: str = API_SECRET, timestamp: int | None = None) -> str:
    t = timestamp if timestamp is not None else int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


async def post_generic(client: TestClient, event: dict[str, Any] | bytes, **sign: Any
                       ):  # noqa: ANN201
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    return await client.post("/api/v1/events", data=body, headers={
        "PayRescue-Signature": sign_generic(body, **sign), "Content-Type": "application/json"})
