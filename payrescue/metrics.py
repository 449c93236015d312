"""Prometheus metrics at `GET /metrics`, behind a bearer token (`PAYRESCUE_METRICS_TOKEN`).

Without a configured token the endpoint does not exist (404), so figures never leak from a
default install. Two kinds of metric:

- counters and gauges this process keeps — other parts call the small functions below
  (`count_event`, `count_case`, `count_delivery`, `live_stream`); sum them over instances;
- gauges read from the database at each scrape (cases by status, outbox rows by status,
  handoffs waiting, stored provider events by outcome) — every instance reports the same
  values, so aggregate them with `max`.

Labels take only values from short fixed sets, so a buggy caller cannot explode the number
of time series; request latency is labelled by route pattern, never by the path (update
links carry tokens in their path).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from sqlalchemy import func, select

from payrescue.db.models import Conversation, Outbox, PaymentEvent, RecoveryCase
from payrescue.edge import same_secret
from payrescue.keys import SESSIONMAKER, SETTINGS
from payrescue.outage import DATABASE, DATABASE_ERRORS, OutageLog

log = logging.getLogger(__name__)
OUTAGE = web.AppKey("metrics_outage", OutageLog)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

PROVIDERS = {"stripe", "memberpress", "generic", "csv"}
CASE_CHANGES = {"opened", "failed_again", "recovered", "lost", "action_required",
                "card_expiring", "held", "released"}
DELIVERY_OUTCOMES = {"sent", "429", "403", "400", "failed", "retry"}
CASE_STATUSES = ("open", "recovered", "lost")
OUTBOX_STATUSES = ("queued", "sending", "sent", "failed", "cancelled")
_WORD = re.compile(r"^[a-z0-9_]{1,30}$")

EVENTS = Counter("payrescue_payment_events", "Payment provider events received",
                 ["provider", "outcome"], registry=REGISTRY)
CASES_CHANGED = Counter("payrescue_case_changes", "Recovery case changes made by this process",
                        ["change"], registry=REGISTRY)
DELIVERIES = Counter("payrescue_outbox_deliveries", "Telegram delivery attempts by outcome",
                     ["outcome"], registry=REGISTRY)
STREAMS = Gauge("payrescue_console_streams", "Live console streams open in this process",
                registry=REGISTRY)
REQUESTS = Histogram("payrescue_http_request_duration_seconds", "HTTP request latency",
                     ["method", "route", "status"], registry=REGISTRY,
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CASES = Gauge("payrescue_cases", "Recovery cases by status (from the database)", ["status"],
              registry=REGISTRY)
OUTBOX = Gauge("payrescue_outbox_rows", "Outbox rows by status (from the database); "
               "queued is the outbox depth", ["status"], registry=REGISTRY)
STORED_EVENTS = Gauge("payrescue_payment_events_stored",
                      "Provider events stored, by what they caused (from the database)",
                      ["provider", "outcome"], registry=REGISTRY)
HANDOFFS_WAITING = Gauge("payrescue_handoffs_waiting",
                         "Conversations waiting in the queue for a person (from the database)",
                         registry=REGISTRY)
DATABASE_UP = Gauge("payrescue_metrics_database_up",
                    "1 when the last scrape could read the database", registry=REGISTRY)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bounded(value: str | None, allowed: set[str] | None = None) -> str:
    text = (value or "").lower()
    if allowed is not None:
        return text if text in allowed else "other"
    return text if _WORD.match(text) else "other"


def count_event(provider: str, outcome: str) -> None:
    """A provider event arrived; `outcome` e.g. processed, duplicate, rejected, ignored."""
    EVENTS.labels(_bounded(provider, PROVIDERS), _bounded(outcome)).inc()


def count_case(change: str) -> None:
    """A case changed (the `change` of the `case.changed` event: opened, recovered, lost…)."""
    CASES_CHANGED.labels(_bounded(change, CASE_CHANGES)).inc()


def count_delivery(outcome: str | int) -> None:
    """One Telegram send attempt: "sent", 429, 403, 400, "failed" (gave up) or "retry"."""
    DELIVERIES.labels(_bounded(str(outcome), DELIVERY_OUTCOMES)).inc()


@contextmanager
def live_stream() -> Iterator[None]:
    """Wrap a console SSE/WebSocket stream's lifetime: `with metrics.live_stream(): ...`."""
    STREAMS.inc()
    try:
        yield
    finally:
        STREAMS.dec()


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _is_stream(response: web.StreamResponse) -> bool:
    """Live streams last minutes by design; they would only blur the latency figures."""
    return isinstance(response, web.WebSocketResponse) or (
        response.content_type == "text/event-stream")


@web.middleware
async def latency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects, 404s and other answers raised as exceptions
        _observe(request, exc.status, started)
        raise
    except Exception:
        _observe(request, 500, started)  # aiohttp answers an unhandled error with 500
        raise
    if not _is_stream(response):
        _observe(request, response.status, started)
    return response


def _observe(request: web.Request, status: int, started: float) -> None:
    REQUESTS.labels(request.method, _route_of(request), str(status)).observe(
        time.perf_counter() - started)


async def _read_database(request: web.Request) -> None:
    async with asyncio.timeout(5), request.app[SESSIONMAKER]() as session:
        cases = dict((await session.execute(
            select(RecoveryCase.status, func.count()).group_by(RecoveryCase.status))).all())
        outbox = dict((await session.execute(
            select(Outbox.status, func.count()).group_by(Outbox.status))).all())
        events = (await session.execute(
            select(PaymentEvent.provider, PaymentEvent.outcome, func.count())
            .group_by(PaymentEvent.provider, PaymentEvent.outcome))).all()
        waiting = await session.scalar(select(func.count()).select_from(Conversation).where(
            Conversation.status == "waiting"))
    for status in sorted(set(CASE_STATUSES) | cases.keys()):
        CASES.labels(_bounded(status)).set(cases.get(status, 0))
    for status in sorted(set(OUTBOX_STATUSES) | outbox.keys()):
        OUTBOX.labels(_bounded(status)).set(outbox.get(status, 0))
    HANDOFFS_WAITING.set(waiting or 0)
    STORED_EVENTS.clear()  # label sets come and go with the data
    for provider, outcome, count in events:
        STORED_EVENTS.labels(_bounded(provider, PROVIDERS), _bounded(outcome or "none")).inc(
            count)


def _authorised(request: web.Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {token}"
    return same_secret(given, expected)


async def metrics_view(request: web.Request) -> web.Response:
    configured = request.app[SETTINGS].metrics_token
    if configured is None or not configured.get_secret_value():
        raise web.HTTPNotFound()
    if not _authorised(request, configured.get_secret_value()):
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                                   text="A valid bearer token is required.")
    try:
        await _read_database(request)
        DATABASE_UP.set(1)
    except DATABASE_ERRORS as exc:
        # the process metrics are still worth scraping; the gauge tells the database is away
        request.app[OUTAGE].failed(exc)
        DATABASE_UP.set(0)
    else:
        request.app[OUTAGE].succeeded()
    return web.Response(body=generate_latest(REGISTRY),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_metrics(app: web.Application) -> None:
    """Add `GET /metrics` and the request-latency middleware (outermost, to time everything)."""
    app.middlewares.insert(0, latency_middleware)
    app.router.add_get("/metrics", metrics_view)
    # Prometheus scrapes every few seconds: one line when the database goes, one when back
    app[OUTAGE] = OutageLog(log, down="metrics: database unreadable",
                            back="metrics: database readable again after %d failed scrapes",
                            group=DATABASE)
