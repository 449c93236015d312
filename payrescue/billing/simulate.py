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
from payrescue.billing import stripe_events as stripe_webhooks
from payrescue.config import Settings
from payrescue.db.models import Member, RecoveryCase, Subscription

ACTIONS = ("failed-payment", "recovered", "canceled", "card-expiring", "event")
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
        if action not in ("failed-payment", "event"):
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
    if case is None and action == "event":  # e.g. a refund of the payment that recovered it
        case = await session.scalar(select(RecoveryCase).where(
            RecoveryCase.member_id == member.id, RecoveryCase.provider == provider)
            .order_by(RecoveryCase.id.desc()).limit(1))
    if case is not None:
        target.amount_minor, target.currency = case.amount_minor, case.currency
        target.attempt = case.attempt_count + 1
        if action in {"recovered", "failed-payment", "event"} and provider == "stripe":
            target.invoice_ref = case.invoice_ref
    elif action == "recovered":
        raise SimulationError(f"the member has no open {provider} case to recover")
    return target


# --- event bodies ------------------------------------------------------------------------


def stripe_events(action: str, target: Target, reason: str, now: datetime
                  ) -> list[dict[str, Any]]:
    types = {"failed-payment": ["invoice.payment_failed", "payment_intent.payment_failed"],
             "recovered": ["invoice.paid"], "canceled": ["customer.subscription.deleted"],
             "card-expiring": ["customer.source.expiring"]}[action]
    intent_id = f"pi_sim_{secrets.token_hex(6)}"
    return [stripe_event(name, target, reason, now, intent_id) for name in types]


_INVOICE_STATUS = {"invoice.paid": "paid", "invoice.payment_succeeded": "paid",
                   "invoice.marked_uncollectible": "uncollectible", "invoice.voided": "void"}
_SUBSCRIPTION_STATUS = {"customer.subscription.updated": "past_due",
                        "customer.subscription.paused": "paused",
                        "customer.subscription.resumed": "active",
                        "customer.subscription.deleted": "canceled"}


def stripe_event(event_type: str, target: Target, reason: str, now: datetime,
                 intent_id: str | None = None) -> dict[str, Any]:
    """One event of any type PayRescue reads, in Stripe's shape, about `target`."""
    if event_type not in stripe_webhooks.EVENT_TYPES:
        raise SimulationError(f"PayRescue does not read the Stripe event {event_type!r}; see "
                              "docs/billing.md for the ones it does")
    created = int(now.timestamp())
    intent_id = intent_id or f"pi_sim_{secrets.token_hex(6)}"
    decline = {"type": "card_error", "code": "card_declined", "decline_code": reason}
    card = {"brand": "visa", "exp_month": now.month, "exp_year": now.year, "last4": "4242"}
    if event_type.startswith("invoice."):
        status = _INVOICE_STATUS.get(event_type, "open")
        paid = target.amount_minor if status == "paid" else 0
        obj: dict[str, Any] = {
            "id": target.invoice_ref, "object": "invoice", "customer": target.customer_id,
            "customer_email": target.email, "subscription": target.subscription_ref,
            "amount_due": target.amount_minor, "amount_paid": paid,
            "amount_remaining": target.amount_minor - paid,
            "currency": target.currency.lower(), "attempt_count": target.attempt,
            "billing_reason": "subscription_cycle", "status": status,
            "collection_method": "send_invoice" if event_type == "invoice.overdue"
            else "charge_automatically",
            "next_payment_attempt": created + 3 * 86400 if status == "open" else None,
            "payment_intent": intent_id, "charge": None, "hosted_invoice_url": None,
        }
    elif event_type.startswith("customer.subscription."):
        obj = {"id": target.subscription_ref, "object": "subscription",
               "customer": target.customer_id, "status": _SUBSCRIPTION_STATUS[event_type]}
        if obj["status"] == "canceled":
            obj.update(ended_at=created, canceled_at=created)
    elif event_type == "payment_intent.payment_failed":
        obj = {"id": intent_id, "object": "payment_intent", "customer": target.customer_id,
               "invoice": target.invoice_ref, "amount": target.amount_minor,
               "currency": target.currency.lower(), "status": "requires_payment_method",
               "last_payment_error": decline}
    elif event_type == "charge.failed":
        obj = {"id": f"ch_sim_{secrets.token_hex(6)}", "object": "charge",
               "customer": target.customer_id, "invoice": target.invoice_ref,
               "amount": target.amount_minor, "currency": target.currency.lower(),
               "status": "failed", "failure_code": "card_declined",
               "outcome": {"type": "issuer_declined", "reason": reason}}
    elif event_type == "charge.refunded":
        obj = {"id": f"ch_sim_{secrets.token_hex(6)}", "object": "charge",
               "customer": target.customer_id, "invoice": target.invoice_ref,
               "amount": target.amount_minor, "amount_refunded": target.amount_minor,
               "currency": target.currency.lower(), "status": "succeeded", "paid": True,
               "refunded": True}
    elif event_type == "charge.dispute.created":
        obj = {"id": f"dp_sim_{secrets.token_hex(6)}", "object": "dispute",
               "amount": target.amount_minor, "currency": target.currency.lower(),
               "charge": {"id": f"ch_sim_{secrets.token_hex(6)}", "object": "charge",
                          "customer": target.customer_id},
               "reason": "fraudulent", "status": "needs_response",
               "evidence": {"customer_email_address": target.email}}
    elif event_type == "customer.source.expiring":
        obj = {"id": f"card_sim_{secrets.token_hex(6)}", "object": "card",
               "customer": target.customer_id, **card}
    else:  # the card network updated the card (either name)
        obj = {"id": f"pm_sim_{secrets.token_hex(6)}", "object": "payment_method",
               "customer": target.customer_id, "type": "card", "card": card,
               "billing_details": {"email": target.email}}
    return {"id": f"evt_sim_{secrets.token_hex(8)}", "object": "event",
            "api_version": SIMULATED_API_VERSION, "created": created,
            "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": event_type}


