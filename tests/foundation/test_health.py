from __future__ import annotations

from pathlib import Path

from payrescue.app import init_app
from payrescue.config import Settings
from payrescue.db import create_engine


async def test_healthz_and_readyz_on_a_migrated_database(aiohttp_client, settings, engine) -> None:
    client = await aiohttp_client(init_app(settings, engine=engine, with_bot=False))
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ready"


async def test_readyz_refuses_an_unmigrated_database(
    aiohttp_client, settings: Settings, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    client = await aiohttp_client(init_app(settings, engine=engine, with_bot=False))
    response = await client.get("/readyz")
    assert response.status == 503
    assert "payrescue db upgrade" in (await response.json())["reason"]
    assert (await client.get("/healthz")).status == 200
    await engine.dispose()


async def test_readyz_reports_an_unreachable_database(aiohttp_client, settings: Settings) -> None:
    # nothing listens on port 9: the connection is refused at once, as with a stopped server
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/test")
    client = await aiohttp_client(init_app(settings, engine=engine, with_bot=False))
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["reason"] == "database unreachable"
    await engine.dispose()
