"""The generic signed API (`POST /api/v1/events`) for any other billing system.

Signed like Stripe's webhooks, so one well-tested check serves both: the header
`PayRescue-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` with the
configured `generic_api_secret`; several `v1` may be given while a secret is rotated; older
than 300 s is refused. The body is described in docs/billing.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    model_validator,
)

from payrescue.billing import signals as s

PROVIDER = "generic"
SIGNATURE_HEADER = "PayRescue-Signature"

_KINDS = {"failed": s.FAILED, "recovered": s.RECOVERED, "canceled": s.CANCELED,
          "card_expiring": s.CARD_EXPIRING}
_Text = Field(min_length=1, max_length=200)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class GenericMember(_Model):
    id: str | None = Field(default=None, min_length=1, max_length=200)
    # any text: an address that is no address keeps the member, marked not reachable by
    # e-mail (`billing.members`), rather than losing the failed payment
    email: str | None = Field(default=None, min_length=1, max_length=320)
    name: str | None = Field(default=None, max_length=200)
    language: Literal["de", "en"] | None = None

    @model_validator(mode="after")
    def _identified(self) -> GenericMember:
        if not (self.id or self.email):
            raise ValueError("member needs an id or an email")
        return self


class GenericSubscription(_Model):
    id: str = _Text
    plan: str | None = Field(default=None, max_length=200)
    # how often the plan bills, for the monthly revenue figure; unknown counts as monthly
    interval: Literal["day", "week", "month", "year"] | None = None
    interval_count: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _sensible_interval(self) -> GenericSubscription:
        if self.interval and s.billing_interval(self.interval, self.interval_count) is None:
            raise ValueError(f"interval_count: no plan bills every {self.interval_count} "
                             f"{self.interval}s")
        return self


class GenericEvent(_Model):
    id: str = _Text
    type: Literal["failed", "recovered", "canceled", "card_expiring"]
    occurred_at: AwareDatetime
    member: GenericMember
    subscription: GenericSubscription | None = None
    invoice: str | None = Field(default=None, min_length=1, max_length=200)
    amount: int | None = Field(default=None, ge=0, le=10**12)  # minor units: 2900 = 29.00
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")
    decline_code: str | None = Field(default=None, max_length=100)
    attempt: int | None = Field(default=None, ge=1, le=1000)
    next_attempt_at: AwareDatetime | None = None
    update_url: HttpUrl | None = None

    @model_validator(mode="after")
    def _complete(self) -> GenericEvent:
        if self.type in {"failed", "recovered", "canceled"} and self.subscription is None:
            raise ValueError(f"subscription is required for {self.type}")
        if self.type == "failed" and (self.amount is None or self.currency is None):
            raise ValueError("amount and currency are required for failed")
        return self


def parse(raw_body: bytes) -> s.Signal:
    try:
        event = GenericEvent.model_validate_json(raw_body)
    except ValidationError as exc:
        raise s.BadEvent(_one_line(exc)) from None
    signal = s.Signal(
        provider=PROVIDER, event_id=event.id, event_type=event.type, kind=_KINDS[event.type],
        occurred_at=s.sane_moment(event.occurred_at, "occurred_at"),
        payload=_storable(event.model_dump(mode="json")),
        member=s.MemberRef(customer_id=event.member.id, email=event.member.email,
                           name=event.member.name, language=event.member.language),
        subscription_ref=event.subscription.id if event.subscription else None,
        plan_name=event.subscription.plan if event.subscription else None,
        interval=event.subscription.interval if event.subscription else None,
        interval_count=(event.subscription.interval_count
                        if event.subscription and event.subscription.interval else None),
        invoice_ref=event.invoice, amount_minor=event.amount,
        currency=event.currency.upper() if event.currency else None,
        attempt_count=event.attempt, decline_code=event.decline_code,
        next_attempt_at=(s.sane_moment(event.next_attempt_at, "next_attempt_at")
                         if event.next_attempt_at else None),
        update_url=str(event.update_url) if event.update_url else None,
    )
    # no invoice named: failures belong to the subscription's current renewal
    signal.cases_by_subscription = signal.invoice_ref is None
    return signal


def _storable(payload: dict) -> dict:
    s.ensure_storable(payload)
    return payload


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "json_invalid":
        return f"malformed JSON: {message}"
    return f"{where}: {message}" if where else message
