"""Starting the bot: no token, a refused token, Telegram away for a while, flood limits."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest
from aiogram.exceptions import TelegramRetryAfter
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.emulator import TelegramEmulator, start_emulator
from bot.keys import BOT_RUNNER
from bot.service import TelegramUnavailable, fetch_bot_username, setup_bot
from payrescue.clock import FakeClock
from payrescue.config import Settings, load_settings
from payrescue.keys import SETTINGS
from tests.harness import BOT_TOKEN, BOT_USERNAME, SECRET_KEY, running_service


class WatchedClock(FakeClock):
    """A FakeClock that reports each sleep, so a test advances time exactly when needed."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: asyncio.Queue[float] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.put_nowait(seconds)
        await super().sleep(seconds)


def test_without_a_token_the_bot_is_off_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.service")
    app = web.Application()
    app[SETTINGS] = load_settings(data_dir=tmp_path, secret_key=SECRET_KEY)

    setup_bot(app)

    assert len(app.cleanup_ctx) == 0 and len(app.router.routes()) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "bot.service"] == [
        "PAYRESCUE_BOT_TOKEN is not set: the Telegram bot is off"
    ]


async def test_a_refused_token_is_reported_once_and_the_web_server_keeps_serving(
    engine: AsyncEngine, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.service")
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               bot_token="999:not-our-token", wait_for_bot=False) as svc:
        with pytest.raises(RuntimeError, match="refused the bot token"):
            await svc.app[BOT_RUNNER].wait_ready(5)
        async with aiohttp.ClientSession() as client, client.get(
            svc.base_url + "/healthz"
        ) as response:
            assert response.status == 200
    errors = [r for r in caplog.records if r.name == "bot.service" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "PAYRESCUE_BOT_TOKEN" in errors[0].getMessage()
    assert "not-our-token" not in caplog.text  # the token never reaches the logs


async def test_telegram_away_at_start_up_is_retried_with_back_off(
    engine: AsyncEngine, tmp_path: Path,
) -> None:
    emulator = TelegramEmulator()
    emulator.add_bot(token=BOT_TOKEN, username=BOT_USERNAME)
    emulator.inject_faults("getMe", count=1, status=502)
    emulator.inject_faults("getMe", count=1, drop_connection=True)
    clock = WatchedClock()
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               emulator=emulator, wait_for_bot=False) as svc:
        runner = svc.app[BOT_RUNNER]
        assert await clock.sleeps.get() == 1
        await clock.advance(1)
        assert await clock.sleeps.get() == 2
        await clock.advance(2)

        await runner.wait_ready(5)

        member = await svc.add_member(language="en")
        greeting = await svc.link(member, svc.create_user(language_code="en"))
        assert greeting[-1]["plain_text"].startswith("Hello Anna!")


async def test_answers_wait_out_the_per_chat_flood_limit(
    engine: AsyncEngine, clock: FakeClock, tmp_path: Path,
) -> None:
    """Telegram allows about one message a second per chat (bursts of 3 in the emulator)."""
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               emulator=TelegramEmulator()) as svc:
        user = svc.create_user(language_code="en")
        for _ in range(4):
            await svc.emulator.send_text(user["id"], "/start")

        answers = await svc.emulator.wait_for_messages(user["id"], 4, timeout=10)

        assert [a["plain_text"].split("!")[0] for a in answers] == ["Welcome"] * 4
        # outside update handling (the notifier's sends) a 429 is reported, not waited out
        with pytest.raises(TelegramRetryAfter):
            for _ in range(4):
                await svc.bot.send_message(user["id"], "ping")


async def test_fetch_bot_username_asks_telegram(tmp_path: Path) -> None:
    emulator = TelegramEmulator()
    emulator.add_bot(token=BOT_TOKEN, username=BOT_USERNAME)
    runner, url = await start_emulator(emulator)
    try:
        def settings(token: str) -> Settings:
            return load_settings(data_dir=tmp_path, secret_key=SECRET_KEY, bot_token=token,
                                 telegram_api_base=url)

        assert await fetch_bot_username(settings(BOT_TOKEN)) == BOT_USERNAME
        with pytest.raises(TelegramUnavailable, match="refused the bot token"):
            await fetch_bot_username(settings("999:wrong"))
    finally:
        await runner.cleanup()
