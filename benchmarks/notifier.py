"""Outbox delivery and member-message relay through the Telegram emulator.

1. Throughput: 5,000 queued messages to 5,000 members, the emulator's global limit raised to
   1,000/s and the notifier set to the same limit. Prints achieved rate ÷ limit (target
   ≥ 0.95), the 429 answers seen, and rows lost (target 0): rows not "sent", or members who
   did not get exactly one message.
2. Relay latency: 200 members in conversations a human owns write at once; the time from a
   member's message entering the service (its webhook, then the bot's long poll) to its
   `message.created` event on the bus, p50 and p99. The emulator, like Telegram, POSTs a
   chat's webhook updates one after another (chats side by side, up to 40 at once), so that
   figure includes queueing.

Medians of BENCH_ROUNDS rounds (default 3) on SQLite; BENCH_DATABASE_URL picks another
database (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test, emptied first).

    python -m benchmarks notifier
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select, text

from bot.emulator import TelegramEmulator, start_emulator
from bot.emulator.limits import EmulatorLimits
from bot.notifier import Notifier
from bot.service import create_bot
from payrescue.clock import Clock
from payrescue.config import Settings, load_settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.db.migrate import upgrade
from payrescue.db.models import Base, Conversation, Member, Outbox, TelegramLink
from payrescue.events import Bus, Event
from payrescue.keys import BUS

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "5000"))
LIMIT = float(os.environ.get("BENCH_LIMIT", "1000"))
CHATTERS = int(os.environ.get("BENCH_CHATTERS", "200"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TOKEN = "999001:BENCHMARK-token"


async def _database(directory: Path):  # noqa: ANN202 - an AsyncEngine
    url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite+aiosqlite:///{directory}/b.sqlite3"
    engine = create_engine(url)
    await upgrade(engine)
    if engine.dialect.name == "postgresql":
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return engine


async def _seed(engine, chats: list[int]) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    count = len(chats)
    async with engine.begin() as connection:
        await connection.execute(insert(Member), [
            {"id": n + 1, "email": f"m{n}@example.org", "name": f"M{n}", "language": "en",
             "opted_out": False, "unreachable": False, "created_at": now}
            for n in range(count)])
        await connection.execute(insert(TelegramLink), [
            {"member_id": n + 1, "chat_id": chat, "telegram_user_id": chat, "linked_at": now}
            for n, chat in enumerate(chats)])
        await connection.execute(insert(Outbox), [
            {"member_id": n + 1, "chat_id": chat, "kind": "reminder", "priority": 5,
             "method": "sendMessage", "payload": {"text": f"Reminder {n}"}, "status": "queued",
             "attempts": 0, "not_before": now, "created_at": now}
            for n, chat in enumerate(chats)])


def _emulator_process(conn, count: int, limit: float) -> None:  # noqa: ANN001 - a Pipe end
    """The emulator in its own process, so it does not share a core with the notifier."""

    async def serve() -> None:
        emulator = TelegramEmulator(EmulatorLimits(global_per_second=limit))
        emulator.add_bot(token=TOKEN, username="bench_bot", first_name="Bench")
        chats = [emulator.create_user(f"M{n}", language_code="en")["id"] for n in range(count)]
        runner, base_url = await start_emulator(emulator)
        conn.send((base_url, chats))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        conn.send([len(emulator.sent_messages(chat)) for chat in chats])
        await runner.cleanup()

    asyncio.run(serve())


async def throughput_round() -> tuple[float, int, int]:
    """(rate ÷ limit from the notifier's start until the last message was delivered, 429s
    seen, rows lost) for one round."""
    here, there = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_emulator_process, args=(there, MESSAGES, LIMIT))
    process.start()
    base_url, chats = await asyncio.to_thread(here.recv)
    with tempfile.TemporaryDirectory() as directory:
        engine = await _database(Path(directory))
        settings = _settings(Path(directory), base_url, engine)
        try:
            await _seed(engine, chats)
            sessionmaker = create_sessionmaker(engine)
            bot = create_bot(settings)
            notifier = Notifier(bot, sessionmaker, Bus(), Clock(), settings)
            started = time.perf_counter()
            task = asyncio.create_task(notifier.run())
            while notifier.stats.sent + notifier.stats.failed < MESSAGES:
                await asyncio.sleep(0.005)
                if task.done():
                    task.result()
            elapsed = time.perf_counter() - started
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await bot.session.close()
            async with sessionmaker() as session:
                sent = await session.scalar(
                    select(func.count()).select_from(Outbox).where(Outbox.status == "sent"))
            here.send("stop")
            received = await asyncio.to_thread(here.recv)
            delivered_once = sum(1 for n in received if n == 1)
            lost = max(MESSAGES - (sent or 0), MESSAGES - delivered_once)
            return MESSAGES / elapsed / LIMIT, notifier.stats.too_many_requests, lost
        finally:
            await engine.dispose()
            process.join(10)


def _settings(directory: Path, base_url: str, engine) -> Settings:  # noqa: ANN001
    return load_settings(
        data_dir=directory, database_url=engine.url.render_as_string(hide_password=False),
        secret_key="benchmark-secret-key-0123456789-abcdefgh", bot_token=TOKEN,  # noqa: S106
        telegram_api_base=base_url, telegram_rate_per_second=LIMIT,
    )


async def relay_round(webhook: bool) -> tuple[float, float]:
    """(p50, p99) in ms: a member's message handed to the service (POSTed to its webhook, or
    fetched by the bot's long poll) → its `message.created` event on the bus."""
    from tests.harness import running_service

    with tempfile.TemporaryDirectory() as directory:
        engine = await _database(Path(directory))
        emulator = TelegramEmulator(EmulatorLimits.unlimited())
        try:
            async with running_service(engine=engine, clock=Clock(), webhook=webhook,
                                       emulator=emulator, data_dir=Path(directory)) as svc:
                chats = await _members_with_a_human(svc, CHATTERS)
                return await _measure_relay(svc, chats)
        finally:
            await engine.dispose()


