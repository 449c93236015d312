"""Two service processes on one database and one bot: exactly one polls Telegram, and the
other takes over when it stops. Two applications in one test stand for two processes; they
share only the database and Telegram (one emulator server), as processes would."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.emulator import EmulatorLimits, TelegramEmulator, start_emulator
from bot.keys import BOT_RUNNER
from payrescue.clock import FakeClock
from tests.harness import running_service

LEASE = 1.0


async def test_one_of_two_services_polls_and_the_other_takes_over(
        engine: AsyncEngine, clock: FakeClock, tmp_path: Path, caplog) -> None:
    emulator = TelegramEmulator(EmulatorLimits(per_chat_per_second=None))
    server, url = await start_emulator(emulator)
    services = [running_service(engine=engine, clock=clock, data_dir=tmp_path / name,
                                emulator=emulator, emulator_url=url,
                                leader_lease_seconds=LEASE) for name in ("a", "b")]
    try:
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(services[0])
            second = await services[1].__aenter__()
            await asyncio.wait_for(first.app[BOT_RUNNER].polling.leading.wait(), 5)
            user = first.create_user("Mia", language_code="en")
            for n in range(5):
                await emulator.send_text(user["id"], f"/help {n}")
            assert len(await emulator.wait_for_messages(user["id"], 5)) == 5
            await asyncio.sleep(LEASE)  # several lease rounds: the other stays out
            assert not second.app[BOT_RUNNER].polling.leading.is_set()
            assert len(emulator.sent_messages(user["id"])) == 5  # each update handled once
            # the poller stops (a deploy, a crash handled by the supervisor): the other
            # process takes over within a lease round
            await stack.aclose()
            await asyncio.wait_for(second.app[BOT_RUNNER].polling.leading.wait(), 2 * LEASE)
            await emulator.send_text(user["id"], "/help again")
            assert len(await emulator.wait_for_messages(user["id"], 6, timeout=10)) == 6
            await services[1].__aexit__(None, None, None)
    finally:
        await server.cleanup()
    assert not [r for r in caplog.records if "Conflict" in r.getMessage()]  # never two polls
