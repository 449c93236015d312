"""What counts as the database being away: real failures of both databases, not made-up ones."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from payrescue.db import create_engine
from payrescue.outage import is_database_unavailable
from tests.conftest import POSTGRES_ADMIN_URL


async def _failure(engine: AsyncEngine, sql: str) -> BaseException:
    try:
        async with engine.connect() as connection:
            await connection.execute(text(sql))
    except Exception as exc:  # noqa: BLE001 - the failure is what the test looks at
        return exc
    raise AssertionError(f"{sql!r} did not fail")


async def test_a_wrong_statement_is_no_outage(engine: AsyncEngine) -> None:
    # SQLite calls this OperationalError, PostgreSQL ProgrammingError: a retry cures neither
    assert not is_database_unavailable(await _failure(engine, "SELECT * FROM no_such_table"))


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_refused_connection_is_an_outage(backend: str) -> None:
    # nothing listens on port 9: asyncpg's ConnectionRefusedError comes through unwrapped
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/test")
    try:
        failure = await _failure(engine, "SELECT 1")
    finally:
        await engine.dispose()
    assert isinstance(failure, OSError)
    assert is_database_unavailable(failure)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_connection_lost_in_the_middle_is_an_outage(engine: AsyncEngine) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with admin.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(Exception) as lost:  # noqa: PT011 - whatever shape it takes
                await connection.execute(text("SELECT 1"))
    finally:
        await admin.dispose()
    assert is_database_unavailable(lost.value)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_locked_sqlite_file_is_an_outage(database_url: str) -> None:
    holder = create_engine(database_url)
    impatient = create_async_engine(database_url, connect_args={"timeout": 0})
    try:
        async with holder.connect() as connection:
            await connection.exec_driver_sql("BEGIN EXCLUSIVE")
            failure = await _failure(impatient, "DELETE FROM members")
            await connection.rollback()
    finally:
        await holder.dispose()
        await impatient.dispose()
    assert "locked" in str(failure)
    assert is_database_unavailable(failure)
