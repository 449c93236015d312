"""What the PostgreSQL benchmarks share: a scratch database, filled by SQL, then dropped."""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

from sqlalchemy import text
from sqlalchemy.engine import make_url

from payrescue.db import create_engine, execute_outside_transaction
from payrescue.db.migrate import upgrade

ADMIN_URL = os.environ.get("PAYRESCUE_BENCH_POSTGRES_URL",
                           "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def admin(sql: str) -> None:
    await execute_outside_transaction(ADMIN_URL, sql)


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A new, empty database for one benchmark run; dropped afterwards whatever happens."""
    name = f"payrescue_bench_{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def with_postgres(work: Callable[[str], Awaitable[None]]) -> None:
    """`work(url)` on a scratch database; without a server, say so and go on (the SQLite
    figures still stand)."""
    try:
        async with scratch_database() as url:
            await work(url)
    except OSError as exc:
        print(f"postgresql  skipped: {exc.__class__.__name__}")


async def migrate_and_fill(url: str, statements: Iterable[str], sizes: Mapping[str, int],
                           sequences: Iterable[str]) -> float:
    """Migrate, run the fill statements (`:name` parameters from `sizes`), fix the id
    sequences the bulk inserts skipped, analyse; returns the seconds the fill took."""
    engine = create_engine(url)
    try:
        await upgrade(engine)
        started = time.perf_counter()
        async with engine.begin() as connection:
            for statement in statements:
                names = set(re.findall(r"(?<!:):([a-z]+)", statement))
                await connection.execute(text(statement),
                                         {k: v for k, v in sizes.items() if k in names})
            for table in sequences:  # fixed names from the benchmark files, never input
                await connection.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                    f"(SELECT max(id) FROM {table}))"))
        await execute_outside_transaction(url, "VACUUM ANALYZE")
        return time.perf_counter() - started
    finally:
        await engine.dispose()
