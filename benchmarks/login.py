"""What parallel log-ins cost everybody else: /healthz latency while 20 log-ins run.

Password checks are argon2 with its default cost (about 0.2 s of CPU each) and run in a
worker thread, so the event loop keeps answering. Prints the median and worst /healthz time
alone and during 20 parallel log-ins (wrong passwords, so the lock-out is counted too).
SQLite in a temporary directory; real argon2 parameters.

    python -m benchmarks login
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from payrescue.agents import add_agent
from payrescue.app import init_app
from payrescue.clock import Clock
from payrescue.config import load_settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.db.migrate import upgrade

PARALLEL = 20
PROBES = 40
_CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


async def _probe(client: aiohttp.ClientSession, base: str) -> list[float]:
    times = []
    for _ in range(PROBES):
        started = time.perf_counter()
        async with client.get(base + "/healthz") as response:
            await response.read()
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)
    return times


async def _log_in(base: str, number: int) -> int:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        page = await (await client.get(base + "/console/login")).text()
        token = _CSRF.search(page).group(1)
        async with client.post(base + "/console/login", data={
                "email": f"agent{number % 4}@example.org", "password": "wrong password",
                "csrf_token": token}) as response:
            return response.status


def _line(name: str, times: list[float]) -> str:
    return f"{name}: median {statistics.median(times):.1f} ms, worst {max(times):.1f} ms"


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.sqlite3'}"
        engine = create_engine(url)
        await upgrade(engine)
        async with create_sessionmaker(engine)() as db, db.begin():
            for number in range(4):
                await add_agent(db, email=f"agent{number}@example.org", name="A", role="agent",
                                password="a long enough password", now=Clock().now())
        settings = load_settings(data_dir=directory, database_url=url,
                                 secret_key="benchmark-secret-key-0123456789-abcdef")
        runner = web.AppRunner(init_app(settings, engine=engine, with_bot=False),
                               access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # noqa: SLF001
        try:
            async with aiohttp.ClientSession() as client:
                alone = await _probe(client, base)
                logins = asyncio.gather(*(_log_in(base, n) for n in range(PARALLEL)))
                busy = await _probe(client, base)
                statuses = await logins
            print(_line("/healthz alone", alone))
            print(_line(f"/healthz during {PARALLEL} parallel log-ins", busy))
            print(f"log-in answers: {sorted(set(statuses))}")
        finally:
            await runner.cleanup()
            await engine.dispose()
