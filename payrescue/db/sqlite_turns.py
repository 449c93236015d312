"""SQLite writers of one process take turns in the event loop, first come first served.

SQLite lets one connection write at a time. A connection that finds the write lock taken
waits in SQLite's busy handler, which sleeps 1, 2, 5 … up to 100 ms between looks, whether
or not the lock was freed meanwhile. With the poller's ten chats and the notifier writing
side by side, an update of a few milliseconds waited up to 0.7 s for a lock that stood free
most of that time, and the poller's batch waited for its slowest update.

Here a connection waits for an `asyncio.Lock` before its first writing statement, and gives
it back once its transaction has ended (committed, rolled back, or the connection returned
to the pool or discarded). The next writer starts the moment the previous one is done. Other
processes on the same file still meet SQLite's own lock and its busy timeout. Reads never
wait: in WAL mode they see the last commit.

The lock is waited for inside SQLAlchemy's synchronous events (run in its greenlet, as
`await_only` allows). A transaction that waits longer than the busy timeout fails with
SQLite's own "database is locked", as it would have without the turns.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.util.concurrency import await_only, in_greenlet

# statements that only read; anything else (INSERT, UPDATE, DELETE, BEGIN IMMEDIATE, DDL…)
# takes SQLite's write lock, or may
_READS = ("SELECT", "PRAGMA", "WITH", "EXPLAIN")


class WriteTurns:
    """One per SQLite engine; `install` hooks it into the engine's statements and ends."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the lock serves
        self._holder: object | None = None  # the DBAPI connection whose turn it is

    def install(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before_statement)
        for name in ("checkin", "invalidate", "close", "close_detached", "soft_invalidate"):
            event.listen(engine.pool, name, self._pool_event)
        # the turn ends after the transaction's end reached SQLite, not before: SQLAlchemy has
        # no event after a commit, so this engine's dialect's own do_commit and do_rollback
        # are wrapped
        dialect = engine.dialect
        dialect.do_commit = self._then_release(dialect.do_commit)  # type: ignore[method-assign]
        dialect.do_rollback = self._then_release(dialect.do_rollback)  # type: ignore[method-assign]

    def _then_release(self, end: Callable[[Any], None]) -> Callable[[Any], None]:
        def ending(connection: Any) -> None:
            try:
                end(connection)
            finally:
                self._release(connection)

        return ending

    def _before_statement(self, conn: Any, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip()[:7].upper().startswith(_READS) or not in_greenlet():
            return
        connection = _raw(conn.connection)
        if self._holder is connection:
            return
        await_only(self._take(connection))

    async def _take(self, connection: object) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # an engine outlived its loop (a test's): start afresh
            self._lock, self._loop, self._holder = asyncio.Lock(), loop, None
        try:
            async with asyncio.timeout(self.timeout):
                await self._lock.acquire()
        except TimeoutError:
            raise _busy() from None
        self._holder = connection

    def _release(self, connection: Any) -> None:
        if self._holder is not None and self._holder is _raw(connection):
            self._holder = None
            self._lock.release()

    def _pool_event(self, dbapi_connection: Any, *_: object) -> None:
        self._release(dbapi_connection)


def _busy() -> sqlite3.OperationalError:
    """What SQLite itself raises when its busy timeout runs out, code included, so the
    service treats it alike: the database is away for now (`payrescue.outage`)."""
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    error.sqlite_errorname = "SQLITE_BUSY"  # type: ignore[attr-defined]
    return error


def _raw(connection: Any) -> object:
    """The DBAPI connection behind SQLAlchemy's pool proxy (or itself)."""
    return getattr(connection, "dbapi_connection", connection)
