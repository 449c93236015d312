"""What a provider event means, in one shape for every provider.

Each provider module turns its raw payload into a `Signal`; `ingest` stores the raw payload
and acts on the signal. A payload that lacks what its event needs raises `BadEvent` with a
one-line reason, which the HTTP layer answers with 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# what happened, whatever the provider called it
FAILED = "failed"  # a renewal payment failed (opens or updates a case)
RECOVERED = "recovered"  # a payment succeeded (closes the open case of that invoice)
CANCELED = "canceled"  # the subscription ended (open cases are lost)
# the provider stopped collecting (an invoice voided or marked uncollectible, a subscription
# left `unpaid`): the case is lost, but a later payment of that invoice still recovers it
GAVE_UP = "gave_up"
REFUNDED = "refunded"  # a payment was given back: a case it recovered was not saved
SUBSCRIPTION_STATUS = "sub_status"  # past_due, unpaid, active, paused …
CARD_EXPIRING = "card_expiring"
CARD_UPDATED = "card_updated"  # the network updated the card silently
DECLINE_INFO = "decline_info"  # the decline code of an attempt arrives on its own
NEXT_ATTEMPT = "next_attempt"  # the provider rescheduled its retry
DISPUTE = "dispute"  # a chargeback: a human takes over
MEMBER_UPDATED = "member_updated"
NOTICE = "notice"  # read and kept, but nothing to do (e.g. an invoice that is not due yet)
IGNORED = "ignored"


class BadEvent(ValueError):
    """The payload cannot be used; the message is one line for the sender."""


@dataclass
class MemberRef:
    """How the provider names the member; matched by customer id, then e-mail."""

    customer_id: str | None = None  # Stripe customer / MemberPress member id
    email: str | None = None
    name: str | None = None
    external_id: str | None = None  # the generic API's member id
    language: str | None = None


@dataclass
class Signal:
    provider: str
    event_id: str
    event_type: str
    kind: str
    occurred_at: datetime
    payload: dict[str, Any]
    member: MemberRef = field(default_factory=MemberRef)
    subscription_ref: str | None = None
    plan_name: str | None = None
    price_ref: str | None = None  # the price the plan name may be looked up from (Stripe)
    plan_from_description: bool = False  # the name is only the invoice line's text
    interval: str | None = None  # the plan bills every `interval_count` days/weeks/months/years
    interval_count: int | None = None
    invoice_ref: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    attempt_count: int | None = None
    next_attempt_at: datetime | None = None
    billing_reason: str | None = None
    decline_code: str | None = None  # the issuer's reason (Stripe decline_code, SEPA reason)
    error_code: str | None = None  # the provider's error code (Stripe `code`)
    action_required: bool = False  # 3-D Secure: the member must confirm the payment
    hosted_invoice_url: str | None = None
    update_url: str | None = None
    subscription_status: str | None = None
    payment_intent_ref: str | None = None  # for looking the decline code up (Stripe)
    needs_decline_lookup: bool = False
    # True where each failed attempt has its own id (MemberPress transactions): the case is
    # the subscription's open one, and a success is remembered per subscription
    cases_by_subscription: bool = False

    @property
    def has_member(self) -> bool:
        m = self.member
        return bool(m.customer_id or m.email or m.external_id)


DAYS_PER_MONTH = 365.25 / 12
# how many months one interval lasts: for turning any plan's price into a monthly amount
MONTHS_PER_INTERVAL = {"day": 1 / DAYS_PER_MONTH, "week": 7 / DAYS_PER_MONTH, "month": 1.0,
                       "year": 12.0}
INTERVALS = tuple(MONTHS_PER_INTERVAL)
_LONGEST = {"day": 366, "week": 53, "month": 36, "year": 3}  # longer periods are typos


def billing_interval(interval: Any, count: Any = 1) -> tuple[str, int] | None:
    """A plan's billing period in Stripe's terms ("month", 1), or None when the values are
    not one; English plurals as MemberPress writes them ("months") are accepted."""
    if isinstance(count, str) and count.strip().isascii() and count.strip().isdigit() \
            and len(count.strip()) <= 4:  # MemberPress sends "1"; "²" is a digit to Python
        count = int(count)
    if not isinstance(interval, str) or not isinstance(count, int) or isinstance(count, bool):
        return None
    unit = interval.strip().lower().removesuffix("s")
    if unit not in INTERVALS or not 1 <= count <= _LONGEST[unit]:
        return None
    return unit, count


# the moments an event may name: anything outside is a sender's mistake, and far dates
# break date arithmetic (year 1 with an offset has no UTC) and the reports
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
MAX_AMOUNT_MINOR = 10**12  # a trillion cents: more is no membership fee, and BIGINT-safe
MAX_ATTEMPTS = 10_000


def from_unix(value: Any, what: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadEvent(f"{what}: expected a unix timestamp")
    if not EARLIEST.timestamp() <= value < LATEST.timestamp():
        raise BadEvent(f"{what}: timestamp out of range")
    return datetime.fromtimestamp(value, UTC)


def sane_moment(value: datetime, what: str) -> datetime:
    """An aware moment in UTC within EARLIEST … LATEST, else BadEvent."""
    try:
        moment = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise BadEvent(f"{what}: out of range") from None
    if not EARLIEST <= moment < LATEST:
        raise BadEvent(f"{what}: out of range")
    return moment


def optional_unix(value: Any, what: str) -> datetime | None:
    return None if value is None else from_unix(value, what)


def _no_constant(name: str) -> Any:
    raise BadEvent(f"malformed JSON: {name} is not a number")


def load_json(raw: bytes) -> Any:
    """Parse a body and make sure every database can store it (no NaN, NUL or lone
    surrogates, which JSON allows but PostgreSQL or UTF-8 do not)."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadEvent(f"malformed JSON: {exc}") from None
    ensure_storable(value)
    return value


