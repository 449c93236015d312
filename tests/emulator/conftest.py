"""Fixtures for the emulator tests: an emulator on a real port and a real aiogram Bot."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.emulator import TelegramEmulator, start_emulator

TOKEN = "123456:TEST-token"
OTHER_TOKEN = "654321:OTHER-token"


class FakeClock:
    """Monotonic clock the rate-limit tests move by hand instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class LocalSession(AiohttpSession):
    """AiohttpSession without the 250 ms grace sleep on close.

    aiogram waits there for SSL connections to shut down; the emulator speaks plain HTTP,
    and skipping the wait keeps the suite fast. The underlying session is still closed.
    """

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def make_bot(base_url: str, token: str = TOKEN) -> Bot:
    return Bot(
        token,
        session=LocalSession(api=TelegramAPIServer.from_base(base_url, is_local=False)),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock) -> TelegramEmulator:
    emulator = TelegramEmulator(clock=clock, webhook_retry_initial=0.01, webhook_retry_max=0.05)
    emulator.add_bot(token=TOKEN, username="payrescue_demo_bot", first_name="PayRescue")
    return emulator


@pytest.fixture
async def base_url(emu: TelegramEmulator) -> AsyncIterator[str]:
    runner, url = await start_emulator(emu)
    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.fixture
async def bot(base_url: str) -> AsyncIterator[Bot]:
    telegram_bot = make_bot(base_url)
    try:
        yield telegram_bot
    finally:
        await telegram_bot.session.close()


@pytest.fixture
async def bot_factory(base_url: str) -> AsyncIterator:
    """Makes more Bots (e.g. with another token); all are closed after the test."""
    made: list[Bot] = []

    def factory(token: str = TOKEN) -> Bot:
        made.append(make_bot(base_url, token))
        return made[-1]

    try:
        yield factory
    finally:
        for made_bot in made:
            await made_bot.session.close()


@pytest.fixture
def member(emu: TelegramEmulator) -> dict:
    return emu.create_user(first_name="Anna", last_name="Muster", language_code="de")
