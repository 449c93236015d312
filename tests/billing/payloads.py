"""Provider payloads in the shapes real endpoints send, written for these tests.

Stripe: an Invoice as the API versions 2025-01-27 "acacia" (subscription, payment_intent and
charge on the invoice; price and plan objects on the line), 2025-03-31 "basil" and
2026-07-29 "dahlia" (subscription under `parent.subscription_details`, lines naming the price
only by id under `pricing.price_details`, no payment_intent/charge/paid) put it; a
Subscription, a PaymentIntent without `invoice` (basil on), a PaymentMethod. MemberPress: the
Developer Tools' transaction and subscription bodies are in `conftest` (`mp_transaction`,
`mp_subscription`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.billing.conftest import stripe_event

ACACIA, BASIL, DAHLIA = "2025-01-27.acacia", "2025-03-31.basil", "2026-07-29.dahlia"
VERSIONS = (ACACIA, BASIL, DAHLIA)
PERIOD = (1767603600, 1770282000)  # 5 Jan → 5 Feb 2026


def _line(version: str, invoice_id: str, sub: str, amount: int, description: str,
          nickname: str | None) -> dict[str, Any]:
    line: dict[str, Any] = {
        "id": f"il_{invoice_id}", "object": "line_item", "amount": amount, "currency": "eur",
        "description": description, "discount_amounts": [], "discountable": True,
        "discounts": [], "invoice": invoice_id, "livemode": False, "metadata": {},
        "period": {"start": PERIOD[0], "end": PERIOD[1]}, "quantity": 1,
    }
    if version == ACACIA:
        price = {"id": "price_Gold", "object": "price", "active": True,
                 "billing_scheme": "per_unit", "currency": "eur", "nickname": nickname,
                 "product": "prod_Gold", "recurring": {
                     "interval": "month", "interval_count": 1, "usage_type": "licensed"},
                 "type": "recurring", "unit_amount": amount}
        line.update(price=price, plan={**price, "object": "plan", "amount": amount,
                                       "interval": "month", "interval_count": 1},
                    proration=False, subscription=sub, subscription_item="si_Gold",
                    type="subscription")
    else:
        line.update(
            parent={"type": "subscription_item_details", "invoice_item_details": None,
                    "subscription_item_details": {"invoice_item": None, "proration": False,
                                                  "proration_details": {"credited_items": None},
                                                  "subscription": sub,
                                                  "subscription_item": "si_Gold"}},
            pricing={"type": "price_details", "unit_amount_decimal": str(amount),
                     "price_details": {"price": "price_Gold", "product": "prod_Gold"}},
            pretax_credit_amounts=[], taxes=[])
    return line


def real_invoice(version: str, invoice_id: str = "in_1Real", *, customer: str = "cus_Real",
                 email: str | None = "rita@example.org", sub: str = "sub_Real",
                 amount: int = 1400, attempt_count: int = 1, status: str = "open",
                 billing_reason: str = "subscription_cycle", country: str | None = "DE",
                 account_country: str = "DE", collection: str = "charge_automatically",
                 next_attempt: int | None = 1767862800,
                 description: str = "1 × Happy Couple (at €14.00 / month)",
                 nickname: str | None = None) -> dict[str, Any]:
    paid = status == "paid"
    obj: dict[str, Any] = {
        "id": invoice_id, "object": "invoice", "account_country": account_country,
        "account_name": "Yoga am See", "amount_due": amount,
        "amount_paid": amount if paid else 0, "amount_remaining": 0 if paid else amount,
        "amount_shipping": 0, "attempt_count": attempt_count, "attempted": attempt_count > 0,
        "auto_advance": not paid and status == "open", "billing_reason": billing_reason,
        "collection_method": collection, "created": 1767603600, "currency": "eur",
        "customer": customer,
        "customer_address": {"city": "Wien" if country == "AT" else "Berlin",
                             "country": country, "line1": "Seestraße 1", "line2": None,
                             "postal_code": "10115", "state": None} if country else None,
        "customer_email": email, "customer_name": "Rita Berger" if email else None,
        "customer_phone": None, "customer_shipping": None, "customer_tax_exempt": "none",
        "default_payment_method": None, "description": None, "discounts": [],
        "due_date": 1768208400 if collection == "send_invoice" else None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_1Real/{invoice_id}",
        "lines": {"object": "list", "has_more": False, "total_count": 1,
                  "url": f"/v1/invoices/{invoice_id}/lines",
                  "data": [_line(version, invoice_id, sub, amount, description, nickname)]},
        "livemode": False, "metadata": {},
        "next_payment_attempt": None if paid or status != "open" else next_attempt,
        "number": f"{invoice_id.upper()}-0001", "period_end": PERIOD[0],
        "period_start": PERIOD[0] - 2678400, "status": status,
        "status_transitions": {"finalized_at": 1767603600, "marked_uncollectible_at": None,
                               "paid_at": 1767690000 if paid else None, "voided_at": None},
        "subtotal": amount, "total": amount, "webhooks_delivered_at": 1767603600,
    }
    if version == ACACIA:
        obj.update(subscription=sub, payment_intent=f"pi_{invoice_id}", charge=None,
                   paid=paid, subscription_details={"metadata": {}})
    else:
        obj.update(parent={"type": "subscription_details", "quote_details": None,
                           "subscription_details": {"metadata": {}, "subscription": sub}},
                   total_pretax_credit_amounts=[], confirmation_secret=None)
    return obj


def real_subscription(status: str, *, sub: str = "sub_Real", customer: str = "cus_Real",
                      ended_at: int | None = None, nickname: str | None = "Happy Couple"
                      ) -> dict[str, Any]:
    return {
        "id": sub, "object": "subscription", "billing_cycle_anchor": PERIOD[0],
        "cancel_at": None, "cancel_at_period_end": False, "canceled_at": ended_at,
        "collection_method": "charge_automatically", "created": 1751328000, "currency": "eur",
        "customer": customer, "ended_at": ended_at, "latest_invoice": "in_1Real",
        "livemode": False, "metadata": {},
        "pause_collection": None, "status": status,
        "items": {"object": "list", "has_more": False, "total_count": 1, "data": [{
            "id": "si_Gold", "object": "subscription_item", "current_period_start": PERIOD[0],
            "current_period_end": PERIOD[1], "quantity": 1, "subscription": sub,
            "price": {"id": "price_Gold", "object": "price", "currency": "eur",
                      "nickname": nickname, "product": "prod_Gold",
                      "recurring": {"interval": "month", "interval_count": 1,
                                    "usage_type": "licensed"},
                      "type": "recurring", "unit_amount": 1400}}]},
    }


def failed_intent(intent_id: str, *, customer: str = "cus_Real", amount: int = 1400,
                  decline_code: str = "expired_card", invoice: str | None = None
                  ) -> dict[str, Any]:
    """A PaymentIntent after a failed attempt; from basil on it names no invoice."""
    intent: dict[str, Any] = {
        "id": intent_id, "object": "payment_intent", "amount": amount,
        "amount_received": 0, "capture_method": "automatic", "currency": "eur",
        "customer": customer, "description": "Subscription update", "livemode": False,
        "last_payment_error": {
            "type": "card_error", "code": "card_declined" if decline_code != "expired_card"
            else "expired_card", "decline_code": decline_code,
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": "Your card was declined.",
            "payment_method": {"id": "pm_1Real", "object": "payment_method", "type": "card"}},
        "metadata": {}, "payment_method": None, "payment_method_types": ["card"],
        "status": "requires_payment_method",
    }
    if invoice is not None:
        intent["invoice"] = invoice
    return intent


def updated_card(customer: str = "cus_Real") -> dict[str, Any]:
    return {"id": "pm_1Real", "object": "payment_method", "allow_redisplay": "unspecified",
            "billing_details": {"address": None, "email": None, "name": None, "phone": None},
            "card": {"brand": "visa", "country": "DE", "exp_month": 8, "exp_year": 2029,
                     "last4": "4242", "funding": "credit"},
            "created": 1751328000, "customer": customer, "livemode": False, "metadata": {},
            "type": "card"}


def event(event_type: str, obj: dict[str, Any], at: datetime, version: str = BASIL,
          **extra: Any) -> dict[str, Any]:
    return stripe_event(event_type, obj, at, api_version=version, **extra)
