"""The embedded database stays writable when a task is cancelled in the middle of a write
(a service stop, a timeout): see `payrescue.db._roll_back_before_discarding`; and a process's
writers take turns, whichever way a transaction ends (`payrescue.db.sqlite_turns`)."""

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


async def _scratch(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE scratch (id INTEGER PRIMARY KEY, n INTEGER)"))


async def _values(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        return list((await connection.execute(text("SELECT n FROM scratch ORDER BY id")))
                    .scalars())


# SQLite only: `payrescue.db.sqlite_turns`, this process's writers queue in the event loop
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_writers_take_turns_and_every_way_a_transaction_ends_passes_the_turn_on(
    engine: AsyncEngine,
) -> None:
    await _scratch(engine)
    wrote, finish = asyncio.Event(), asyncio.Event()

    async def holder(value: int, *, fail: bool = False) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO scratch (n) VALUES (:n)"), {"n": value})
            wrote.set()
            await finish.wait()
            if fail:
                raise RuntimeError("a bug after the write")

    async def writer(value: int) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO scratch (n) VALUES (:n)"), {"n": value})

    async with asyncio.timeout(10):  # a turn never handed on would hang here
        for ending in ("commit", "rollback", "cancel"):
            wrote.clear()
            finish.clear()
            first = asyncio.create_task(holder(1, fail=ending == "rollback"))
            await wrote.wait()
            waiting = asyncio.create_task(writer(2))
            cancelled = asyncio.create_task(writer(99))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not waiting.done()  # its turn comes after the first's transaction
            cancelled.cancel()  # a writer stopped while it waits gives up its place
            if ending == "cancel":
                first.cancel()
            finish.set()
            await asyncio.gather(first, cancelled, return_exceptions=True)
            await waiting
    assert await _values(engine) == [1, 2, 2, 2]  # the failed and the cancelled wrote nothing


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_many_sessions_that_read_then_write_all_succeed(engine: AsyncEngine) -> None:
    """The shape of every update: read the member, then write; fifty at once."""
    from payrescue.db import create_sessionmaker

    await _scratch(engine)
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO scratch (n) VALUES (0)"))
    sessionmaker = create_sessionmaker(engine)

    async def add_one() -> None:
        async with sessionmaker() as session:
            await session.execute(text("SELECT n FROM scratch WHERE id = 1"))
            await asyncio.sleep(0)  # another task reads meanwhile
            await session.execute(text("UPDATE scratch SET n = n + 1 WHERE id = 1"))
            await session.commit()

    async with asyncio.timeout(30):
        await asyncio.gather(*(add_one() for _ in range(50)))
    assert await _values(engine) == [50]


async def test_a_writer_that_waits_out_the_busy_timeout_meets_an_outage(
    monkeypatch: pytest.MonkeyPatch, tmp_path,
) -> None:
    """As SQLite's own busy timeout would: the update is retried later, not skipped as a bug."""
    import payrescue.db
    from payrescue.outage import is_database_unavailable

    monkeypatch.setattr(payrescue.db, "SQLITE_BUSY_SECONDS", 0.2)
    engine = payrescue.db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/busy.sqlite3")
    try:
        await _scratch(engine)
        wrote, finish = asyncio.Event(), asyncio.Event()

        async def holder() -> None:
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO scratch (n) VALUES (1)"))
                wrote.set()
                await finish.wait()

        holding = asyncio.create_task(holder())
        await wrote.wait()
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the kind is what is checked
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO scratch (n) VALUES (2)"))
        assert "database is locked" in str(caught.value)
        assert is_database_unavailable(caught.value)
        finish.set()
        await holding
        assert await _values(engine) == [1]
    finally:
        await engine.dispose()
