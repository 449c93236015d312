"""Stripe webhooks: signature check with the official library, then event → `Signal`.

Webhook endpoints keep the API version they were created with, so both invoice shapes
arrive: before 2025-03-31 ("basil") an invoice names its `payment_intent` / `charge` (ids, or
objects when expanded); from basil on these are gone and the attempt is found through the
invoice's payments (`InvoicePayment.list`, see `stripe_api.lookup_decline`). Either way the
decline code may also arrive on its own in `payment_intent.payment_failed` / `charge.failed`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

from payrescue.billing import signals as s
from payrescue.edge import same_secret

PROVIDER = "stripe"
TOLERANCE_SECONDS = 300
SCHEME = "v1"


class BadSignature(Exception):
    """Missing, forged or stale `Stripe-Signature`."""


def verify(raw_body: bytes, header: str | None, secrets: list[str],
           now: float | None = None) -> None:
    """Accept the body if any of `secrets` signed it (`v1`) within 300 s either way.

    Stripe's scheme, checked here rather than by `stripe.WebhookSignature`: that one accepts
    a timestamp from any future and compares `str`s, which fails with TypeError (a 500) on a
    non-ASCII signature. Both the Stripe webhook and the generic API use this check.
    """
    if not secrets:
        raise BadSignature("no webhook secret configured")
    timestamp, signatures = _signature_parts(header)
    moment = time.time() if now is None else now
    if abs(moment - timestamp) > TOLERANCE_SECONDS:
        raise BadSignature("Timestamp outside the tolerance zone")
    signed = str(timestamp).encode() + b"." + raw_body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(same_secret(given, expected) for given in signatures):
            return
    raise BadSignature("No signatures found matching the expected signature for payload")


def _signature_parts(header: str | None) -> tuple[int, list[str]]:
    """`t=<unix seconds>,v1=<hex>[,v1=<hex>]` → (t, [hex, …]); `v0` and others are ignored."""
    if not header:
        raise BadSignature("No signature header value was provided")
    timestamp, signatures = None, []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise BadSignature("Unable to extract timestamp and signatures from header")
    if not signatures:
        raise BadSignature(f"No signatures found with expected scheme {SCHEME}")
    return timestamp, signatures


def parse(raw_body: bytes) -> s.Signal:
    event = s.load_json(raw_body)
    if not isinstance(event, dict):
        raise s.BadEvent("expected a Stripe event object")
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 200:
        raise s.BadEvent("id: missing")
    if not isinstance(event_type, str) or not event_type:
        raise s.BadEvent("type: missing")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise s.BadEvent("data.object: missing")
    signal = s.Signal(provider=PROVIDER, event_id=event_id, event_type=event_type,
                      kind=s.IGNORED, occurred_at=s.from_unix(event.get("created"), "created"),
                      payload=event)
    reader = _READERS.get(event_type)
    if reader is not None:
        reader(signal, obj)
    return signal


# --- helpers over Stripe's JSON ----------------------------------------------------------------


def _id(value: Any) -> str | None:
    """A reference is an id string, or the object itself when it was expanded."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _str(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _int(obj: dict, key: str, what: str, *, required: bool = False) -> int | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise s.BadEvent(f"{what}.{key}: expected a non-negative integer")
    if value > s.MAX_AMOUNT_MINOR:
        raise s.BadEvent(f"{what}.{key}: out of range")
    return value


def _dict(obj: dict, key: str) -> dict:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _currency(obj: dict, what: str) -> str:
    value = obj.get("currency")
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise s.BadEvent(f"{what}.currency: expected a three-letter code")
    return value.upper()


def _customer(signal: s.Signal, obj: dict) -> None:
    customer = obj.get("customer")
    signal.member = s.MemberRef(
        customer_id=_id(customer),
        email=_str(obj, "customer_email") or (_str(customer, "email") if isinstance(
            customer, dict) else None),
        name=_str(obj, "customer_name") or (_str(customer, "name") if isinstance(
            customer, dict) else None),
        language=_first_locale(obj.get("customer_preferred_locales")),
    )


def _first_locale(locales: Any) -> str | None:
    first = locales[0] if isinstance(locales, list) and locales else None
    return first[:16] if isinstance(first, str) else None


def _error_codes(error: Any) -> tuple[str | None, str | None]:
    if not isinstance(error, dict):
        return None, None
    return _str(error, "decline_code"), _str(error, "code")