async def _members_with_a_human(svc, count: int) -> dict[int, int]:  # noqa: ANN001
    """chat id → conversation id, every conversation waiting for an agent."""
    now = datetime.now(UTC)
    chats = {}
    async with svc.sessionmaker() as session:
        for n in range(count):
            chat = svc.emulator.create_user(f"C{n}", language_code="de")["id"]
            member = Member(email=f"c{n}@example.org", name=f"C{n}", language="de",
                            created_at=now)
            session.add(member)
            await session.flush()
            session.add(TelegramLink(member_id=member.id, chat_id=chat,
                                     telegram_user_id=chat, linked_at=now))
            conversation = Conversation(member_id=member.id, status="waiting",
                                        handoff_reasons=["asked_for_human"], waiting_since=now,
                                        created_at=now, updated_at=now)
            session.add(conversation)
            await session.flush()
            chats[chat] = conversation.id
        await session.commit()
    return chats


async def _measure_relay(svc, chats: dict[int, int]) -> tuple[float, float]:  # noqa: ANN001
    by_conversation = {conversation: chat for chat, conversation in chats.items()}
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    async with svc.app[BUS].subscribe() as events:
        for chat in chats:
            sent_at[chat] = time.perf_counter()
            await svc.emulator.send_text(chat, "Hallo, ist jemand da?")
        async with asyncio.timeout(60):
            while len(latencies) < len(chats):
                event: Event = await events.get()
                if event.topic != "message.created":
                    continue
                chat = by_conversation[event.data["conversation_id"]]
                latencies.append((time.perf_counter() - sent_at[chat]) * 1000)
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


async def main() -> None:
    results = [await throughput_round() for _ in range(ROUNDS)]
    print(f"outbox: {MESSAGES} messages at a {LIMIT:.0f}/s limit: achieved/limit "
          f"{statistics.median(r[0] for r in results):.3f} (target >= 0.95), "
          f"429s {statistics.median(r[1] for r in results):.0f}, "
          f"rows lost {max(r[2] for r in results)} (target 0)", flush=True)
    for webhook in (True, False):
        relays = [await relay_round(webhook) for _ in range(ROUNDS)]
        print(f"relay ({'webhook' if webhook else 'polling'}): {CHATTERS} members writing at "
              f"once: message -> bus p50 {statistics.median(r[0] for r in relays):.1f} ms, "
              f"p99 {statistics.median(r[1] for r in relays):.1f} ms", flush=True)
