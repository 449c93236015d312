"""The database (or another outside service) being away: what counts, and how it is reported.

`is_database_unavailable(exc)` is the one definition of "the database cannot be reached or
did not answer in time" — a failure that a later try cures by itself, unlike a refused
statement (a bug, a constraint), which would fail the same way again. A lost database shows
itself in many shapes: SQLAlchemy's own errors, but also a bare `ConnectionRefusedError`
(an `OSError`) or one of asyncpg's connection errors straight from the connect, which
SQLAlchemy passes on unwrapped, and `TimeoutError`s from the pool or a deadline.
`DATABASE_ERRORS` is everything the database layer raises, for code that answers any of it
the same way (a 503, "not ready").

While the database is away, every webhook, tick and retry fails. A line (often with a
traceback) for each would hide the one line that matters, so an `OutageLog` says it once
when the failures start, with the first traceback, and once when the work succeeds again,
with how many tries failed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Protocol

from sqlalchemy import exc as sa

try:  # the PostgreSQL driver is an optional extra
    import asyncpg.exceptions as pg
except ImportError:  # pragma: no cover - installed without the postgres extra
    _DRIVER_UNAVAILABLE: tuple[type[BaseException], ...] = ()
else:
    # raised by asyncpg's connect, which SQLAlchemy does not wrap
    _DRIVER_UNAVAILABLE = (pg.PostgresConnectionError, pg.CannotConnectNowError,
                           pg.InsufficientResourcesError, pg.InterfaceError)

# no connection, a connection lost, a lock or deadlock, the pool or a deadline ran out
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, sa.OperationalError, sa.InterfaceError, sa.DisconnectionError,
    sa.TimeoutError, *_DRIVER_UNAVAILABLE,
)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (sa.SQLAlchemyError, *_UNAVAILABLE)


# SQLite's primary result codes for "not now" (busy, locked, I/O, full, cannot open). Its
# driver calls nearly every error OperationalError, a typo in a statement too, so the code
# decides there; on PostgreSQL, asyncpg's statement errors are never OperationalError.
_SQLITE_AWAY = {5, 6, 10, 13, 14, 15}


def is_database_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database is away for now, not that a statement is wrong."""
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated:
            return True
        driver = exc.orig
        if isinstance(driver, sqlite3.Error):
            return (getattr(driver, "sqlite_errorcode", 0) & 0xFF) in _SQLITE_AWAY
        # asyncpg's error comes wrapped in SQLAlchemy's adapter, with the original as cause
        if isinstance(getattr(driver, "__cause__", None), _UNAVAILABLE):
            return True
    return isinstance(exc, _UNAVAILABLE)


class OutageGroup:
    """The parts of one process that lose the same service together say so together.

    When the database goes, the bot's updates, the notifier, the scheduler, the leases, the
    health probe and the payment webhooks all fail within a second. Each part's `OutageLog`
    in the group reports to it: only the first part to fail logs its line, and only the first
    to succeed again logs its "back" line; the others note theirs at DEBUG. So an outage is
    two lines in the log, whatever was running.
    """

    def __init__(self) -> None:
        self.down = False

    def first_to_fail(self) -> bool:
        first, self.down = not self.down, True
        return first

    def first_back(self) -> bool:
        first, self.down = self.down, False
        return first


# every part of this process that talks to the database
DATABASE = OutageGroup()


class OutageLog:
    def __init__(self, log: logging.Logger, *, down: str, back: str,
                 group: OutageGroup | None = None) -> None:
        """`down` is logged at the first failure; `back` (with %d for the number of
        failures) at the first success after them. In a `group`, only when this part is the
        first of its group to fail, or to come back (else at DEBUG)."""
        self.log, self.down, self.back, self.group = log, down, back, group
        self.failures = 0

    def failed(self, exc: BaseException, **extra: object) -> None:
        if self.failures == 0:
            level = logging.WARNING if self.group is None or self.group.first_to_fail() \
                else logging.DEBUG
            self.log.log(level, self.down, exc_info=exc if level == logging.WARNING else None,
                         extra={"error": type(exc).__name__, **extra})
        self.failures += 1

    def succeeded(self) -> None:
        if self.failures:
            level = logging.WARNING if self.group is None or self.group.first_back() \
                else logging.DEBUG
            self.log.log(level, self.back, self.failures, extra={"failures": self.failures})
            self.failures = 0


class RestartableWorker(Protocol):
    outage: OutageLog

    async def run(self) -> None: ...


RESTART_FIRST_SECONDS, RESTART_LONGEST_SECONDS = 1.0, 30.0  # pauses after a failed run


async def keep_running(worker: RestartableWorker) -> None:
    """A channel's worker (notifier, mail sender, team poster) as a background task that
    survives its own bugs and a lost database: each failed run is reported to its outage log
    and the next starts after a pause that grows while runs keep failing at once."""
    pause = 0.0
    while True:
        started = asyncio.get_running_loop().time()
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            worker.outage.failed(exc)
            if asyncio.get_running_loop().time() - started > RESTART_LONGEST_SECONDS:
                pause = 0.0  # it ran well for a while: this is a new fault
            pause = min(max(pause * 2, RESTART_FIRST_SECONDS), RESTART_LONGEST_SECONDS)
            await asyncio.sleep(pause)
