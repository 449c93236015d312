"""MemberPress Developer Tools webhooks → `Signal`.

MemberPress signs nothing and sends no event id: the request carries the static key from
Developer Tools in the `MEMBERPRESS-WEBHOOK-KEY` header (compared in constant time), and
repeats are recognised by event name + object id + status + the payload's own moments
(subscription events, which carry none, add the minute they arrived): a second pause or card
reminder is news, the same event fired twice is not. Amounts are
decimal strings in the site's currency, which MemberPress does not send, so it comes from
the settings.

MemberPress sends `transaction-failed` for every failed transaction and, for a renewal,
`recurring-transaction-failed` as well; a failure at sign-up is no renewal and opens no case
(the transaction's `rebill` / `subscription_payment_index`, else the subscription's
`txn_count`, tell which it is).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import babel.numbers

from payrescue.billing import signals as s
from payrescue.config import Settings
from payrescue.edge import same_secret

PROVIDER = "memberpress"
KEY_HEADER = "MEMBERPRESS-WEBHOOK-KEY"

_FAILED = {"transaction-failed", "recurring-transaction-failed"}
_PAID = {"transaction-completed", "recurring-transaction-completed",
         "renewal-transaction-completed"}
_REFUNDED = "transaction-refunded"
_TXN_EXPIRED = "recurring-transaction-expired"
_ENDED = {"subscription-stopped", "subscription-expired"}
_STATUS = {"subscription-paused": "paused", "subscription-resumed": "active"}
_CARD = {"before-cc-expires-reminder", "after-cc-expires-reminder"}
# every event read; docs/billing.md has a row for each (tests/billing/test_event_table.py)
EVENT_TYPES = frozenset(_FAILED | _PAID | _ENDED | _STATUS.keys() | _CARD | {
    _REFUNDED, _TXN_EXPIRED, "member-account-updated"})


class BadKey(Exception):
    """The webhook key is missing or wrong."""


def verify(header: str | None, settings: Settings) -> None:
    if settings.memberpress_webhook_key is None:
        raise BadKey("MemberPress webhooks are not configured")
    if not header or not same_secret(header, settings.memberpress_webhook_key.get_secret_value()):
        raise BadKey(f"{KEY_HEADER}: missing or wrong")


def parse(raw_body: bytes, settings: Settings, now: datetime) -> s.Signal:
    body = s.load_json(raw_body)
    if not isinstance(body, dict):
        raise s.BadEvent("expected an object with event, type and data")
    event, data = body.get("event"), body.get("data")
    if not isinstance(event, str) or not event:
        raise s.BadEvent("event: missing")
    if not isinstance(data, dict):
        raise s.BadEvent("data: missing")
    object_id = _ref(data.get("id"))
    if object_id is None:
        raise s.BadEvent("data.id: missing")
    signal = s.Signal(provider=PROVIDER, event_id=_event_id(event, object_id, data, now),
                      event_type=event[:100], kind=s.IGNORED, occurred_at=now, payload=body,
                      cases_by_subscription=True)  # each retry is a new transaction
    if event in _FAILED or event in _PAID or event == _REFUNDED:
        _transaction(signal, data, settings)
        signal.invoice_ref = object_id
        signal.kind = (s.RECOVERED if event in _PAID else s.REFUNDED if event == _REFUNDED
                       else s.FAILED if _is_renewal(event, data) else s.IGNORED)
        if signal.kind == s.REFUNDED:  # the transaction's own time is that of its payment
            signal.occurred_at = now
    elif event == _TXN_EXPIRED:
        _transaction(signal, data, settings)
        _expired_transaction(signal, data)
    elif event in _ENDED or event in _STATUS or event in _CARD:
        _subscription(signal, data, object_id, settings)
        signal.kind = (s.CANCELED if event in _ENDED else
                       s.CARD_EXPIRING if event in _CARD else s.SUBSCRIPTION_STATUS)
        signal.subscription_status = "canceled" if event in _ENDED else _STATUS.get(event)
    elif event == "member-account-updated":
        signal.member = _member(data)
        signal.kind = s.MEMBER_UPDATED
    return signal


def _is_renewal(event: str, data: dict[str, Any]) -> bool:
    """`recurring-transaction-failed` is a renewal; `transaction-failed` is one only when
    the transaction says so (`rebill`, a payment index above 1) or its subscription had a
    transaction before (`txn_count`, as MemberPress's own notices decide)."""
    if event == "recurring-transaction-failed":
        return True
    if _truthy(data.get("rebill")):
        return True
    index = _number(data.get("subscription_payment_index"))
    if index is not None and index > 1:
        return True
    subscription = data.get("subscription")
    count = _number(subscription.get("txn_count")) if isinstance(subscription, dict) else None
    return count is not None and count > 0


def _expired_transaction(signal: s.Signal, data: dict[str, Any]) -> None:
    """A renewal's paid period ran out. Of a cancelled subscription, that is its end (the
    open case is lost); otherwise the gateway may still collect, so the case stays open."""
    signal.occurred_at = _when(data.get("expires_at"), signal.occurred_at, "data.expires_at")
    subscription = data.get("subscription")
    status = subscription.get("status") if isinstance(subscription, dict) else None
    if status in ("cancelled", "expired") and signal.subscription_ref:
        signal.kind = s.CANCELED
        signal.subscription_status = "canceled"
    else:
        signal.kind = s.NOTICE


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, int | str) and str(value).strip().lower()
                             in {"1", "true", "yes"})


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() \
            and len(value.strip()) <= 9:
        return int(value.strip())
    return None


