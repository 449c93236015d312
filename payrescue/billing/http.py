"""HTTP routes for payment events and update links; handlers stay thin.

Answers for providers are JSON: `{"status": …}` with 200 (also for a repeat, so the provider
stops retrying), or `{"error": "<one line>"}` with 400 (bad signature, or a body nested too
deeply), 401 (wrong MemberPress key), 404 (provider not configured), 413 (over 1 MiB) or 503
(database down: the provider retries later and nothing was written). A correctly signed event
we cannot understand is answered 200 `{"status": "rejected", "reason": …}` and kept for an
admin (`rejected`): its next delivery would not be understood either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import dunning, reach, timeline
from payrescue.billing import generic, links, memberpress, pages, rejected, stripe_events
from payrescue.billing import signals as s
from payrescue.billing.batches import Ingestor
from payrescue.billing.ingest import CREATING_KINDS, already_stored
from payrescue.billing.stripe_api import StripeApi, StripeUnavailable
from payrescue.config import Settings
from payrescue.db.models import Member
from payrescue.events import Event
from payrescue.i18n import normalise
from payrescue.keys import BUS, CLOCK, SESSIONMAKER, SETTINGS
from payrescue.outage import DATABASE, DATABASE_ERRORS, OutageLog

log = logging.getLogger(__name__)
STRIPE_API = web.AppKey("billing_stripe_api", StripeApi)
INGESTOR = web.AppKey("billing_ingestor", Ingestor)
OUTAGE = web.AppKey("billing_outage", OutageLog)
DATABASE_TIMEOUT_SECONDS = 15  # a hung database answers 503 rather than keeping Stripe waiting


_PROVIDERS = {"/webhooks/stripe": stripe_events.PROVIDER,
              "/webhooks/memberpress": memberpress.PROVIDER, "/api/v1/events": generic.PROVIDER}


def setup_billing(app: web.Application) -> None:
    app.add_routes([
        web.post("/webhooks/stripe", stripe_webhook),
        web.post("/webhooks/memberpress", memberpress_webhook),
        web.post("/api/v1/events", generic_event),
        web.get("/u/thanks", update_link_done),
        web.get("/u/{token:[^/]+}", update_link),
        web.post("/u/{token:[^/]+}/renew", renew_link),
    ])
    # providers retry every refused event: one line when refusals start, one when they end
    app[OUTAGE] = OutageLog(
        log, down="database unavailable: payment events are answered 503 until it is back; "
                  "providers retry them",
        back="database back: %d payment events were answered 503 meanwhile", group=DATABASE)
    app.cleanup_ctx.append(_stripe_api)
    app.cleanup_ctx.append(_ingestor)


async def _ingestor(app: web.Application) -> AsyncIterator[None]:
    ingestor = Ingestor(app[SESSIONMAKER], app[SETTINGS], app[CLOCK], app[BUS],
                        timeout=DATABASE_TIMEOUT_SECONDS)
    app[INGESTOR] = ingestor
    ingestor.start()
    yield
    await ingestor.close()


async def _stripe_api(app: web.Application) -> AsyncIterator[None]:
    api = StripeApi(app[SETTINGS]) if app[SETTINGS].stripe_api_key else None
    if api is not None:
        app[STRIPE_API] = api
    yield
    if api is not None:
        await api.close()


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason.splitlines()[0][:300]}, status=status)


async def _read(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _Refused(413, "body larger than 1 MiB") from None


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


async def stripe_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]

    async def signal() -> s.Signal:
        if settings.stripe_webhook_secret is None:
            raise _Refused(404, "Stripe webhooks are not configured")
        raw = await _read(request)
        secrets = [x.strip() for x in settings.stripe_webhook_secret.get_secret_value().split(",")
                   if x.strip()]
        try:
            stripe_events.verify(raw, request.headers.get("Stripe-Signature"), secrets)
        except stripe_events.BadSignature as exc:
            raise _Refused(400, f"Stripe-Signature: {exc}") from None
        return stripe_events.parse(raw)

    return await _handle(request, signal)


async def memberpress_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]

    async def signal() -> s.Signal:
        try:
            memberpress.verify(request.headers.get(memberpress.KEY_HEADER), settings)
        except memberpress.BadKey as exc:
            status = 404 if settings.memberpress_webhook_key is None else 401
            raise _Refused(status, str(exc)) from None
        raw = await _read(request)
        return memberpress.parse(raw, settings, request.app[CLOCK].now())

    return await _handle(request, signal)


async def generic_event(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]

    async def signal() -> s.Signal:
        if settings.generic_api_secret is None:
            raise _Refused(404, "the events API is not configured")
        raw = await _read(request)
        try:
            stripe_events.verify(raw, request.headers.get(generic.SIGNATURE_HEADER),
                                 [settings.generic_api_secret.get_secret_value()])
        except stripe_events.BadSignature as exc:
            raise _Refused(400, f"{generic.SIGNATURE_HEADER}: {exc}") from None
        return generic.parse(raw)

    return await _handle(request, signal)


async def _handle(request: web.Request, read_signal) -> web.Response:  # noqa: ANN001
    try:
        signal = await read_signal()
        async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
            if await _enrich(request, signal) == "duplicate":
                return web.json_response({"status": "duplicate"})
            outcome = await request.app[INGESTOR].submit(signal)
    except _Refused as exc:
        return _error(exc.status, str(exc))
    except s.BadEvent as exc:  # signed, so from the provider: keep it, stop the retries
        try:
            return await _reject(request, str(exc))
        except DATABASE_ERRORS as db_exc:
            request.app[OUTAGE].failed(db_exc, path=request.path)
            return _error(503, "database unavailable; please retry later")
    except DATABASE_ERRORS as exc:
        request.app[OUTAGE].failed(exc, path=request.path)
        return _error(503, "database unavailable; please retry later")
    request.app[OUTAGE].succeeded()
    log.info("payment event", extra={
        "provider": signal.provider, "event_type": signal.event_type,
        "outcome": outcome.status, "case_id": outcome.case_id, "member_id": outcome.member_id})
    return web.json_response({"status": outcome.status, "case_id": outcome.case_id})


async def _reject(request: web.Request, reason: str) -> web.Response:
    provider = _PROVIDERS[request.path]
    raw = await request.read()  # aiohttp kept the body the check read
    async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS), \
            request.app[SESSIONMAKER]() as session, session.begin():
        row = await rejected.record(session, provider, raw, reason, request.app[CLOCK].now())
    request.app[OUTAGE].succeeded()
    log.warning("payment event rejected", extra={"provider": provider,
                                                  "rejected_id": row.id, "reason": row.reason})
    return web.json_response({"status": "rejected", "reason": row.reason})


async def _enrich(request: web.Request, signal: s.Signal) -> str | None:
    """Ask Stripe what the webhook leaves out (the decline code, a dispute's customer, the
    e-mail, name and language of a customer not known yet, the plan's name), after a cheap
    check that this is not a repeat we already acted on."""
    api = request.app.get(STRIPE_API)
    if api is None or signal.provider != stripe_events.PROVIDER:
        return None
    wants_dispute_customer = (signal.kind == s.DISPUTE and not signal.member.customer_id
                              and signal.payment_intent_ref)
    wants_plan = signal.kind == s.FAILED and signal.plan_from_description and signal.price_ref
    customer_id = signal.member.customer_id if signal.kind in CREATING_KINDS else None
    if not (signal.needs_decline_lookup or wants_dispute_customer or wants_plan or customer_id):
        return None
    async with request.app[SESSIONMAKER]() as session:
        if await already_stored(session, signal.provider, signal.event_id):
            return "duplicate"
        wants_customer = customer_id is not None and not await _settled_member(session,
                                                                                customer_id)
    if signal.needs_decline_lookup:
        await api.lookup_decline(signal)
    elif wants_dispute_customer:
        signal.member.customer_id = await api.customer_of_charge(signal.payment_intent_ref)
    if wants_customer:
        await api.fill_customer(signal)
    if wants_plan:
        signal.plan_name = await api.plan_name(signal.price_ref) or signal.plan_name
    return None


async def _settled_member(session: AsyncSession, customer_id: str) -> bool:
    """A member we know with a language: nothing to ask Stripe about them."""
    language = await session.scalar(select(Member.language).where(
        Member.stripe_customer_id == customer_id))
    return language is not None


# --- update links ------------------------------------------------------------------------


def _browser_language(request: web.Request) -> str:
    settings = request.app[SETTINGS]
    for part in request.headers.get("Accept-Language", "").split(","):
        language = normalise(part.split(";")[0].strip())
        if language:
            return language
    return settings.default_language


async def update_link(request: web.Request) -> web.StreamResponse:
    settings, now = request.app[SETTINGS], request.app[CLOCK].now()
    fallback = _browser_language(request)
    try:
        async with request.app[SESSIONMAKER]() as session, session.begin():
            opened = await links.open_link(session, request.match_info["token"], settings, now,
                                           fallback)
            where = await links.destination(session, opened)
            renewable = opened.refusal is links.Refusal.EXPIRED and await _renewable(
                session, request.match_info["token"], settings, now)
    except DATABASE_ERRORS as exc:
        log.warning("update link not opened: database unavailable",
                    extra={"error": type(exc).__name__})
        return pages.unavailable(fallback, str(request.url))
    if opened.refusal is not None:
        log.info("update link refused", extra={"reason": opened.refusal.value})
        renew = f"/u/{request.match_info['token']}/renew" if renewable else None
        return pages.refused(opened.language, settings,
                             expired=opened.refusal is links.Refusal.EXPIRED, renew_url=renew)
    log.info("update link opened", extra={"case_id": opened.case.id})
    if opened.entry is not None:  # the console shows the opening as it happens
        await request.app[BUS].publish(timeline.created_event(opened.entry))
    if where.settled:
        return pages.settled(opened.language)
    if where.portal_customer:
        return await _to_portal(request, where.portal_customer, opened.language)
    if where.url:
        raise web.HTTPFound(where.url)
    return pages.no_destination(opened.language, settings)


async def _renewable(session: AsyncSession, token: str, settings: Settings,
                     now: datetime) -> bool:
    found = await links.expired_case(session, token, settings, now)
    return found is not None and reach.channel_for(found[1], settings) is not None \
        and not found[1].opted_out


async def renew_link(request: web.Request) -> web.StreamResponse:
    """The expired page's button: a fresh link on the member's channel (once a day)."""
    settings, now = request.app[SETTINGS], request.app[CLOCK].now()
    fallback = _browser_language(request)
    try:
        async with request.app[SESSIONMAKER]() as session, session.begin():
            found = await links.expired_case(session, request.match_info["token"], settings, now)
            if found is None:
                return pages.refused(fallback, settings, expired=False)
            case, member = found
            row, channel = await dunning.send_fresh_link(session, settings, case, member, now)
            language = dunning.language_of(member, settings)
    except DATABASE_ERRORS as exc:
        log.warning("fresh link not sent: database unavailable",
                    extra={"error": type(exc).__name__})
        return pages.unavailable(fallback, str(request.url))
    log.info("fresh link asked for", extra={"case_id": case.id, "channel": channel,
                                            "queued": row is not None})
    if row is not None:
        await request.app[BUS].publish(Event("outbox.queued", {"outbox_id": row.id}))
    return pages.fresh_link_sent(language, channel)


async def _to_portal(request: web.Request, customer: str, language: str) -> web.StreamResponse:
    api = request.app.get(STRIPE_API)
    if api is None:
        log.error("update link needs a Stripe API key (PAYRESCUE_STRIPE_API_KEY)")
        return pages.unavailable(language, str(request.url))
    try:
        url = await api.portal_url(customer, request.app[SETTINGS].public_url("/u/thanks"),
                                   language)
    except StripeUnavailable as exc:
        log.warning("billing portal unavailable", extra={"error": str(exc)})
        return pages.unavailable(language, str(request.url))
    raise web.HTTPFound(url)


async def update_link_done(request: web.Request) -> web.Response:
    return pages.thanks(_browser_language(request))
