"""Member messages relayed per second by one process, and what a database outage costs.

1. Relay rate: BENCH_CHATTERS members (default 200) in conversations a human owns each write
   BENCH_EACH messages (default 3) at once; the rate is messages ÷ the time from the first
   one handed to Telegram (the emulator) to the last one stored and announced on the bus
   (`message.created`). Beside it, in the same run and the same database, a bare aiogram
   handler that only INSERTs each message (aiogram's own polling or webhook handler): the
   floor. Rounds alternate bare and service; the figure is the median of the rounds' ratios
   (target ≥ 0.5), for polling and for webhook mode, on SQLite and (when reachable)
   PostgreSQL. The emulator, like Telegram, POSTs webhook updates a chat at a time and
   chats side by side (up to the webhook's max_connections, 40), for both.
2. Outage (PostgreSQL): members write one message every BENCH_OUTAGE_INTERVAL seconds while
   a TCP proxy cuts the database for BENCH_OUTAGE_SECONDS (default 15; 0 skips this); after it
   is back, messages lost and stored twice, and the warning/error lines logged meanwhile
   (all, and without the notifier's and scheduler's, which report their own outages).

    python -m benchmarks relay        # or: make bench BENCH=relay
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiogram import Bot, Dispatcher
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message as TelegramMessage
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from benchmarks import _bare
from benchmarks._postgres import with_postgres
from benchmarks.notifier import _members_with_a_human
from bot.emulator import EmulatorLimits, TelegramEmulator, start_emulator
from bot.service import BotSession
from payrescue.clock import Clock
from payrescue.db import create_engine
from payrescue.db.models import Message
from payrescue.events import Event
from payrescue.keys import BUS

CHATTERS = int(os.environ.get("BENCH_CHATTERS", "200"))
EACH = int(os.environ.get("BENCH_EACH", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
OUTAGE_SECONDS = float(os.environ.get("BENCH_OUTAGE_SECONDS", "15"))
OUTAGE_INTERVAL = float(os.environ.get("BENCH_OUTAGE_INTERVAL", "1"))
OUTAGE_WRITERS = 20
BARE_TOKEN = "999002:BARE-token"
BARE_TABLE = "bench_bare_message"
_BARE_INSERT = text(f"INSERT INTO {BARE_TABLE} (chat_id, body) VALUES (:c, :b)")  # noqa: S608
WEBHOOK_SECRET = "bench-webhook-secret-0123456789"
# they report their own outages (bot/notifier.py): counted apart
OTHER_REPORTERS = ("bot.notifier",)


async def _write_all(emulator: TelegramEmulator, chats: list[int], *, bot: str | None = None
                     ) -> float:
    """Every chat writes EACH messages, one after another per chat; returns the start time."""
    started = time.perf_counter()
    for number in range(EACH):
        for chat in chats:
            await emulator.send_text(chat, f"Nachricht {number} von {chat}", bot=bot)
    return started


# --- the service ----------------------------------------------------------------------------


async def service_round(url: str, directory: Path, *, webhook: bool) -> float:
    """Messages per second: handed to Telegram → stored → `message.created` on the bus."""
    from tests.harness import running_service

    engine = create_engine(url)
    emulator = TelegramEmulator(EmulatorLimits.unlimited())
    try:
        async with running_service(engine=engine, clock=Clock(), webhook=webhook,
                                   emulator=emulator, data_dir=directory,
                                   polling_timeout=10) as svc:
            chats = list(await _members_with_a_human(svc, CHATTERS))
            async with svc.app[BUS].subscribe() as events:
                started = await _write_all(emulator, chats)
                await _count_events(events, len(chats) * EACH)
                return len(chats) * EACH / (time.perf_counter() - started)
    finally:
        await engine.dispose()


async def _count_events(events: asyncio.Queue[Event], expected: int) -> None:
    seen = 0
    async with asyncio.timeout(120):
        while seen < expected:
            seen += (await events.get()).topic == "message.created"


# --- the floor: a bare aiogram handler --------------------------------------------------------


async def bare_round(url: str, *, webhook: bool) -> float:
    """Messages per second through aiogram's own polling (or webhook handler) into one
    INSERT each, on the same database."""
    engine = create_engine(url)
    emulator = TelegramEmulator(EmulatorLimits.unlimited())
    emulator.add_bot(token=BARE_TOKEN, username="bare_bot")
    runner, base = await start_emulator(emulator)
    bot = Bot(BARE_TOKEN, session=BotSession(api=TelegramAPIServer.from_base(base)))
    chats = [emulator.create_user(f"B{n}")["id"] for n in range(CHATTERS)]
    expected = len(chats) * EACH
    stored = 0
    done = asyncio.Event()
    dispatcher = Dispatcher()

    @dispatcher.message()
    async def store(message: TelegramMessage) -> None:
        nonlocal stored
        async with engine.begin() as connection:
            await connection.execute(_BARE_INSERT, {"c": message.chat.id, "b": message.text})
        stored += 1
        if stored == expected:
            done.set()

    try:
        async with _bare_receiving(dispatcher, bot, webhook=webhook):
            started = await _write_all(emulator, chats)
            async with asyncio.timeout(120):
                await done.wait()
            return expected / (time.perf_counter() - started)
    finally:
        await bot.session.close()
        await runner.cleanup()
        await engine.dispose()


@asynccontextmanager
async def _bare_receiving(dispatcher: Dispatcher, bot: Bot, *, webhook: bool
                          ) -> AsyncIterator[None]:
    if not webhook:
        await bot.delete_webhook()
        polling = asyncio.create_task(dispatcher.start_polling(
            bot, handle_signals=False, close_bot_session=False, polling_timeout=10))
        try:
            yield
        finally:
            await dispatcher.stop_polling()
            await asyncio.gather(polling, return_exceptions=True)
        return
    app = web.Application()
    SimpleRequestHandler(dispatcher, bot, secret_token=WEBHOOK_SECRET,
                         handle_in_background=False).register(app, path="/hook")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port the OS chose
    await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token=WEBHOOK_SECRET)
    try:
        yield
    finally:
        await runner.cleanup()


async def _empty(url: str) -> None:
    """The same starting point for every round: no members, no conversations."""
    from payrescue.db.models import Base

    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for table in [*reversed(Base.metadata.sorted_tables)]:
                await connection.execute(table.delete())
            await connection.execute(text(f"DELETE FROM {BARE_TABLE}"))  # noqa: S608
    finally:
        await engine.dispose()


async def measure(name: str, url: str, directory: Path) -> None:
    await _bare.prepare(url, BARE_TABLE, "chat_id BIGINT, body TEXT")
    for webhook in (False, True):
        mode = "webhook" if webhook else "polling"
        service_rates, bare_rates = [], []
        for _ in range(ROUNDS):  # alternate, so both see the same machine load
            await _empty(url)
            bare_rates.append(await bare_round(url, webhook=webhook))
            await _empty(url)
            service_rates.append(await service_round(url, directory, webhook=webhook))
        ratios = sorted(s / b for s, b in zip(service_rates, bare_rates, strict=True))
        print(f"{name:<10} {mode:<7} service {statistics.median(service_rates):6.0f} msg/s   "
              f"bare aiogram {statistics.median(bare_rates):6.0f} msg/s   ratio "
              f"{statistics.median(ratios):4.2f} (rounds {ratios[0]:.2f}–{ratios[-1]:.2f}; "
              f"{CHATTERS} chats × {EACH} messages × {ROUNDS} rounds, medians)", flush=True)


# --- the outage -------------------------------------------------------------------------------


class _Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def outage_round(url: str, directory: Path, *, webhook: bool) -> str:
    from tests.dbproxy import TcpProxy
    from tests.harness import running_service

    parsed = make_url(url)
    await _empty(url)
    async with TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432) as proxy:
        engine = create_engine(proxy.url_for(url))
        emulator = TelegramEmulator(EmulatorLimits.unlimited())
        counting = _Counting()
        try:
            async with running_service(engine=engine, clock=Clock(), webhook=webhook,
                                       emulator=emulator, data_dir=directory) as svc:
                chats = list(await _members_with_a_human(svc, OUTAGE_WRITERS))
                logging.getLogger().addHandler(counting)
                written = await _steady_load_through_a_cut(svc, chats, proxy)
                stored = await _wait_stored(url, written)
        finally:
            logging.getLogger().removeHandler(counting)
            await engine.dispose()
    ours = [r for r in counting.records if not r.name.startswith(OTHER_REPORTERS)]
    distinct = len(set(stored))
    return (f"written {written}, lost {written - distinct}, stored twice "
            f"{len(stored) - distinct}; log lines {len(counting.records)} "
            f"({len(ours)} without the notifier's)")


async def _steady_load_through_a_cut(svc, chats: list[int], proxy) -> int:  # noqa: ANN001
    """Members keep writing before, during and after the cut; returns how many messages."""
    written = 0
    cut_at = 3.0
    load_until = cut_at + OUTAGE_SECONDS + 3.0
    started = time.perf_counter()
    cut = restored = False
    while (elapsed := time.perf_counter() - started) < load_until:
        if not cut and elapsed >= cut_at:
            await proxy.cut()
            cut = True
        if cut and not restored and elapsed >= cut_at + OUTAGE_SECONDS:
            await proxy.restore()
            restored = True
        for chat in chats:
            await svc.emulator.send_text(chat, f"Nachricht {written} von {chat}")
            written += 1
        await asyncio.sleep(OUTAGE_INTERVAL)
    return written


async def _wait_stored(url: str, expected: int, patience: float = 60) -> list[str]:
    """The member messages stored, once all arrived or `patience` seconds passed."""
    engine = create_engine(url)
    try:
        deadline = time.perf_counter() + patience
        while True:
            async with engine.connect() as connection:
                count = await connection.scalar(
                    select(func.count()).select_from(Message).where(Message.sender == "member"))
            if count >= expected or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.5)
        async with engine.connect() as connection:
            return list((await connection.scalars(
                select(Message.text).where(Message.sender == "member"))).all())
    finally:
        await engine.dispose()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await measure("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.sqlite3", Path(tmp))

        async def on_postgres(url: str) -> None:
            await measure("postgresql", url, Path(tmp))
            if OUTAGE_SECONDS > 0:
                for webhook in (False, True):
                    result = await outage_round(url, Path(tmp), webhook=webhook)
                    print(f"outage     {'webhook' if webhook else 'polling'} "
                          f"{OUTAGE_SECONDS:.0f} s database cut, {OUTAGE_WRITERS} members "
                          f"writing every {OUTAGE_INTERVAL:g} s: {result}", flush=True)

        await with_postgres(on_postgres)


if __name__ == "__main__":
    asyncio.run(main())