def memberpress_events(action: str, target: Target, now: datetime) -> list[dict[str, Any]]:
    name = {"failed-payment": "recurring-transaction-failed",
            "recovered": "recurring-transaction-completed", "canceled": "subscription-stopped",
            "card-expiring": "before-cc-expires-reminder"}[action]
    return [memberpress_event(name, target, now)]


_MP_TRANSACTION_STATUS = {"failed": "failed", "completed": "complete",
                          "refunded": "refunded", "expired": "complete"}
_MP_SUBSCRIPTION_STATUS = {"subscription-paused": "suspended",
                           "subscription-resumed": "active"}


def memberpress_event(event: str, target: Target, now: datetime) -> dict[str, Any]:
    """One event of any type PayRescue reads, shaped as Developer Tools sends it."""
    if event not in memberpress.EVENT_TYPES:
        raise SimulationError(f"PayRescue does not read the MemberPress event {event!r}; see "
                              "docs/billing.md for the ones it does")
    member = {"id": _number(target.customer_id), "email": target.email,
              "first_name": "", "last_name": ""}
    if event == "member-account-updated":
        return {"event": event, "type": "member", "data": member}
    subscription = {"id": _number(target.subscription_ref), "subscr_id":
                    f"sub_{target.subscription_ref}", "status": _MP_SUBSCRIPTION_STATUS.get(
                        event, "cancelled" if event.startswith("subscription-") else "active"),
                    "txn_count": str(target.attempt), "cc_last4": "4242",
                    "cc_exp_month": str(now.month), "cc_exp_year": str(now.year),
                    "member": member}
    if not event.endswith(("-failed", "-completed", "-refunded", "-expired")) \
            or event == "subscription-expired":
        return {"event": event, "type": "subscription", "data": subscription}
    total = f"{target.amount_minor / 100:.2f}"
    moment = now.strftime("%Y-%m-%d %H:%M:%S")
    return {"event": event, "type": "transaction", "data": {
        "id": _number(target.invoice_ref), "amount": total, "total": total,
        "trans_num": f"mp-txn-{target.invoice_ref}", "txn_type": "payment",
        "status": _MP_TRANSACTION_STATUS[event.rsplit("-", 1)[1]],
        "created_at": moment, "expires_at": moment, "rebill": True,
        "subscription_payment_index": target.attempt + 1, "member": member,
        "subscription": subscription}}


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
                 update_url: str | None = None, event_type: str | None = None
                 ) -> list[dict[str, Any]]:
    if action not in ACTIONS:
        raise SimulationError(f"unknown action {action!r}; choose from {', '.join(ACTIONS)}")
    if action == "event":
        if not event_type:
            raise SimulationError("name the event type, e.g. invoice.voided")
        if provider == "stripe":
            return [stripe_event(event_type, target, reason, now)]
        if provider == "memberpress":
            return [memberpress_event(event_type, target, now)]
        raise SimulationError("the generic API has its own four types: use failed-payment, "
                              "recovered, canceled or card-expiring")
    if provider == "stripe":
        return stripe_events(action, target, reason, now)
    if provider == "memberpress":
        return memberpress_events(action, target, now)
    return generic_events(action, target, reason, now, update_url)


async def trigger(session: AsyncSession, settings: Settings, *, action: str, email: str,
                  base_url: str, now: datetime, reason: str = "insufficient_funds",
                  provider: str | None = None, amount_minor: int = 2900,
                  currency: str = "EUR", update_url: str | None = None,
                  event_type: str | None = None) -> list[tuple[str, int, str]]:
    """One call for `payrescue simulate` and the demo page's buttons: find the member's case,
    build, sign and send.

    `session` only reads; the running service at `base_url` writes what the events cause.
    """
    chosen = provider or default_provider(settings)
    target = await find_target(session, chosen, action, email, amount_minor, currency)
    events = build_events(chosen, action, target, reason, now, update_url, event_type)
    return await send(base_url, chosen, events, settings)