def ensure_storable(value: Any) -> None:
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadEvent("text contains invalid characters (lone surrogates)") from None
    except (ValueError, RecursionError):
        raise BadEvent("malformed JSON: nested too deeply") from None
    if "\\u0000" in text:
        raise BadEvent("text contains NUL characters")


# the columns' sizes: a longer value is the sender's mistake (400), not a database fault (503)
_SIZES = {"event_id": 200, "invoice_ref": 200, "subscription_ref": 200, "decline_code": 100,
          "error_code": 100, "billing_reason": 60, "payment_intent_ref": 200}
_MEMBER_SIZES = {"customer_id": 100, "email": 320, "external_id": 200}


def check_sizes(signal: Signal) -> None:
    """Every field within what its column holds; the last check before the database."""
    for name, limit in (("amount_minor", MAX_AMOUNT_MINOR), ("attempt_count", MAX_ATTEMPTS),
                        ("interval_count", 1000)):
        value = getattr(signal, name)
        if value is not None and not 0 <= value <= limit:
            raise BadEvent(f"{name}: out of range")
    for name in ("occurred_at", "next_attempt_at"):
        value = getattr(signal, name)
        if value is not None:
            setattr(signal, name, sane_moment(value, name))
    if signal.member.language is not None and not isinstance(signal.member.language, str):
        signal.member.language = None
    for name, limit in _SIZES.items():
        value = getattr(signal, name)
        if value is not None and len(value) > limit:
            raise BadEvent(f"{name}: longer than {limit} characters")
    for name, limit in _MEMBER_SIZES.items():
        value = getattr(signal.member, name)
        if value is not None and len(value) > limit:
            raise BadEvent(f"member {name}: longer than {limit} characters")
    if signal.plan_name:
        signal.plan_name = signal.plan_name[:200]
    if signal.member.name:
        signal.member.name = signal.member.name[:200]
