"""Alembic environment: migrations run on a connection handed in by `payrescue.db.migrate`,
or, from the alembic command line, on the database named by the service settings."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from payrescue.db import create_engine
from payrescue.db.models import Base
from payrescue.db.search import include_object

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_settings() -> None:
    from payrescue.config import load_settings

    engine = create_engine(load_settings(demo=True).effective_database_url)
    async with engine.connect() as connection:
        await connection.run_sync(_configure_and_run)
        await connection.commit()
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _configure_and_run(connection)
else:
    asyncio.run(_run_from_settings())
