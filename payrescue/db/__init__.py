"""Engine and sessions: one `async_sessionmaker` per process."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util.concurrency import await_only, in_greenlet

from payrescue.db.sqlite_turns import WriteTurns

log = logging.getLogger(__name__)
POOL_SIZE = 15  # database connections per process
SQLITE_BUSY_SECONDS = 30


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, **kwargs: object) -> AsyncEngine:
    # query parameters hold e-mail addresses and message texts: keep them out of error
    # messages, which end up in logs
    kwargs.setdefault("hide_parameters", True)
    if "poolclass" not in kwargs:
        # the connections a process uses at once (the poller's chats, the notifier, the
        # console), all kept open: with SQLAlchemy's default of 5 (+10 overflow, closed
        # again on return) a burst of member messages opened and closed a PostgreSQL
        # backend (a fork, an authentication) or an SQLite thread every few updates
        kwargs.setdefault("pool_size", POOL_SIZE)
        kwargs.setdefault("max_overflow", 0)
    if is_sqlite(url):
        # a 30 s busy timeout lets concurrent writers queue instead of failing at once
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS},
                                     **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "invalidate", _roll_back_before_discarding)
        # this process's writers queue in the event loop, not in SQLite's sleeping busy wait
        WriteTurns(SQLITE_BUSY_SECONDS).install(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    cursor.close()


def _roll_back_before_discarding(dbapi_connection: object, _record: object,
                                 _exception: BaseException | None) -> None:
    """A task cancelled in the middle of a statement (a stop, a timeout) makes SQLAlchemy
    discard the connection. On SQLite, closing a connection whose `... RETURNING` statement
    was cut off leaves its transaction open, and with it the write lock, until the process
    ends: every later write fails with "database is locked". Rolling back first ends the
    transaction. Shielded, like SQLAlchemy's own close, since the task is being cancelled."""
    if not in_greenlet():  # discarded by garbage collection: nothing can be awaited here
        return
    try:
        await_only(asyncio.shield(dbapi_connection.driver_connection.rollback()))  # type: ignore[attr-defined]
    except Exception:
        log.warning("could not roll back a discarded SQLite connection", exc_info=True)


async def execute_outside_transaction(url: str, sql: str) -> None:
    """One statement that PostgreSQL refuses inside a transaction (CREATE or DROP DATABASE,
    VACUUM), on a connection of its own: for the test suite's and benchmarks' set-up."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(sql))
    finally:
        await engine.dispose()


async def lock_for_writing(session: AsyncSession) -> None:
    """Call first in a transaction that reads and then writes, while other processes write.

    SQLite (in WAL mode) refuses at once, without waiting out the busy timeout, a transaction
    that read and then wants to write when another connection committed in between: its
    snapshot is stale. `BEGIN IMMEDIATE` takes the write lock before the first read, so the
    transaction waits its turn instead. PostgreSQL needs nothing of the kind.
    """
    if session.bind.dialect.name == "sqlite":
        await session.execute(text("BEGIN IMMEDIATE"))


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
