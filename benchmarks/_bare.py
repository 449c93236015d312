"""The baseline the service is measured against: a bare table on the same database."""

from __future__ import annotations

from sqlalchemy import text

from payrescue.db import create_engine
from payrescue.db.migrate import upgrade


async def prepare(url: str, table: str, columns: str) -> None:
    """Migrate the service's schema and create the bare table (`id` plus `columns`)."""
    engine = create_engine(url)
    try:
        await upgrade(engine)
        key = "INTEGER PRIMARY KEY" if url.startswith("sqlite") else "BIGSERIAL PRIMARY KEY"
        async with engine.begin() as connection:
            await connection.execute(text(
                f"CREATE TABLE IF NOT EXISTS {table} (id {key}, {columns})"))
    finally:
        await engine.dispose()