# the payload's own moments and card: what tells a second pause or reminder from a repeat
_MOMENTS = ("created_at", "expires_at", "updated_at", "paused_at", "resumed_at",
            "cancelled_at", "txn_count", "cc_last4", "cc_exp_month", "cc_exp_year")


def _event_id(event: str, object_id: str, data: dict[str, Any], now: datetime) -> str:
    """MemberPress sends no id: the event, its object, the status and the payload's own
    moments (and card) name it. A subscription event has no moment of its own (a second
    pause looks like the first), so the minute it arrived joins them: the same event fired
    twice in one go is one, a pause after a resume is news."""
    status = data.get("status") if isinstance(data.get("status"), str) else ""
    if event == "member-account-updated":  # each change of name or address is news
        fields: list[Any] = [data.get(k) for k in ("email", "first_name", "last_name")]
    else:
        subscription = data.get("subscription")
        nested = subscription if isinstance(subscription, dict) else {}
        fields = [data.get(k) for k in _MOMENTS] + [nested.get(k) for k in _MOMENTS]
    if event in _ENDED or event in _STATUS or event in _CARD:
        fields.append(f"{now:%Y-%m-%dT%H:%M}")
    digest = hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()[:16]
    return f"{event}:{object_id}:{status}:{digest}"[:200]


def _ref(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | str) and str(value).strip() not in {"", "0"}:
        return str(value).strip()[:200]
    return None


def _member(data: dict[str, Any]) -> s.MemberRef:
    name = " ".join(str(data.get(k) or "").strip() for k in ("first_name", "last_name")).strip()
    return s.MemberRef(customer_id=_ref(data.get("id")),
                       email=data.get("email") if isinstance(data.get("email"), str) else None,
                       name=name or None)


def _nested_member(data: dict[str, Any]) -> s.MemberRef:
    member = data.get("member")
    if isinstance(member, dict):
        return _member(member)
    return s.MemberRef(customer_id=_ref(member) or _ref(data.get("user_id")))


def _transaction(signal: s.Signal, data: dict[str, Any], settings: Settings) -> None:
    signal.member = _nested_member(data)
    subscription = data.get("subscription")
    signal.subscription_ref = _ref(subscription.get("id") if isinstance(subscription, dict)
                                   else subscription)
    membership = data.get("membership")
    if isinstance(membership, dict) and isinstance(membership.get("title"), str):
        signal.plan_name = membership["title"][:200]
    _set_interval(signal, subscription, membership)
    signal.currency = settings.memberpress_currency.upper()
    signal.amount_minor = _minor(data.get("total") or data.get("amount"), signal.currency)
    signal.occurred_at = _when(data.get("created_at"), signal.occurred_at)
    signal.update_url = _update_url(settings, signal.subscription_ref)


def _subscription(signal: s.Signal, data: dict[str, Any], object_id: str,
                  settings: Settings) -> None:
    signal.member = _nested_member(data)
    signal.subscription_ref = object_id
    signal.update_url = _update_url(settings, object_id)
    _set_interval(signal, data, data.get("membership"))


def _set_interval(signal: s.Signal, *sources: Any) -> None:
    """How often the plan bills: `period` and `period_type` ("1", "years") on the
    subscription, or else on the membership; "lifetime" plans have none."""
    for source in sources:
        if isinstance(source, dict):
            found = s.billing_interval(source.get("period_type"), source.get("period"))
            if found is not None:
                signal.interval, signal.interval_count = found
                return


def _minor(value: Any, currency: str) -> int:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise s.BadEvent("data.total: expected a decimal amount such as \"29.00\"") from None
    if not amount.is_finite() or amount < 0 or amount > Decimal("1e12"):
        raise s.BadEvent("data.total: out of range")
    digits = babel.numbers.get_currency_precision(currency)
    return int(amount.scaleb(digits).to_integral_value())


def _when(value: Any, default: datetime, what: str = "data.created_at") -> datetime:
    """MemberPress writes "2026-01-05 09:00:00" in UTC (GMT in its tables); "0000-00-00
    00:00:00" is its "never"."""
    if not isinstance(value, str) or value.strip().startswith("0000-00-00"):
        return default
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise s.BadEvent(f"{what}: expected YYYY-MM-DD HH:MM:SS") from None
    return s.sane_moment(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), what)


def _update_url(settings: Settings, subscription_ref: str | None) -> str | None:
    if settings.memberpress_account_url is None or subscription_ref is None:
        return None
    base = str(settings.memberpress_account_url)
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}{urlencode({'action': 'update', 'sub': subscription_ref})}"
