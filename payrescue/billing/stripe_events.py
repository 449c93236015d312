"""Stripe webhooks: signature check with the official library, then event → `Signal`.

Webhook endpoints keep the API version they were created with, so every invoice shape
arrives: up to 2025-01-27 ("acacia") an invoice names its `subscription` and its
`payment_intent` / `charge` (ids, or objects when expanded); from 2025-03-31 ("basil", and so
in "dahlia") the subscription is under `parent.subscription_details`, the lines name their
price only by id, and the attempt is found through the invoice's payments
(`InvoicePayment.list`, see `stripe_api.lookup_decline`). Either way the decline code may also
arrive on its own in `payment_intent.payment_failed` / `charge.failed`, whose PaymentIntent
names no invoice from basil on (`ingest` pairs it with its failure).

`_READERS` at the bottom is every event type read; docs/billing.md says what each does.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

from payrescue.billing import signals as s
from payrescue.edge import same_secret
from payrescue.i18n import normalise

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
    """Who the object names: the customer (an id, or the object when expanded), and the
    member's language from the Customer's `preferred_locales`, else the invoice's billing
    country, else the account's country (no Stripe object has `customer_preferred_locales`)."""
    customer = obj.get("customer")
    expanded = customer if isinstance(customer, dict) else {}
    signal.member = s.MemberRef(
        customer_id=_id(customer),
        email=_str(obj, "customer_email") or _str(expanded, "email"),
        name=_str(obj, "customer_name") or _str(expanded, "name"),
        language=language_of(expanded.get("preferred_locales"),
                             _str(_dict(expanded, "address"), "country")
                             or _str(_dict(obj, "customer_address"), "country"),
                             _str(obj, "account_country")),
    )


# where German is what members read; anywhere else English (the languages we speak)
_GERMAN_COUNTRIES = {"DE", "AT", "CH", "LI"}


def language_of(locales: Any, country: str | None, account_country: str | None = None
                ) -> str | None:
    """The first of the customer's `preferred_locales` that we speak, else a guess from the
    customer's country, else from the Stripe account's country."""
    for locale in locales if isinstance(locales, list) else []:
        if isinstance(locale, str) and (spoken := normalise(locale)):
            return spoken
    for place in (country, account_country):
        if isinstance(place, str) and len(place) == 2 and place.isalpha():
            return "de" if place.upper() in _GERMAN_COUNTRIES else "en"
    return None


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
        _plan_name(signal, _plan_line(lines) or lines[0])
        _set_interval(signal, _plan_line(lines))


# Stripe's line descriptions: "1 × Pro (at €29.00 / month)", "3 × Seat (at $5.00 / month)",
# "Trial period for Pro", "Remaining time on 1 × Pro after 05 Jan 2026", "Pro (Tier 1 at …)"
_TIME_ON = re.compile(r"^(?:Remaining|Unused) time on (?P<name>.+?) (?:after|from) .+$")
_TRIAL = re.compile(r"^Trial period for (?P<name>.+)$")
_QUANTITY = re.compile(r"^\d+\s*[×x]\s*")
_PRICE_NOTE = re.compile(r"\s*\((?:at|Tier \d+ at) [^()]*\)$")


def clean_plan_name(description: str) -> str | None:
    """The plan's name inside a line description, without Stripe's wrapper."""
    name = description.strip()
    for wrapper in (_TIME_ON, _TRIAL):
        if match := wrapper.match(name):
            name = match["name"]
    name = _PRICE_NOTE.sub("", _QUANTITY.sub("", name)).strip()
    return name[:200] or None


def _plan_name(signal: s.Signal, item: dict) -> None:
    """What members call their plan: the price's nickname or the product's name (where the
    event carries them expanded), else the line's description without Stripe's
    "1 × … (at …)" wrapper — never the raw description. The price's id is kept, so that
    with an API key the nickname or product name is looked up (`stripe_api.plan_name`)."""
    details = _dict(_dict(item, "pricing"), "price_details")
    price = item.get("price") if item.get("price") is not None else details.get("price")
    plan = _dict(item, "plan")
    expanded = price if isinstance(price, dict) else {}
    product = expanded.get("product") or plan.get("product") or details.get("product")
    name = (_str(expanded, "nickname") or _str(plan, "nickname")
            or (_str(product, "name") if isinstance(product, dict) else None))
    signal.plan_from_description = False
    if name is None:
        signal.price_ref = _id(price) or _id(plan)
        description = _str(item, "description")
        name = clean_plan_name(description) if description else None
        signal.plan_from_description = True
    signal.plan_name = name.strip()[:200] or None if name else None


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


