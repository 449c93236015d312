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

import logging
import sqlite3

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


class OutageLog:
    def __init__(self, log: logging.Logger, *, down: str, back: str) -> None:
        """`down` is logged at the first failure; `back` (with %d for the number of
        failures) at the first success after them."""
        self.log, self.down, self.back = log, down, back
        self.failures = 0

    def failed(self, exc: BaseException, **extra: object) -> None:
        if self.failures == 0:
            self.log.warning(self.down, exc_info=exc, extra={"error": type(exc).__name__,
                                                             **extra})
        self.failures += 1

    def succeeded(self) -> None:
        if self.failures:
            self.log.warning(self.back, self.failures, extra={"failures": self.failures})
            self.failures = 0
