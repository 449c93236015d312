"""The migrations build exactly the models' schema, and every step can be undone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from payrescue.db import create_engine
from payrescue.db.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade
from payrescue.db.models import Base
from payrescue.db.search import include_object
from tests.conftest import create_postgres_database, drop_postgres_database, postgres_url


@pytest.fixture
def empty_database_url(backend: str, request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    if not request.getfixturevalue("postgres_available"):
        pytest.skip("PostgreSQL not reachable")
    name = create_postgres_database("payrescue_empty")
    yield postgres_url(name)
    drop_postgres_database(name)


def _revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


async def test_stairway_upgrade_downgrade_upgrade_each_revision(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        previous = "base"
        for revision in _revisions():
            await upgrade(engine, revision)
            await downgrade(engine, previous)
            await upgrade(engine, revision)
            assert await current_revision(engine) == revision
            previous = revision
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        await upgrade(engine)
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True,
                                                   "include_object": include_object}), Base.metadata
                )
            )
        assert differences == []
    finally:
        await engine.dispose()
