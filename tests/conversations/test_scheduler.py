"""The dunning scheduler while the database is away: it neither hammers it nor the log."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from aiohttp import web

from bot.notifier import run_scheduler
from payrescue.clock import FakeClock
from payrescue.config import Settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.events import Bus, Event
from payrescue.keys import BUS, CLOCK, SESSIONMAKER, SETTINGS


def _lines(caplog) -> list[str]:  # noqa: ANN001
    return [r.getMessage() for r in caplog.records
            if r.name == "bot.notifier" and r.levelno >= logging.WARNING]


class _Heard(logging.Handler):
    """Sets `event` when a line containing `words` is logged."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words, self.event = words, asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


async def test_a_lost_database_is_retried_with_pauses_and_logged_once(
        settings: Settings, sessionmaker, clock: FakeClock, tmp_path: Path, caplog,  # noqa: ANN001
) -> None:
    away = create_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/db.sqlite3")
    bus = Bus()
    app = web.Application()
    app[SETTINGS], app[BUS], app[CLOCK] = settings, bus, clock
    app[SESSIONMAKER] = create_sessionmaker(away)
    heard = _Heard("works again")
    logging.getLogger("bot.notifier").addHandler(heard)
    scheduler = asyncio.create_task(run_scheduler(app))
    try:
        for _ in range(100):  # payment events keep changing cases meanwhile
            await bus.publish(Event("case.changed", {"case_id": 1}))
            await asyncio.sleep(0.02)
        app[SESSIONMAKER] = sessionmaker  # the database is back
        await bus.publish(Event("case.changed", {"case_id": 1}))
        async with asyncio.timeout(10):
            await heard.event.wait()
    finally:
        logging.getLogger("bot.notifier").removeHandler(heard)
        scheduler.cancel()
        await asyncio.gather(scheduler, return_exceptions=True)
        await away.dispose()
    down, back = _lines(caplog)
    assert down.startswith("dunning reconcile failed")
    # 100 case changes in about two seconds, but tries only after pauses of 1 s, 2 s, 4 s…:
    # two or three tries (four on a very slow machine), not one per change
    failed_tries = int(re.fullmatch(r"dunning reconcile works again after (\d+) failed tries",
                                    back).group(1))
    assert 1 <= failed_tries <= 4
