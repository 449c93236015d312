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


async def first_to_lead(polling: list) -> int:  # noqa: ANN001 - Leaderships
    waits = [asyncio.ensure_future(p.leading.wait()) for p in polling]
    try:
        done, _ = await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    assert len(done) == 1
    return waits.index(done.pop())


async def test_one_of_two_services_polls_and_the_other_takes_over(
        engine: AsyncEngine, clock: FakeClock, tmp_path: Path, caplog) -> None:
    emulator = TelegramEmulator(EmulatorLimits(per_chat_per_second=None))
    server, url = await start_emulator(emulator)
    services = [running_service(engine=engine, clock=clock, data_dir=tmp_path / name,
                                emulator=emulator, emulator_url=url,
                                leader_lease_seconds=LEASE) for name in ("a", "b")]
    try:
        async with contextlib.AsyncExitStack() as a, contextlib.AsyncExitStack() as b:
            stacks = [a, b]
            running = [await stack.enter_async_context(service)
                       for stack, service in zip(stacks, services, strict=True)]
            polling = [svc.app[BOT_RUNNER].polling for svc in running]
            leader = await first_to_lead(polling)
            other = 1 - leader
            user = running[0].create_user("Mia", language_code="en")
            for n in range(5):
                await emulator.send_text(user["id"], f"/help {n}")
            assert len(await emulator.wait_for_messages(user["id"], 5, timeout=15)) == 5
            await asyncio.sleep(LEASE)  # several lease rounds: the other stays out
            assert polling[leader].leading.is_set() and not polling[other].leading.is_set()
            assert len(emulator.sent_messages(user["id"])) == 5  # each update handled once
            # the poller stops (a deploy, a crash handled by the supervisor): the other
            # process takes over within a lease round or two
            await stacks[leader].aclose()
            await asyncio.wait_for(polling[other].leading.wait(), 10)
            await emulator.send_text(user["id"], "/help again")
            assert len(await emulator.wait_for_messages(user["id"], 6, timeout=15)) == 6
    finally:
        await server.cleanup()
    assert not [r for r in caplog.records if "Conflict" in r.getMessage()]  # never two polls
