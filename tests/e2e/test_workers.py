"""`payrescue run --workers 2` as a real command: two service processes on PostgreSQL and
Redis in webhook mode, Telegram played by the emulator in this process. One worker is killed
with SIGKILL while the outbox drains; the emulator's own record is the measure: nothing lost,
every chat in order, at most the rows in flight sent twice, no send during a flood ban.

PostgreSQL only: several workers are what PostgreSQL is for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.emulator import EmulatorLimits, TelegramEmulator, start_emulator
from payrescue import outbox
from payrescue.clock import Clock
from payrescue.db import create_sessionmaker
from payrescue.db.models import Lease, Member, Outbox, TelegramLink
from tests.conftest import TEST_SECRET
from tests.handoff.test_redis_bus import REDIS_URL
from tests.harness import BOT_TOKEN, BOT_USERNAME, WEBHOOK_SECRET

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
CHATS = 150
WAVES = ("Ihre Zahlung ist fehlgeschlagen", "Erinnerung", "Ihre Zahlung ist eingegangen")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(parent: int) -> list[int]:
    """The pids whose parent is `parent` (from /proc: no extra package needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


async def until(check, what: str, seconds: float = 60) -> None:  # noqa: ANN001
    try:
        async with asyncio.timeout(seconds):
            while not await check():  # noqa: ASYNC110 - other processes do the work
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {seconds} s: {what}") from None


async def test_two_workers_survive_a_kill_mid_drain(engine: AsyncEngine, database_url: str,
                                                    tmp_path: Path) -> None:
    emulator = TelegramEmulator(EmulatorLimits(global_per_second=400, per_chat_per_second=None))
    emulator.add_bot(token=BOT_TOKEN, username=BOT_USERNAME, first_name="PayRescue")
    emulator.set_latency(0.02)
    server, emulator_url = await start_emulator(emulator)
    sessionmaker = create_sessionmaker(engine)
    now = Clock().now()
    chats = []
    async with sessionmaker() as session:
        for n in range(CHATS):
            user = emulator.create_user(f"M{n}", language_code="de")
            member = Member(email=f"m{n}@example.org", name=f"M{n}", language="de",
                            created_at=now)
            member.telegram = TelegramLink(chat_id=user["id"], telegram_user_id=user["id"],
                                           linked_at=now)
            session.add(member)
            await session.flush()
            for text in WAVES:
                await outbox.queue_message(session, member, "bot", {"text": text}, now)
            chats.append(user["id"])
        await session.commit()

    async def count(status: str) -> int:
        async with sessionmaker() as session:
            return await session.scalar(select(func.count()).where(Outbox.status == status))

    port = free_port()
    env = {**os.environ,
           "PAYRESCUE_DATABASE_URL": database_url, "PAYRESCUE_SECRET_KEY": TEST_SECRET,
           "PAYRESCUE_DATA_DIR": str(tmp_path), "PAYRESCUE_PORT": str(port),
           "PAYRESCUE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "PAYRESCUE_BOT_TOKEN": BOT_TOKEN, "PAYRESCUE_BOT_USERNAME": BOT_USERNAME,
           "PAYRESCUE_TELEGRAM_API_BASE": emulator_url, "PAYRESCUE_BOT_MODE": "webhook",
           "PAYRESCUE_WEBHOOK_SECRET": WEBHOOK_SECRET, "PAYRESCUE_REDIS_URL": REDIS_URL,
           "PAYRESCUE_INSTANCE": f"test-{uuid.uuid4().hex[:8]}",
           "PAYRESCUE_TELEGRAM_RATE_PER_SECOND": "300", "PAYRESCUE_OUTBOX_LEASE_SECONDS": "5",
           "PAYRESCUE_LOG_LEVEL": "WARNING"}
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "payrescue", "run", "--workers", "2", env=env,
        stderr=asyncio.subprocess.PIPE)
    try:
        await until(lambda: _async(len(children(supervisor.pid)) == 2), "two workers")
        await until(lambda: _at_least(count, "sent", CHATS), "a third sent")
        in_flight = await count("sending")
        victim = children(supervisor.pid)[0]
        os.kill(victim, signal.SIGKILL)
        await until(lambda: _at_least(count, "sent", CHATS * len(WAVES)), "all sent", seconds=90)
        async with sessionmaker() as session:
            schedulers = (await session.scalars(
                select(Lease.holder).where(Lease.name == "dunning-scheduler"))).all()
        # the supervisor starts another worker after a short pause (the drain may end first)
        await until(lambda: _async(victim not in children(supervisor.pid)
                                   and len(children(supervisor.pid)) == 2),
                    "a new worker in place of the killed one", seconds=30)
    finally:
        if supervisor.returncode is None:
            supervisor.send_signal(signal.SIGTERM)
        _, log = await asyncio.wait_for(supervisor.communicate(), 60)
        await server.cleanup()
    assert supervisor.returncode == 0, log.decode()[-2000:]
    assert f"worker 0 (pid {victim})" in log.decode() or f"worker 1 (pid {victim})" \
        in log.decode()
    assert len(schedulers) == 1  # one scheduler for the deployment
    duplicates = 0
    for chat in chats:
        got = [m["plain_text"] for m in emulator.sent_messages(chat)]
        firsts = [got.index(text) for text in WAVES]
        assert firsts == sorted(firsts), got  # nothing lost, the chat's order kept
        assert all(got.index(text) <= i for i, text in enumerate(got)), got
        duplicates += len(got) - len(WAVES)
    assert duplicates <= in_flight
    assert emulator.bans.violations == 0  # the two share the bot's rate: no flood ban broken


async def _async(value: bool) -> bool:
    return value


async def _at_least(count, status: str, number: int) -> bool:  # noqa: ANN001
    return await count(status) >= number
