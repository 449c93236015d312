"""The embedded database stays writable when a task is cancelled in the middle of a write
(a service stop, a timeout): see `payrescue.db._roll_back_before_discarding`."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine


# SQLite only: a PostgreSQL server ends the transaction itself when the connection closes
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_write_cut_off_by_a_cancellation_leaves_the_database_writable(
    engine: AsyncEngine,
) -> None:
    started, release = threading.Event(), threading.Event()

    def hold() -> int:  # runs inside SQLite: keeps the statement in progress until released
        started.set()
        release.wait(5)
        return 1

    event.listen(engine.sync_engine, "connect",
                 lambda connection, _record: connection.create_function("hold", 0, hold))
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE scratch (id INTEGER PRIMARY KEY, n INTEGER)"))
        await connection.execute(text("INSERT INTO scratch (n) VALUES (0), (0), (0)"))

    async def update_all() -> None:
        async with engine.connect() as connection:
            await connection.execute(
                text("UPDATE scratch SET n = n + 1 WHERE hold() = 1 RETURNING id"))
            await connection.commit()

    task = asyncio.create_task(update_all())
    await asyncio.to_thread(started.wait, 5)
    task.cancel()  # while SQLite is still inside the UPDATE … RETURNING
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    async with asyncio.timeout(5), engine.begin() as connection:  # was "database is locked"
        await connection.execute(text("UPDATE scratch SET n = 10 WHERE id = 1"))
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT n FROM scratch ORDER BY id"))
        assert result.scalars().all() == [10, 0, 0]  # the cut-off update left nothing behind
