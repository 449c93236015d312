"""A local stand-in for the Stripe API, speaking Stripe's JSON shapes.

Only what PayRescue calls: Billing Portal sessions, invoice payments (basil), payment
intents, charges, customers, prices (with `expand[]=product`), and paying an open invoice
(an agent's retry). Tests fill `state` with
the objects Stripe would hold and read back the requests it received; `state.fail_with`
makes every call answer a Stripe error.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class StandinState:
    invoice_payments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    portal_requests: list[dict[str, str]] = field(default_factory=list)
    paid_invoices: list[str] = field(default_factory=list)  # POST /v1/invoices/{id}/pay
    decline_pay: bool = False
    requests: list[str] = field(default_factory=list)
    fail_with: int | None = None


STATE = web.AppKey("standin_state", StandinState)


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    error = {"type": "invalid_request_error" if status < 500 else "api_error",
             "message": message}
    if code:
        error["code"] = code
    return web.json_response({"error": error}, status=status)


@web.middleware
async def _auth_and_faults(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    state = request.app[STATE]
    state.requests.append(f"{request.method} {request.path}")
    if not request.headers.get("Authorization", "").startswith("Bearer sk_test_"):
        return _error(401, "Invalid API Key provided")
    if state.fail_with is not None:
        return _error(state.fail_with, "An error occurred with our connection to Stripe.")
    return await handler(request)


async def create_portal_session(request: web.Request) -> web.Response:
    form = dict(await request.post())
    request.app[STATE].portal_requests.append({k: str(v) for k, v in form.items()})
    if not form.get("customer"):
        return _error(400, "Missing required param: customer.", "parameter_missing")
    token = secrets.token_urlsafe(12)
    return web.json_response({
        "id": f"bps_{token}", "object": "billing_portal.session",
        "configuration": "bpc_standin", "created": 1767600000,
        "customer": form["customer"], "flow": {"type": form.get("flow_data[type]")},
        "livemode": False, "locale": form.get("locale"), "on_behalf_of": None,
        "return_url": form.get("return_url"),
        "url": f"https://billing.stripe.com/p/session/test_{token}",
    })


async def list_invoice_payments(request: web.Request) -> web.Response:
    invoice = request.query.get("invoice", "")
    data = request.app[STATE].invoice_payments.get(invoice, [])
    return web.json_response({"object": "list", "data": data, "has_more": False,
                              "url": "/v1/invoice_payments"})


async def retrieve_payment_intent(request: web.Request) -> web.Response:
    intent = request.app[STATE].payment_intents.get(request.match_info["id"])
    if intent is None:
        return _error(404, "No such payment_intent", "resource_missing")
    return web.json_response(intent)


async def retrieve_charge(request: web.Request) -> web.Response:
    charge = request.app[STATE].charges.get(request.match_info["id"])
    if charge is None:
        return _error(404, "No such charge", "resource_missing")
    return web.json_response(charge)


async def retrieve_customer(request: web.Request) -> web.Response:
    customer = request.app[STATE].customers.get(request.match_info["id"])
    if customer is None:
        return _error(404, "No such customer", "resource_missing")
    return web.json_response(customer)


async def retrieve_price(request: web.Request) -> web.Response:
    state = request.app[STATE]
    price = state.prices.get(request.match_info["id"])
    if price is None:
        return _error(404, "No such price", "resource_missing")
    expand = [v for k, v in request.query.items() if k.startswith("expand[")]
    if "product" in expand and price["product"] in state.products:
        price = {**price, "product": state.products[price["product"]]}
    return web.json_response(price)


async def pay_invoice(request: web.Request) -> web.Response:
    """Stripe charges the customer's default payment method; the webhook tells the end."""
    state = request.app[STATE]
    invoice_id = request.match_info["id"]
    state.paid_invoices.append(invoice_id)
    if state.decline_pay:
        return web.json_response({"error": {
            "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds."}}, status=402)
    return web.json_response({"id": invoice_id, "object": "invoice", "status": "paid",
                              "paid": True})


def create_standin() -> web.Application:
    app = web.Application(middlewares=[_auth_and_faults])
    app[STATE] = StandinState()
    app.add_routes([
        web.post("/v1/billing_portal/sessions", create_portal_session),
        web.get("/v1/invoice_payments", list_invoice_payments),
        web.get("/v1/payment_intents/{id}", retrieve_payment_intent),
        web.get("/v1/charges/{id}", retrieve_charge),
        web.get("/v1/customers/{id}", retrieve_customer),
        web.get("/v1/prices/{id}", retrieve_price),
        web.post("/v1/invoices/{id}/pay", pay_invoice),
    ])
    return app


def payment_intent(intent_id: str, *, decline_code: str | None, code: str = "card_declined",
                   method_type: str = "card") -> dict[str, Any]:
    """A failed PaymentIntent as Stripe returns it."""
    return {
        "id": intent_id, "object": "payment_intent", "amount": 2900, "currency": "eur",
        "status": "requires_payment_method", "livemode": False,
        "last_payment_error": {
            "type": "card_error", "code": code, "decline_code": decline_code,
            "message": "Your card was declined.",
            "payment_method": {"id": "pm_standin", "object": "payment_method",
                               "type": method_type},
        },
    }


def invoice_payment(invoice_id: str, intent: dict[str, Any], created: int) -> dict[str, Any]:
    """An InvoicePayment with its payment intent expanded (data.payment.payment_intent)."""
    return {
        "id": f"inpay_{secrets.token_hex(6)}", "object": "invoice_payment",
        "amount_paid": None, "amount_requested": intent["amount"], "created": created,
        "currency": intent["currency"], "invoice": invoice_id, "is_default": True,
        "livemode": False, "payment": {"type": "payment_intent", "payment_intent": intent},
        "status": "open",
        "status_transitions": {"canceled_at": None, "paid_at": None},
    }


def customer(customer_id: str, *, email: str | None, name: str | None = None,
             locales: list[str] | None = None, country: str | None = None) -> dict[str, Any]:
    """A Customer as Stripe returns it."""
    return {
        "id": customer_id, "object": "customer", "balance": 0, "created": 1767600000,
        "currency": "eur", "default_source": None, "delinquent": True, "description": None,
        "email": email, "invoice_prefix": "A1B2C3D4", "livemode": False, "metadata": {},
        "name": name, "phone": None, "preferred_locales": locales or [],
        "address": {"city": None, "country": country, "line1": None, "line2": None,
                    "postal_code": None, "state": None} if country else None,
        "invoice_settings": {"custom_fields": None, "default_payment_method": None,
                             "footer": None, "rendering_options": None},
        "shipping": None, "tax_exempt": "none", "test_clock": None,
    }


def price(price_id: str, product_id: str, *, nickname: str | None = None, amount: int = 2900
          ) -> dict[str, Any]:
    return {
        "id": price_id, "object": "price", "active": True, "billing_scheme": "per_unit",
        "created": 1767600000, "currency": "eur", "livemode": False, "lookup_key": None,
        "metadata": {}, "nickname": nickname, "product": product_id,
        "recurring": {"interval": "month", "interval_count": 1, "meter": None,
                      "usage_type": "licensed"},
        "tax_behavior": "unspecified", "type": "recurring", "unit_amount": amount,
        "unit_amount_decimal": str(amount),
    }


def product(product_id: str, name: str) -> dict[str, Any]:
    return {"id": product_id, "object": "product", "active": True, "created": 1767600000,
            "description": None, "images": [], "livemode": False, "metadata": {},
            "name": name, "type": "service", "updated": 1767600000}
