"""Shared fixtures: a migrated database per test on SQLite and on PostgreSQL.

PostgreSQL is the machine's server (PAYRESCUE_TEST_POSTGRES_URL, default the `test`
database on 127.0.0.1). Without it a developer's run skips those cases; in CI (CI=true)
an unreachable server fails the run instead, so the suite never passes on SQLite alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import hypothesis
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from payrescue.clock import FakeClock
from payrescue.config import Settings, load_settings
from payrescue.db import create_engine, create_sessionmaker, execute_outside_transaction
from payrescue.db.migrate import upgrade
from payrescue.db.models import Base

POSTGRES_ADMIN_URL = os.environ.get(
    "PAYRESCUE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
BACKENDS = os.environ.get("PAYRESCUE_TEST_BACKENDS", "sqlite,postgresql").split(",")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TEST_SECRET = "test-secret-key-for-the-suite-only-0123456789"

# CI draws the same examples every run, so a submission's CI result is reproducible; a
# developer's runs draw new ones (and remember failures) to keep finding what is not covered
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if IN_CI:
    hypothesis.settings.load_profile("ci")


def _run(coro):  # noqa: ANN001, ANN202 - session set-up runs outside the tests' loops
    return asyncio.run(coro)


async def _admin(sql: str) -> None:
    await execute_outside_transaction(POSTGRES_ADMIN_URL, sql)


def postgres_url(database: str) -> str:
    return make_url(POSTGRES_ADMIN_URL).set(database=database).render_as_string(
        hide_password=False
    )


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        _run(_admin("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        if IN_CI:
            pytest.fail(f"PostgreSQL unreachable in CI at {POSTGRES_ADMIN_URL}: {exc}")
        return False
    return True


def create_postgres_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _run(_admin(f'CREATE DATABASE "{name}"'))
    return name


def drop_postgres_database(name: str) -> None:
    _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "migrated.sqlite3"
    _run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_migrated(postgres_available: bool) -> Iterator[str]:
    if not postgres_available:
        pytest.skip("PostgreSQL not reachable (set CI=true to make this an error)")
    name = create_postgres_database("payrescue_test")
    url = postgres_url(name)
    _run(_migrate(url))
    yield url
    drop_postgres_database(name)


@pytest.fixture(params=[b for b in BACKENDS if b], ids=lambda b: b)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database for this test."""
    if backend == "sqlite":
        path = tmp_path / "payrescue.sqlite3"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    return request.getfixturevalue("postgres_migrated")


@pytest.fixture
async def engine(database_url: str, backend: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    if backend == "postgresql":
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield engine
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings(
        data_dir=tmp_path,
        database_url=database_url,
        secret_key=TEST_SECRET,
        public_base_url="http://127.0.0.1:8080",
    )


# --- the running service (tests/harness.py): app, bot and Telegram emulator on real ports ---


@pytest.fixture
async def service(engine: AsyncEngine, clock: FakeClock, tmp_path: Path):  # noqa: ANN201
    """The whole service, bot polling the emulator; on each database backend."""
    from tests.harness import running_service

    async with running_service(engine=engine, clock=clock, data_dir=tmp_path) as svc:
        yield svc


@pytest.fixture
async def webhook_service(engine: AsyncEngine, clock: FakeClock, tmp_path: Path):  # noqa: ANN201
    """As `service`, but Telegram (the emulator) POSTs updates to /telegram/webhook."""
    from tests.harness import running_service

    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               webhook=True) as svc:
        yield svc


@pytest.fixture(autouse=True)
def _no_outage_from_an_earlier_test() -> None:
    """The database outage group is one per process (a process has one database); a test
    that ended while its database was away must not silence the next test's first line."""
    from payrescue import outage

    outage.DATABASE.down = False


@pytest.fixture(autouse=True)
def _the_default_voice() -> None:
    """The owner's voice is one per process (set from the settings at start); a test that
    started a service with a business name must not sign the next test's messages."""
    from payrescue.i18n import set_voice

    set_voice(None, None)
