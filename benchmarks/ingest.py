"""Signed `invoice.payment_failed` events per second into the service, beside a bare aiohttp
handler doing one INSERT on the same database in the same run (SQLite, then PostgreSQL when
reachable). Prints both rates and their ratio (target ≥ 0.5): the rounds alternate bare and
service, each round's ratio compares two runs seconds apart, and the median of those ratios is
the figure (this 2-core machine's speed drifts by a third between minutes; a ratio does not).

    python -m benchmarks ingest        # or: make bench
    BENCH_EVENTS=2000 BENCH_CONCURRENCY=20 BENCH_ROUNDS=3 python -m benchmarks ingest
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import stripe
from aiohttp import web
from sqlalchemy import text

from benchmarks import _bare
from benchmarks._postgres import with_postgres
from payrescue.app import init_app
from payrescue.config import load_settings
from payrescue.db import create_engine

EVENTS = int(os.environ.get("BENCH_EVENTS", "1500"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "20"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
WARM_UP = 300
WHSEC = "whsec_benchmark"
BARE_TABLE = "bench_bare_insert"
_BARE_INSERT = text("INSERT INTO bench_bare_insert (body) VALUES (:b)")


def _event(number: int, run: str) -> bytes:
    created = int(time.time())
    invoice = {
        "id": f"in_{run}_{number}", "object": "invoice", "customer": f"cus_{run}_{number}",
        "customer_email": f"m{number}.{run}@example.org", "customer_name": "Bench Member",
        "amount_due": 2900, "amount_paid": 0, "amount_remaining": 2900, "currency": "eur",
        "attempt_count": 1, "billing_reason": "subscription_cycle", "status": "open",
        "next_payment_attempt": created + 259200, "hosted_invoice_url": None,
        "parent": {"type": "subscription_details",
                   "subscription_details": {"subscription": f"sub_{run}_{number}"}},
    }
    return json.dumps({
        "id": f"evt_{run}_{number}", "object": "event", "api_version": "2025-03-31.basil",
        "created": created, "data": {"object": invoice}, "livemode": False,
        "pending_webhooks": 1, "type": "invoice.payment_failed",
    }).encode()


async def _fire(url: str, bodies: list[bytes], headers: Callable[[bytes], dict[str, str]]
                ) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    failures = 0

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            body = queue.get_nowait()
            async with http.post(url, data=body, headers=headers(body)) as response:
                await response.read()
                failures += response.status != 200

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return len(bodies) / elapsed


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port the OS chose
    return runner, f"http://127.0.0.1:{port}"


def _bare_app(url: str) -> web.Application:
    """The floor: read the body, one INSERT, answer 200."""
    app = web.Application(client_max_size=1024 * 1024)
    engine_key = web.AppKey("engine", object)

    async def context(app: web.Application):  # noqa: ANN202
        app[engine_key] = create_engine(url)
        yield
        await app[engine_key].dispose()

    async def handler(request: web.Request) -> web.Response:
        body = await request.text()
        async with request.app[engine_key].begin() as connection:
            await connection.execute(_BARE_INSERT, {"b": body})
        return web.json_response({"status": "ok"})

    app.cleanup_ctx.append(context)
    app.router.add_post("/bare", handler)
    return app


async def _analyze(url: str) -> None:
    """Fresh table statistics before each round. A production PostgreSQL keeps them fresh with
    autovacuum; this machine's runs with autovacuum off, and without statistics the planner
    reads a table that grew from empty a few seconds ago as if it were tiny, scanning it whole
    instead of using the index for the service's look-ups (a batch's `IN (…)` queries)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


async def _measure(name: str, url: str, data_dir: Path) -> None:
    await _bare.prepare(url, BARE_TABLE, "body TEXT")
    settings = load_settings(data_dir=data_dir, database_url=url, secret_key="b" * 40,
                             stripe_webhook_secret=WHSEC)
    service, service_url = await _serve(init_app(settings, with_bot=False))
    bare, bare_url = await _serve(_bare_app(url))

    def signed(body: bytes) -> dict[str, str]:
        return {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
            body.decode(), WHSEC), "Content-Type": "application/json"}

    def plain(_body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    async def round_of(events: int) -> tuple[float, float]:
        await _analyze(url)
        bodies = [_event(n, uuid.uuid4().hex[:8]) for n in range(events)]
        bare_rate = await _fire(f"{bare_url}/bare", bodies, plain)
        return bare_rate, await _fire(f"{service_url}/webhooks/stripe", bodies, signed)

    service_rates, bare_rates = [], []
    try:
        await round_of(WARM_UP)  # not measured: tables that are not empty, as in production
        for _ in range(ROUNDS):  # alternate, so both see the same machine load
            bare_rate, service_rate = await round_of(EVENTS)
            bare_rates.append(bare_rate)
            service_rates.append(service_rate)
    finally:
        await service.cleanup()
        await bare.cleanup()
    ratios = sorted(x / y for x, y in zip(service_rates, bare_rates, strict=True))
    print(f"{name:<11} service {statistics.median(service_rates):6.0f} events/s   bare insert "
          f"{statistics.median(bare_rates):6.0f} req/s   ratio {statistics.median(ratios):4.2f} "
          f"(rounds {ratios[0]:.2f}–{ratios[-1]:.2f}; {EVENTS} events × {ROUNDS} rounds, "
          f"{CONCURRENCY} concurrent, medians)", flush=True)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await _measure("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.sqlite3", Path(tmp))
        await with_postgres(lambda url: _measure("postgresql", url, Path(tmp)))


if __name__ == "__main__":
    asyncio.run(main())