def _invoice_overdue(signal: s.Signal, invoice: dict) -> None:
    """An invoice sent to the member (`send_invoice`) is past its due date unpaid: that is
    its failed renewal. One Stripe charges by itself has had its `payment_failed` already."""
    if invoice.get("collection_method") != "send_invoice":
        _invoice(signal, invoice)
        signal.kind = s.NOTICE
        return
    _invoice_failed(signal, invoice)
    signal.needs_decline_lookup = False  # nothing was charged: no decline to look up
    if signal.kind == s.FAILED:
        signal.attempt_count = max(signal.attempt_count or 0, 1)


def _invoice_notice(signal: s.Signal, invoice: dict) -> None:
    """Read and kept, nothing to do: an invoice that will be due (not late yet), or one
    the business charges outside Stripe (`payment_attempt_required`)."""
    _invoice(signal, invoice)
    signal.kind = s.NOTICE


def _invoice_paid(signal: s.Signal, invoice: dict) -> None:
    _invoice(signal, invoice)
    signal.kind = s.RECOVERED
    signal.amount_minor = _int(invoice, "amount_paid", "invoice")


def _invoice_gave_up(signal: s.Signal, invoice: dict) -> None:
    """Voided, or marked uncollectible: Stripe stops collecting, so its case is lost (an
    uncollectible invoice that is paid after all still recovers it)."""
    _invoice(signal, invoice)
    signal.kind = s.GAVE_UP


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
        _plan_name(signal, items[0])
        _set_interval(signal, items[0])
    if status == "unpaid":  # retries exhausted, the subscription kept: collecting stopped
        signal.kind = s.GAVE_UP
    elif status in _LOST_STATUSES:
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
    """The decline code of an attempt. From basil on a PaymentIntent no longer names its
    invoice: `ingest` then pairs it with the failure of the same customer and amount
    nearest in time, whichever of the two arrives first."""
    _customer(signal, intent)
    signal.kind = s.DECLINE_INFO
    signal.invoice_ref = _id(intent.get("invoice"))
    signal.decline_code, signal.error_code = _error_codes(intent.get("last_payment_error"))
    _attempt_amount(signal, intent)


def _charge_failed(signal: s.Signal, charge: dict) -> None:
    _customer(signal, charge)
    signal.kind = s.DECLINE_INFO
    signal.invoice_ref = _id(charge.get("invoice"))
    signal.decline_code = _str(_dict(charge, "outcome"), "reason")
    signal.error_code = _str(charge, "failure_code")
    _attempt_amount(signal, charge)


def _charge_refunded(signal: s.Signal, charge: dict) -> None:
    """A payment given back. Refunded in full, the case it recovered was not saved; the
    charge names its invoice up to acacia (from basil on it does not, and the refund is only
    kept)."""
    _customer(signal, charge)
    signal.invoice_ref = _id(charge.get("invoice"))
    signal.amount_minor = _int(charge, "amount_refunded", "charge")
    signal.kind = s.REFUNDED if charge.get("refunded") is True and signal.invoice_ref \
        else s.NOTICE


def _attempt_amount(signal: s.Signal, obj: dict) -> None:
    signal.amount_minor = _int(obj, "amount", "object")
    value = obj.get("currency")
    signal.currency = value.upper() if isinstance(value, str) and len(value) == 3 \
        and value.isalpha() else None


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


# every event type read, and what it becomes; docs/billing.md has a row for each
# (tests/billing/test_event_table.py keeps the two in step)
_READERS = {
    "invoice.payment_failed": _invoice_failed,
    "invoice.payment_action_required": _invoice_action_required,
    "invoice.overdue": _invoice_overdue,
    "invoice.will_be_due": _invoice_notice,
    "invoice.payment_attempt_required": _invoice_notice,
    "invoice.paid": _invoice_paid,
    "invoice.payment_succeeded": _invoice_paid,
    "invoice.updated": _invoice_updated,
    "invoice.marked_uncollectible": _invoice_gave_up,
    "invoice.voided": _invoice_gave_up,
    "customer.subscription.updated": _subscription,
    "customer.subscription.paused": _subscription,
    "customer.subscription.resumed": _subscription,
    "customer.subscription.deleted": _subscription_deleted,
    "charge.dispute.created": _dispute,
    "customer.source.expiring": _source_expiring,
    "payment_method.automatically_updated": _card_updated,
    "payment_method.card_automatically_updated": _card_updated,  # its name before 2020
    "payment_intent.payment_failed": _intent_failed,
    "charge.failed": _charge_failed,
    "charge.refunded": _charge_refunded,
}
EVENT_TYPES = frozenset(_READERS)
