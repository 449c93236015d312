"""Running the service in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from payrescue.app import init_app
from payrescue.config import Settings
from payrescue.db import create_engine
from payrescue.db.migrate import SchemaOutOfDate, ensure_current, missing_sqlite_file
from payrescue.logs import setup_logging
from payrescue.outage import DATABASE_ERRORS

log = logging.getLogger(__name__)


async def check_database(settings: Settings) -> str | None:
    """Why the database cannot serve this version, or None when it can; never creates one."""
    missing = missing_sqlite_file(settings.effective_database_url)
    if missing is not None:
        return f"no database at {missing}: run `payrescue db upgrade` first"
    engine = create_engine(settings.effective_database_url)
    try:
        async with asyncio.timeout(10):
            await ensure_current(engine)
    except SchemaOutOfDate as exc:
        return str(exc)
    except DATABASE_ERRORS as exc:
        return f"cannot reach the database ({exc.__class__.__name__}); check PAYRESCUE_DATABASE_URL"
    finally:
        await engine.dispose()
    return None


async def serve(settings: Settings, *, share_port: bool = False) -> int:
    """Run until SIGINT/SIGTERM; `share_port` lets several workers listen on one port."""
    setup_logging(settings.log_level)
    problem = await check_database(settings)
    if problem:
        print(f"payrescue: {problem}", file=sys.stderr)
        return 1
    runner = web.AppRunner(init_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=share_port or None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"payrescue: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    settle_heap()
    log.info("listening", extra={"host": settings.host, "port": settings.port})
    await wait_for_stop_signal()
    log.info("stopping")
    await runner.cleanup()
    return 0


def settle_heap() -> None:
    """Once a process has started: what it keeps for its whole life (modules, catalogs,
    compiled templates, the application) is moved out of the cyclic garbage collector's way.

    Otherwise every full collection walks those ~150,000 objects again, and a request that
    meets one waits for it: 100-200 ms on a busy machine, the slowest pages of the console
    (`python -m benchmarks timeline`). Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()


async def wait_for_stop_signal(ready: Callable[[], None] | None = None) -> None:
    """Wait for SIGINT or SIGTERM; `ready` runs once they are caught, so whoever reads what
    it prints (a person, a test) can press Ctrl-C at once and still get an orderly stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready()
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
