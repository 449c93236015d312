"""`payrescue simulate …`: send a correctly signed provider event to a running service, the
way `stripe trigger` does, so the whole flow can be tried without a real payment.

The events take the real HTTP path (signature check, dedupe, cases). For "recovered" and
"canceled" the member's current case and subscription are read from the database the
service uses, so the event names the same invoice and subscription.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import stripe
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.billing import cases, generic, memberpress
from payrescue.config import Settings
from payrescue.db.models import Member, RecoveryCase, Subscription

ACTIONS = ("failed-payment", "recovered", "canceled", "card-expiring")
PROVIDERS = ("stripe", "memberpress", "generic")
SIMULATED_API_VERSION = "2024-06-20"  # the shape whose invoice still names its payment


class SimulationError(Exception):
    """Nothing was sent; the message says why in one line."""


@dataclass
class Target:
    """Who and what the simulated event is about."""

    email: str
    customer_id: str
    subscription_ref: str
    invoice_ref: str
    amount_minor: int
    currency: str
    attempt: int = 1


def default_provider(settings: Settings) -> str:
    for provider, secret in (("stripe", settings.stripe_webhook_secret),
                             ("memberpress", settings.memberpress_webhook_key),
                             ("generic", settings.generic_api_secret)):
        if secret is not None:
            return provider
    raise SimulationError("no provider configured: set PAYRESCUE_STRIPE_WEBHOOK_SECRET, "
                          "PAYRESCUE_MEMBERPRESS_WEBHOOK_KEY or PAYRESCUE_GENERIC_API_SECRET")


def _stable(prefix: str, email: str, digits: bool = False) -> str:
    digest = hashlib.sha256(email.encode()).hexdigest()
    return f"{prefix}{int(digest[:8], 16) % 10**7}" if digits else f"{prefix}{digest[:14]}"


async def find_target(session: AsyncSession, provider: str, action: str, email: str,
                      amount_minor: int, currency: str) -> Target:
    email = email.strip().lower()
    member = await session.scalar(select(Member).where(Member.email == email))
    numeric = provider == "memberpress"
    customer = {"stripe": member.stripe_customer_id, "memberpress":
                member.memberpress_member_id, "generic": member.external_id}.get(
        provider) if member else None
    target = Target(email, customer or _stable("" if numeric else "cus_sim_", email, numeric),
                    _stable("" if numeric else "sub_sim_", email, numeric),
                    f"in_sim_{secrets.token_hex(6)}" if not numeric
                    else str(secrets.randbelow(10**8)), amount_minor, currency)
    if member is None:
        if action != "failed-payment":
            raise SimulationError(f"no member with the e-mail address {email}; "
                                  "simulate a failed payment first")
        return target
    subscription = await session.scalar(select(Subscription).where(
        Subscription.member_id == member.id, Subscription.provider == provider)
        .order_by(Subscription.id.desc()).limit(1))
    if subscription is not None:
        target.subscription_ref = subscription.external_id
    case = await session.scalar(select(RecoveryCase).where(
        RecoveryCase.member_id == member.id, RecoveryCase.provider == provider,
        RecoveryCase.status == cases.OPEN).order_by(RecoveryCase.id.desc()).limit(1))
    if case is not None:
        target.amount_minor, target.currency = case.amount_minor, case.currency
        target.attempt = case.attempt_count + 1
        if action in {"recovered", "failed-payment"} and provider == "stripe":
            target.invoice_ref = case.invoice_ref
    elif action == "recovered":
        raise SimulationError(f"the member has no open {provider} case to recover")
    return target


# --- event bodies ------------------------------------------------------------------------


def stripe_events(action: str, target: Target, reason: str, now: datetime
                  ) -> list[dict[str, Any]]:
    created = int(now.timestamp())

    def event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"evt_sim_{secrets.token_hex(8)}", "object": "event",
                "api_version": SIMULATED_API_VERSION, "created": created,
                "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None}, "type": event_type}

    intent_id = f"pi_sim_{secrets.token_hex(6)}"
    invoice = {
        "id": target.invoice_ref, "object": "invoice", "customer": target.customer_id,
        "customer_email": target.email, "subscription": target.subscription_ref,
        "amount_due": target.amount_minor, "amount_paid": 0,
        "amount_remaining": target.amount_minor, "currency": target.currency.lower(),
        "attempt_count": target.attempt, "billing_reason": "subscription_cycle", "status": "open",
        "next_payment_attempt": created + 3 * 86400, "payment_intent": intent_id,
        "charge": None, "hosted_invoice_url": None,
    }
    if action == "failed-payment":
        intent = {"id": intent_id, "object": "payment_intent", "customer": target.customer_id,
                  "invoice": target.invoice_ref, "amount": target.amount_minor,
                  "currency": target.currency.lower(), "status": "requires_payment_method",
                  "last_payment_error": {"type": "card_error", "code": "card_declined",
                                         "decline_code": reason}}
        return [event("invoice.payment_failed", invoice),
                event("payment_intent.payment_failed", intent)]
    if action == "recovered":
        paid = {**invoice, "status": "paid", "amount_paid": target.amount_minor,
                "amount_remaining": 0, "next_payment_attempt": None}
        return [event("invoice.paid", paid)]
    if action == "canceled":
        return [event("customer.subscription.deleted", {
            "id": target.subscription_ref, "object": "subscription",
            "customer": target.customer_id, "status": "canceled", "ended_at": created,
            "canceled_at": created})]
    return [event("customer.source.expiring", {
        "id": f"card_sim_{secrets.token_hex(6)}", "object": "card",
        "customer": target.customer_id, "exp_month": now.month, "exp_year": now.year,
        "last4": "4242", "brand": "Visa"})]


def memberpress_events(action: str, target: Target, now: datetime) -> list[dict[str, Any]]:
    member = {"id": _number(target.customer_id), "email": target.email,
              "first_name": "", "last_name": ""}
    subscription = {"id": _number(target.subscription_ref), "subscr_id":
                    f"sub_{target.subscription_ref}", "status": "active", "member": member}
    total = f"{target.amount_minor / 100:.2f}"
    transaction = {"id": _number(target.invoice_ref), "amount": total, "total": total,
                   "trans_num": f"mp-txn-{target.invoice_ref}", "txn_type": "payment",
                   "created_at": now.strftime("%Y-%m-%d %H:%M:%S"), "member": member,
                   "subscription": subscription}
    if action == "failed-payment":
        return [{"event": "recurring-transaction-failed", "type": "transaction",
                 "data": {**transaction, "status": "failed"}}]
    if action == "recovered":
        return [{"event": "recurring-transaction-completed", "type": "transaction",
                 "data": {**transaction, "status": "complete"}}]
    if action == "canceled":
        return [{"event": "subscription-stopped", "type": "subscription",
                 "data": {**subscription, "status": "cancelled"}}]
    return [{"event": "before-cc-expires-reminder", "type": "subscription",
             "data": subscription}]


def _number(ref: str) -> int | str:
    """MemberPress sends its ids as numbers."""
    return int(ref) if ref.isdigit() else ref


def generic_events(action: str, target: Target, reason: str, now: datetime,
                   update_url: str | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {
        "id": f"sim-{secrets.token_hex(8)}",
        "type": {"failed-payment": "failed"}.get(action, action.replace("-", "_")),
        "occurred_at": now.isoformat(), "member": {"email": target.email},
        "subscription": {"id": target.subscription_ref},
    }
    if action == "failed-payment":
        body.update(amount=target.amount_minor, currency=target.currency,
                    decline_code=reason)
        if update_url:
            body["update_url"] = update_url
    return [body]


# --- sending ------------------------------------------------------------------------------


def signed_request(provider: str, event: dict[str, Any], settings: Settings
                   ) -> tuple[str, bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json"}
    if provider == "stripe":
        secret = _secret(settings.stripe_webhook_secret, "STRIPE_WEBHOOK_SECRET").split(",")[0]
        headers["Stripe-Signature"] = stripe.WebhookSignature.generate_signature_header(
            body.decode(), secret.strip())
        return "/webhooks/stripe", body, headers
    if provider == "memberpress":
        headers[memberpress.KEY_HEADER] = _secret(settings.memberpress_webhook_key,
                                                  "MEMBERPRESS_WEBHOOK_KEY")
        return "/webhooks/memberpress", body, headers
    secret = _secret(settings.generic_api_secret, "GENERIC_API_SECRET")
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    headers[generic.SIGNATURE_HEADER] = f"t={t},v1={mac}"
    return "/api/v1/events", body, headers


def _secret(value: Any, name: str) -> str:
    if value is None:
        raise SimulationError(f"PAYRESCUE_{name} is not set; the service would refuse the event")
    return value.get_secret_value()


async def send(base_url: str, provider: str, events: list[dict[str, Any]],
               settings: Settings) -> list[tuple[str, int, str]]:
    """POST each event in order; returns (event name, HTTP status, response text) per event."""
    results = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for event in events:
            path, body, headers = signed_request(provider, event, settings)
            try:
                async with http.post(base_url.rstrip("/") + path, data=body,
                                     headers=headers) as response:
                    results.append((event.get("event") or event.get("type") or "",
                                    response.status, await response.text()))
            except aiohttp.ClientError as exc:
                raise SimulationError(f"cannot reach the service at {base_url}: "
                                      f"{exc.__class__.__name__}") from exc
    return results


def build_events(provider: str, action: str, target: Target, reason: str, now: datetime,
                 update_url: str | None = None) -> list[dict[str, Any]]:
    if action not in ACTIONS:
        raise SimulationError(f"unknown action {action!r}; choose from {', '.join(ACTIONS)}")
    if provider == "stripe":
        return stripe_events(action, target, reason, now)
    if provider == "memberpress":
        return memberpress_events(action, target, now)
    return generic_events(action, target, reason, now, update_url)


async def trigger(session: AsyncSession, settings: Settings, *, action: str, email: str,
                  base_url: str, now: datetime, reason: str = "insufficient_funds",
                  provider: str | None = None, amount_minor: int = 2900,
                  currency: str = "EUR", update_url: str | None = None
                  ) -> list[tuple[str, int, str]]:
    """One call for `payrescue simulate` and the demo page's buttons: find the member's case,
    build, sign and send.

    `session` only reads; the running service at `base_url` writes what the events cause.
    """
    chosen = provider or default_provider(settings)
    target = await find_target(session, chosen, action, email, amount_minor, currency)
    events = build_events(chosen, action, target, reason, now, update_url)
    return await send(base_url, chosen, events, settings)