# --- invoices -----------------------------------------------------------------------------


def _invoice(signal: s.Signal, invoice: dict) -> None:
    signal.invoice_ref = _id(invoice)
    if signal.invoice_ref is None:
        raise s.BadEvent("data.object.id: missing")
    _customer(signal, invoice)
    parent = _dict(_dict(invoice, "parent"), "subscription_details")
    signal.subscription_ref = _id(invoice.get("subscription")) or _id(parent.get("subscription"))
    signal.currency = _currency(invoice, "invoice")
    signal.billing_reason = _str(invoice, "billing_reason")
    signal.hosted_invoice_url = _str(invoice, "hosted_invoice_url")
    lines = _dict(invoice, "lines").get("data")
    if isinstance(lines, list) and lines and isinstance(lines[0], dict):
        line = _plan_line(lines) or lines[0]
        signal.plan_name = _plan_name(line)
        _set_interval(signal, _plan_line(lines))


# Stripe's line description: "1 × Pro (at €29.00 / month)", "3 × Seat (at $5.00 / month)"
_DESCRIPTION = re.compile(r"^\s*\d+\s*[×x]\s*(?P<name>.+?)(?:\s*\(at [^()]*\))?\s*$")


def _plan_name(item: dict) -> str | None:
    """What members call their plan: the price's nickname or the product's name (objects
    where the event carries them expanded), else the line's description without Stripe's
    "1 × … (at …)" wrapper — never the raw description."""
    price = item.get("price") if isinstance(item.get("price"), dict) else \
        _dict(_dict(item, "pricing"), "price_details").get("price")
    price = price if isinstance(price, dict) else {}
    plan = _dict(item, "plan")
    product = price.get("product") or plan.get("product") or \
        _dict(_dict(item, "pricing"), "price_details").get("product")
    name = (_str(price, "nickname") or _str(plan, "nickname")
            or (_str(product, "name") if isinstance(product, dict) else None))
    if name is None and (description := _str(item, "description")):
        match = _DESCRIPTION.match(description)
        name = match["name"] if match else description
    return name.strip()[:200] or None if name else None


def _plan_line(lines: list) -> dict:
    """The line that bills the plan itself: a proration line covers only part of a period."""
    for line in lines:
        if not isinstance(line, dict):
            continue
        details = _dict(_dict(line, "parent"), "subscription_item_details")  # basil on
        if not (line.get("proration") or details.get("proration")):
            return line
    return {}


def _set_interval(signal: s.Signal, item: dict) -> None:
    """How often the plan bills: from the price (`recurring`) or the legacy `plan` where the
    API version still puts them on the item, else from the billed period's length (basil
    invoice lines name their price only by id)."""
    recurring = _dict(_dict(item, "price"), "recurring") or _dict(item, "plan")
    found = s.billing_interval(recurring.get("interval"), recurring.get("interval_count", 1))
    if found is None:
        found = _interval_of_period(_dict(item, "period"))
    if found is not None:
        signal.interval, signal.interval_count = found


