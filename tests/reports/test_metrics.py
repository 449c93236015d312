"""GET /metrics: only with the configured bearer token, and the figures Prometheus scrapes."""

from __future__ import annotations

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from payrescue import metrics
from payrescue.config import Settings
from payrescue.db.models import PaymentEvent
from payrescue.keys import SESSIONMAKER, SETTINGS
from tests.reports.scenario import seed, utc

TOKEN = "scrape-token-0123456789abcdef"


def _app(settings: Settings, sessionmaker) -> web.Application:  # noqa: ANN001
    app = web.Application()
    app[SETTINGS] = settings
    app[SESSIONMAKER] = sessionmaker
    metrics.setup_metrics(app)

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hi")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: hi\n\n")
        return response

    app.router.add_get("/u/{token}", hello)
    app.router.add_get("/stream", stream)
    return app


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


async def test_without_a_configured_token_there_is_no_endpoint(
    aiohttp_client, settings: Settings, sessionmaker  # noqa: ANN001
) -> None:
    client = await aiohttp_client(_app(settings, sessionmaker))
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN])
async def test_a_missing_or_wrong_token_is_refused(
    aiohttp_client, settings: Settings, sessionmaker, header: str | None  # noqa: ANN001
) -> None:
    settings = settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    client = await aiohttp_client(_app(settings, sessionmaker))
    response = await client.get("/metrics", headers={"Authorization": header} if header else {})
    assert response.status == 401
    assert "payrescue" not in await response.text()


async def test_scrape_shows_counts_from_callers_and_the_database(
    aiohttp_client, settings: Settings, sessionmaker, session  # noqa: ANN001
) -> None:
    await seed(session)
    for number, outcome in enumerate(["processed", "processed", "stale"]):
        session.add(PaymentEvent(provider="stripe", event_id=f"evt_{number}", event_type="x",
                                 received_at=utc("2026-03-24T10:00"), payload={},
                                 outcome=outcome))
    await session.commit()
    settings = settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    client = await aiohttp_client(_app(settings, sessionmaker))
    before = _samples(await (await client.get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text())

    metrics.count_event("stripe", "processed")
    metrics.count_event("paypal?", "x" * 80)  # unknown values fold into "other"
    metrics.count_case("recovered")
    metrics.count_delivery(429)
    with metrics.live_stream():
        assert (await client.get("/u/secret-token-in-path")).status == 200
        assert (await client.get("/stream")).status == 200
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = await response.text()
    after = _samples(text)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("payrescue_payment_events_total", provider="stripe", outcome="processed") == 1
    assert grew("payrescue_payment_events_total", provider="other", outcome="other") == 1
    assert grew("payrescue_case_changes_total", change="recovered") == 1
    assert grew("payrescue_outbox_deliveries_total", outcome="429") == 1
    assert after[("payrescue_console_streams", ())] == 1
    # from the database: the scenario's ten cases and its one conversation in the queue
    assert after[("payrescue_cases", (("status", "recovered"),))] == 5
    assert after[("payrescue_cases", (("status", "lost"),))] == 2
    assert after[("payrescue_cases", (("status", "open"),))] == 3
    assert after[("payrescue_handoffs_waiting", ())] == 1
    assert after[("payrescue_outbox_rows", (("status", "queued"),))] == 0
    assert after[("payrescue_metrics_database_up", ())] == 1
    stored = "payrescue_payment_events_stored"
    assert after[(stored, (("outcome", "processed"), ("provider", "stripe")))] == 2
    assert after[(stored, (("outcome", "stale"), ("provider", "stripe")))] == 1
    # latency by route pattern: the token in the path never becomes a label
    assert grew("payrescue_http_request_duration_seconds_count", method="GET",
                route="/u/{token}", status="200") == 1
    assert "secret-token-in-path" not in text
    assert 'route="/stream"' not in text  # live streams would only blur the latencies
