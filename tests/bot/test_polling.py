"""Our poller against the emulator: what it confirms to Telegram, in which order, and when.

These drive `bot.polling.Poller` with a dispatcher of the test's own, so a handler can fail
the way the database fails (with the `ConnectionRefusedError` asyncpg raises when the server
is away) for one chat and not another, which a real outage (tests/bot/test_outage.py) cannot
arrange: there every chat fails at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramConflictError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import Message

from bot.emulator import EmulatorLimits, TelegramEmulator, start_emulator
from bot.polling import FIRST_PAUSE, Poller
from bot.service import BotSession
from payrescue.clock import FakeClock
from tests.harness import BOT_TOKEN, BOT_USERNAME, eventually


@dataclass
class Recorder:
    """What the handler saw: each chat's handled texts, and tries per text."""

    handled: dict[int, list[str]] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)
    database_away_for: dict[str, int] = field(default_factory=dict)  # text → failing tries

    def router(self) -> Router:
        router = Router()

        @router.message()
        async def record(message: Message) -> None:
            text = message.text or ""
            self.tries[text] = self.tries.get(text, 0) + 1
            if self.tries[text] <= self.database_away_for.get(text, 0):
                raise ConnectionRefusedError(111, "Connect call failed")
            if text == "boom":
                raise RuntimeError("a bug in a handler")
            self.handled.setdefault(message.chat.id, []).append(text)

        return router


@dataclass
class Polling:
    emulator: TelegramEmulator
    poller: Poller
    recorder: Recorder
    clock: FakeClock
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.poller.stop()
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def polling() -> AsyncIterator[Polling]:
    emulator = TelegramEmulator(EmulatorLimits.unlimited())
    emulator.add_bot(token=BOT_TOKEN, username=BOT_USERNAME)
    runner, url = await start_emulator(emulator)
    bot = Bot(BOT_TOKEN, session=BotSession(api=TelegramAPIServer.from_base(url)))
    recorder = Recorder()
    dispatcher = Dispatcher()
    dispatcher.include_router(recorder.router())
    clock = FakeClock()
    poller = Poller(bot, dispatcher, clock, timeout=1)
    state = Polling(emulator, poller, recorder, clock, asyncio.create_task(asyncio.sleep(0)))
    try:
        yield state
    finally:
        poller.stop()
        state.task.cancel()
        await asyncio.gather(state.task, return_exceptions=True)
        await bot.session.close()
        await runner.cleanup()


def _start(polling: Polling) -> None:
    polling.task = asyncio.create_task(polling.poller.run())


async def test_an_update_the_database_failed_comes_again_and_nothing_is_handled_twice(
    polling: Polling,
) -> None:
    anna = polling.emulator.create_user("Anna")["id"]
    ben = polling.emulator.create_user("Ben")["id"]
    polling.recorder.database_away_for = {"anna 1": 2}
    for text, chat in [("anna 1", anna), ("ben 1", ben), ("anna 2", anna), ("ben 2", ben)]:
        await polling.emulator.send_text(chat, text)
    _start(polling)

    # Ben's messages go through while Anna's first waits for the database; hers come after
    await eventually(lambda: polling.recorder.handled.get(anna) == ["anna 1", "anna 2"],
                     "Anna's messages handled", clock=polling.clock, tick=FIRST_PAUSE)
    assert polling.recorder.handled == {anna: ["anna 1", "anna 2"], ben: ["ben 1", "ben 2"]}
    # her first came three times (two failures); her second was never tried before it
    assert polling.recorder.tries == {"anna 1": 3, "anna 2": 1, "ben 1": 1, "ben 2": 1}
    await polling.stop()
    assert polling.emulator.pending_updates() == []  # all confirmed: a restart gets none again


async def test_a_bug_in_one_update_is_logged_and_the_chat_goes_on(
    polling: Polling, caplog: pytest.LogCaptureFixture,
) -> None:
    anna = polling.emulator.create_user("Anna")["id"]
    await polling.emulator.send_text(anna, "boom")
    await polling.emulator.send_text(anna, "after")
    _start(polling)
    await eventually(lambda: polling.recorder.handled.get(anna) == ["after"], "next handled")
    errors = [r for r in caplog.records if r.name == "bot.polling"]
    assert [r.levelno for r in errors] == [logging.ERROR]
    assert "failed and is skipped: RuntimeError" in errors[0].getMessage()
    assert polling.recorder.tries["boom"] == 1  # a bug is not retried: it would fail again
    await polling.stop()
    assert polling.emulator.pending_updates() == []


async def test_an_update_of_a_kind_this_version_does_not_know_is_skipped_quietly(
    polling: Polling, caplog: pytest.LogCaptureFixture,
) -> None:
    """Telegram adds update kinds; one this aiogram cannot read is confirmed and skipped
    with its id only (aiogram would log the whole update, member's words included), and
    the chat goes on."""
    caplog.set_level(logging.INFO)
    anna = polling.emulator.create_user("Anna")["id"]
    bot = next(iter(polling.emulator.state.bots.values()))
    polling.emulator.state.enqueue_update(bot, "some_future_update", {
        "from": {"id": anna, "is_bot": False, "first_name": "Anna"}, "secret": "Anna's words"})
    await polling.emulator.send_text(anna, "after")
    _start(polling)
    await eventually(lambda: polling.recorder.handled.get(anna) == ["after"], "next handled")
    await polling.stop()
    assert polling.emulator.pending_updates() == []
    assert not any("Anna" in r.getMessage() for r in caplog.records)
    assert any("does not read: skipped" in r.getMessage() for r in caplog.records)


async def test_telegram_failing_is_retried_and_logged_once(
    polling: Polling, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.polling")
    polling.emulator.inject_faults("getUpdates", count=2, status=502)
    polling.emulator.inject_faults("getUpdates", count=2, drop_connection=True)
    anna = polling.emulator.create_user("Anna")["id"]
    await polling.emulator.send_text(anna, "hello")
    _start(polling)
    await eventually(lambda: polling.recorder.handled.get(anna) == ["hello"], "handled",
                     clock=polling.clock, tick=FIRST_PAUSE)
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.polling"]
    assert lines == ["Telegram getUpdates failed; asking again with a growing pause",
                     "Telegram getUpdates works again after 4 failed tries"]
    await polling.stop()


class Conflicts(BaseRequestMiddleware):
    """Counts the 409 answers a bot's getUpdates got (aiogram's request middleware)."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                       method: TelegramMethod[TelegramType]) -> Response[TelegramType]:
        try:
            return await make_request(bot, method)
        except TelegramConflictError:
            self.count += 1
            raise


async def test_a_second_poller_of_the_same_bot_is_reported_once(
    polling: Polling, caplog: pytest.LogCaptureFixture,
) -> None:
    conflicts = Conflicts()
    polling.poller.bot.session.middleware(conflicts)
    other_bot = Bot(BOT_TOKEN, session=BotSession(api=polling.poller.bot.session.api))
    other_bot.session.middleware(conflicts)
    other = Poller(other_bot, Dispatcher(), polling.clock, timeout=1)
    _start(polling)
    other_task = asyncio.create_task(other.run())
    try:
        # each one's getUpdates ends the other's, round after round
        await eventually(lambda: conflicts.count >= 6, "pollers in conflict",
                         clock=polling.clock, tick=FIRST_PAUSE)
    finally:
        other.stop()
        await polling.stop()
        await asyncio.wait_for(other_task, 5)
        await other_bot.session.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.polling"]
    assert 1 <= len(lines) <= 2, lines  # once per process, not once per round
    assert all("another process polls this bot" in line for line in lines)