def _interval_of_period(period: dict) -> tuple[str, int] | None:
    start, end = period.get("start"), period.get("end")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**40
               for v in (start, end)):
        return None  # 2**40 s is 34,000 years: beyond it the float division overflows
    days = round((end - start) / 86400)
    months = round(days / s.DAYS_PER_MONTH)
    if months >= 1 and abs(days - months * s.DAYS_PER_MONTH) <= 3:  # calendar months vary
        return s.billing_interval("year", months // 12) if months % 12 == 0 \
            else s.billing_interval("month", months)
    if days % 7 == 0:
        return s.billing_interval("week", days // 7)
    return s.billing_interval("day", days)


def _invoice_failed(signal: s.Signal, invoice: dict, *, action_required: bool = False) -> None:
    _invoice(signal, invoice)
    if signal.billing_reason == "subscription_create":
        signal.kind = s.IGNORED  # a first payment that never went through is no renewal
        return
    signal.kind = s.FAILED
    signal.action_required = action_required
    signal.amount_minor = _int(invoice, "amount_remaining", "invoice")
    if signal.amount_minor is None:
        signal.amount_minor = _int(invoice, "amount_due", "invoice", required=True)
    signal.attempt_count = _int(invoice, "attempt_count", "invoice")
    signal.next_attempt_at = s.optional_unix(invoice.get("next_payment_attempt"),
                                             "next_payment_attempt")
    if "payment_intent" in invoice or "charge" in invoice:  # shapes before 2025-03-31
        intent, charge = invoice.get("payment_intent"), invoice.get("charge")
        if isinstance(intent, dict):
            signal.decline_code, signal.error_code = _error_codes(
                intent.get("last_payment_error"))
        elif isinstance(charge, dict):
            signal.decline_code = _str(_dict(charge, "outcome"), "reason")
            signal.error_code = _str(charge, "failure_code")
        signal.payment_intent_ref = _id(intent)
    if not (signal.decline_code or signal.error_code) and not action_required:
        signal.needs_decline_lookup = True


def _invoice_action_required(signal: s.Signal, invoice: dict) -> None:
    _invoice_failed(signal, invoice, action_required=True)
    signal.needs_decline_lookup = False


def _invoice_paid(signal: s.Signal, invoice: dict) -> None:
    _invoice(signal, invoice)
    signal.kind = s.RECOVERED
    signal.amount_minor = _int(invoice, "amount_paid", "invoice")


def _invoice_updated(signal: s.Signal, invoice: dict) -> None:
    _invoice(signal, invoice)
    signal.kind = s.NEXT_ATTEMPT
    signal.next_attempt_at = s.optional_unix(invoice.get("next_payment_attempt"),
                                             "next_payment_attempt")


# --- subscriptions ------------------------------------------------------------------------

_LOST_STATUSES = {"canceled", "incomplete_expired"}


def _subscription(signal: s.Signal, sub: dict) -> None:
    signal.subscription_ref = _id(sub)
    if signal.subscription_ref is None:
        raise s.BadEvent("data.object.id: missing")
    _customer(signal, sub)
    status = _str(sub, "status")
    signal.subscription_status = status
    items = _dict(sub, "items").get("data")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        signal.plan_name = _plan_name(items[0])
        _set_interval(signal, items[0])
    if status in _LOST_STATUSES:
        signal.kind = s.CANCELED
        ended = sub.get("ended_at") or sub.get("canceled_at")
        if isinstance(ended, int) and not isinstance(ended, bool):
            signal.occurred_at = max(signal.occurred_at, s.from_unix(ended, "ended_at"))
    else:
        signal.kind = s.SUBSCRIPTION_STATUS


def _subscription_deleted(signal: s.Signal, sub: dict) -> None:
    _subscription(signal, sub)
    signal.kind = s.CANCELED


# --- attempts, cards, disputes ----------------------------------------------------------------


def _intent_failed(signal: s.Signal, intent: dict) -> None:
    _customer(signal, intent)
    signal.kind = s.DECLINE_INFO
    signal.invoice_ref = _id(intent.get("invoice"))
    signal.decline_code, signal.error_code = _error_codes(intent.get("last_payment_error"))


def _charge_failed(signal: s.Signal, charge: dict) -> None:
    _customer(signal, charge)
    signal.kind = s.DECLINE_INFO
    signal.invoice_ref = _id(charge.get("invoice"))
    signal.decline_code = _str(_dict(charge, "outcome"), "reason")
    signal.error_code = _str(charge, "failure_code")


def _source_expiring(signal: s.Signal, card: dict) -> None:
    _customer(signal, card)
    signal.kind = s.CARD_EXPIRING


def _card_updated(signal: s.Signal, method: dict) -> None:
    _customer(signal, method)
    signal.kind = s.CARD_UPDATED


def _dispute(signal: s.Signal, dispute: dict) -> None:
    evidence = _dict(dispute, "evidence")
    charge = dispute.get("charge")
    signal.member = s.MemberRef(
        customer_id=_id(charge.get("customer")) if isinstance(charge, dict) else None,
        email=_str(evidence, "customer_email_address"))
    signal.kind = s.DISPUTE
    signal.payment_intent_ref = _id(charge)  # the charge, for finding the customer


_READERS = {
    "invoice.payment_failed": _invoice_failed,
    "invoice.payment_action_required": _invoice_action_required,
    "invoice.paid": _invoice_paid,
    "invoice.payment_succeeded": _invoice_paid,
    "invoice.updated": _invoice_updated,
    "customer.subscription.updated": _subscription,
    "customer.subscription.deleted": _subscription_deleted,
    "charge.dispute.created": _dispute,
    "customer.source.expiring": _source_expiring,
    "payment_method.card_automatically_updated": _card_updated,
    "payment_intent.payment_failed": _intent_failed,
    "charge.failed": _charge_failed,
}
