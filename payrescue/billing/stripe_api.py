"""Calls to Stripe's API through the official library: Billing Portal sessions, the
decline code of a failed attempt, a customer the webhook does not describe (e-mail, name,
language) and a plan's name (price → nickname or product). The base address comes from
the settings, so tests point it at a local stand-in; the library's aiohttp client keeps
the calls non-blocking."""

from __future__ import annotations

import logging
from typing import Any

import stripe

from payrescue.billing import signals as s
from payrescue.billing.stripe_events import language_of
from payrescue.config import Settings

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 10


class StripeUnavailable(Exception):
    """Stripe (or the network to it) failed; the message names no personal data."""


class StripeApi:
    """One `StripeClient` per process, with an aiohttp session closed at shutdown."""

    _PLAN_NAMES_KEPT = 1000  # a price's nickname and product name rarely change

    def __init__(self, settings: Settings) -> None:
        if settings.stripe_api_key is None:
            raise ValueError("stripe_api_key is not set")
        self._http = stripe.AIOHTTPClient(timeout=TIMEOUT_SECONDS)
        self.client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses={"api": str(settings.stripe_api_base).rstrip("/")},
            http_client=self._http,
            max_network_retries=2,
        )
        self._plan_names: dict[str, str | None] = {}

    async def close(self) -> None:
        await self._http.close_async()

    async def portal_url(self, customer_id: str, return_url: str, language: str) -> str:
        """A fresh Billing Portal session that opens straight on "update payment method"."""
        try:
            session = await self.client.v1.billing_portal.sessions.create_async(params={
                "customer": customer_id,
                "return_url": return_url,
                "locale": language,
                "flow_data": {"type": "payment_method_update"},
            })
        except stripe.StripeError as exc:
            raise StripeUnavailable(f"billing portal: {type(exc).__name__}") from exc
        return session.url

    async def lookup_decline(self, signal: s.Signal) -> None:
        """Fill in the decline code of a failed invoice payment, if Stripe tells it.

        A failed look-up is logged and left: the case opens as "unknown" and is corrected
        when `payment_intent.payment_failed` or `charge.failed` brings the code.
        """
        try:
            if signal.payment_intent_ref:
                intent = await self.client.v1.payment_intents.retrieve_async(
                    signal.payment_intent_ref)
                error = intent.to_dict().get("last_payment_error") or {}
            else:
                error = await self._error_from_invoice_payments(signal.invoice_ref or "")
        except stripe.StripeError as exc:
            log.warning("decline look-up failed",
                        extra={"error": type(exc).__name__, "event_id": signal.event_id})
            return
        signal.decline_code = _text(error.get("decline_code"))
        signal.error_code = _text(error.get("code"))

    async def _error_from_invoice_payments(self, invoice_id: str) -> dict[str, Any]:
        payments = await self.client.v1.invoice_payments.list_async(params={
            "invoice": invoice_id, "expand": ["data.payment.payment_intent"]})
        latest: dict[str, Any] = {}
        newest = -1
        for payment in payments.to_dict().get("data") or []:
            intent = (payment.get("payment") or {}).get("payment_intent")
            created = payment.get("created") or 0
            if isinstance(intent, dict) and created >= newest:
                newest, latest = created, intent.get("last_payment_error") or {}
        return latest

    async def fill_customer(self, signal: s.Signal) -> None:
        """E-mail, name and language of the customer the event names, from the Customer:
        its `preferred_locales` first, else the invoice's country guess, else its own."""
        customer_id = signal.member.customer_id or ""
        try:
            customer = (await self.client.v1.customers.retrieve_async(customer_id)).to_dict()
        except stripe.StripeError as exc:
            log.warning("customer look-up failed",
                        extra={"error": type(exc).__name__, "event_id": signal.event_id})
            return
        ref = signal.member
        ref.email = ref.email or _text(customer.get("email"))
        ref.name = ref.name or _text(customer.get("name"))
        country = _text((customer.get("address") or {}).get("country"))
        ref.language = (language_of(customer.get("preferred_locales"), None) or ref.language
                        or language_of(None, country))

    async def plan_name(self, price_id: str) -> str | None:
        """The price's nickname, else its product's name; None when Stripe cannot say."""
        if price_id in self._plan_names:
            return self._plan_names[price_id]
        try:
            price = (await self.client.v1.prices.retrieve_async(
                price_id, params={"expand": ["product"]})).to_dict()
        except stripe.StripeError as exc:
            log.warning("price look-up failed", extra={"error": type(exc).__name__})
            return None
        product = price.get("product")
        name = _text(price.get("nickname")) or (
            _text(product.get("name")) if isinstance(product, dict) else None)
        if len(self._plan_names) >= self._PLAN_NAMES_KEPT:
            self._plan_names.clear()
        self._plan_names[price_id] = name[:200] if name else None
        return self._plan_names[price_id]

    async def customer_of_charge(self, charge_id: str) -> str | None:
        try:
            charge = await self.client.v1.charges.retrieve_async(charge_id)
        except stripe.StripeError as exc:
            log.warning("charge look-up failed", extra={"error": type(exc).__name__})
            return None
        return _text(charge.to_dict().get("customer"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
