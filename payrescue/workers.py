"""`payrescue run --workers N`: N identical service processes on one port, kept running.

Each worker is a whole `payrescue run` (web server, bot, notifier); they share the port through
SO_REUSEPORT, so the kernel spreads connections among them, and meet in the database (and
Redis, for live updates). What must run once — Telegram polling, the dunning scheduler, the
console's watcher — runs in one worker at a time (`payrescue.leader`). The supervisor here
only starts the workers, starts a new one when one dies (kill -9, out of memory), and passes
SIGINT/SIGTERM on for an orderly stop. It holds no connection of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from payrescue.config import Settings
from payrescue.logs import setup_logging
from payrescue.service import check_database

log = logging.getLogger(__name__)
WORKER_ENV = "PAYRESCUE_WORKER"  # set in each worker: its number, and "share the port"
WORKERS_ENV = "PAYRESCUE_WORKERS"  # set in each worker: how many there are
RESTART_PAUSE = 1.0  # seconds before a dead worker is replaced (a crash loop stays slow)
STOP_SECONDS = 30.0  # an orderly stop may take this long before workers are killed


def worker_number() -> int | None:
    """This process's worker number under a supervisor, or None when it runs alone."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value and value.isdigit() else None


def worker_count() -> int:
    """How many processes of this service share the port (1 when it runs alone)."""
    value = os.environ.get(WORKERS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def advice(settings: Settings, workers: int) -> list[str]:
    """What an operator should know before running several workers on these settings."""
    notes = []
    if settings.effective_database_url.startswith("sqlite"):
        notes.append("several workers share SQLite's single write lock; PostgreSQL is the "
                     "database for more than one worker")
    if not settings.redis_url:
        notes.append("without PAYRESCUE_REDIS_URL a console sees live only what its own "
                     "worker handled, and the other workers notice new messages late")
    return notes


async def supervise(settings: Settings, workers: int, argv: list[str]) -> int:
    """Run `workers` processes of `payrescue <argv>` until SIGINT/SIGTERM."""
    setup_logging(settings.log_level)
    problem = await check_database(settings)
    if problem:
        print(f"payrescue: {problem}", file=sys.stderr)
        return 1
    for note in advice(settings, workers):
        log.warning(note)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running: dict[int, asyncio.subprocess.Process] = {}
    try:
        for number in range(workers):
            running[number] = await _start(number, workers, argv)
        log.info("workers started", extra={"workers": workers,
                                           "pids": [p.pid for p in running.values()]})
        while not stop.is_set():
            ended = await _first_to_end(running, stop)
            for number in ended:
                process = running.pop(number)
                log.warning("worker %d (pid %d) ended with status %s; starting another",
                            number, process.pid, process.returncode)
            if ended and not stop.is_set():
                await asyncio.sleep(RESTART_PAUSE)
                for number in ended:
                    running[number] = await _start(number, workers, argv)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await _stop_all(running)
    return 0


async def _start(number: int, workers: int, argv: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "payrescue", *argv,
        env={**os.environ, WORKER_ENV: str(number), WORKERS_ENV: str(workers)})


async def _first_to_end(running: dict[int, asyncio.subprocess.Process],
                        stop: asyncio.Event) -> list[int]:
    """Wait until a worker ends or a stop is asked for; the numbers of the ended workers."""
    waits = {asyncio.create_task(process.wait()): number for number, process in running.items()}
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*waits, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [*waits, stopping]:
            task.cancel()
    return [number for number, process in running.items() if process.returncode is not None]


async def _stop_all(running: dict[int, asyncio.subprocess.Process]) -> None:
    for process in running.values():
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_SECONDS):
            await asyncio.gather(*(p.wait() for p in running.values()))
    except TimeoutError:
        for process in running.values():
            if process.returncode is None:
                process.kill()
        await asyncio.gather(*(p.wait() for p in running.values()))
