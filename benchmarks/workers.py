"""One process against two (`payrescue run --workers 1|2`) on PostgreSQL and Redis.

1. Dispatch: MESSAGES outbox rows (3 per chat) queued at once; the time until all are sent,
   measured from the emulator's own record (Telegram's rate and the emulator's limit set far
   above what the machine can do, so the processes are the bottleneck). Also counted from the
   record: messages lost, sent twice, chats out of order.
2. Ingest: EVENTS signed Stripe `invoice.payment_failed` events POSTed CONCURRENCY at a time.

Each round starts fresh workers on a scratch database; the figure is the median of ROUNDS and
the ratio two ÷ one (target ≥ 1.7). The load generator and the emulator run in this process
and share the 2 cores with the workers, so on this machine the ratio is bounded well below 2.
Beside each figure, where the CPU went while it was measured: the workers (`payrescue run`
and its children), this process (emulator and load generator) and the scratch database's
PostgreSQL backends, in seconds per 1,000 messages or events, and how many cores that kept
busy on average (the machine has os.cpu_count()).

BENCH_TELEGRAM_LATENCY (seconds, default 0) delays every Bot API answer of the emulator, as
the network to Telegram does (real round trips take tens of milliseconds): with it the
figures say what a second process adds when sends wait on the network rather than the CPU.

    python -m benchmarks workers
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import stripe
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from benchmarks._postgres import scratch_database
from benchmarks.ingest import WHSEC, _event
from bot.emulator import EmulatorLimits, TelegramEmulator, start_emulator
from payrescue.db import create_engine
from payrescue.db.migrate import upgrade
from payrescue.db.models import Member, Outbox, TelegramLink
from payrescue.events import Event, create_bus

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "3000"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "1500"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "40"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
LATENCY = float(os.environ.get("BENCH_TELEGRAM_LATENCY", "0"))
REDIS_URL = os.environ.get("PAYRESCUE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TOKEN = "999002:WORKERS-token"
TEXTS = ("one", "two", "three")


_TICK = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float, bytes]]:
    """pid → (parent pid, CPU seconds so far, command line) of every readable process."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except OSError:  # ended meanwhile
            continue
        found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK,
                                  command)
    return found


class CpuMeter:
    """CPU seconds spent between `start()` and `stop()` by a process tree (the workers), by
    this process and by the PostgreSQL backends serving one database."""

    def __init__(self, workers: int, database: str) -> None:
        self.workers, self.database = workers, database.encode()
        self.spent: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        processes = _processes()
        tree, grown = {self.workers}, True
        while grown:
            more = {pid for pid, (parent, _, _) in processes.items() if parent in tree}
            grown, tree = bool(more - tree), tree | more
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "workers": sum(processes[pid][1] for pid in tree if pid in processes),
            "emulator+load": own.ru_utime + own.ru_stime,
            "postgres": sum(cpu for _, cpu, command in processes.values()
                            if command.startswith(b"postgres:") and self.database in command),
        }

    def start(self) -> None:
        self._started, self._wall = self._now(), time.perf_counter()

    def stop(self, units: int) -> dict[str, float]:
        now, wall = self._now(), time.perf_counter() - self._wall
        spent = {k: now[k] - self._started[k] for k in now}
        self.spent = {k: v / units * 1000 for k, v in spent.items()}
        self.spent["cores busy"] = sum(spent.values()) / wall
        return self.spent


def _cpu_line(rounds: list[dict[str, float]]) -> str:
    keys = ("workers", "emulator+load", "postgres")
    parts = [f"{k} {statistics.median(r[k] for r in rounds):.2f}" for k in keys]
    busy = statistics.median(r["cores busy"] for r in rounds)
    return (f"CPU s per 1,000: {', '.join(parts)}; {busy:.2f} of {os.cpu_count()} "
            f"cores busy")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _workers(count: int, url: str, emulator_url: str, instance: str
                   ) -> tuple[asyncio.subprocess.Process, str]:
    port = _port()
    env = {**os.environ, "PAYRESCUE_DATABASE_URL": url, "PAYRESCUE_PORT": str(port),
           "PAYRESCUE_SECRET_KEY": "benchmark-secret-key-0123456789-abcdefghij",
           "PAYRESCUE_DATA_DIR": tempfile.mkdtemp(), "PAYRESCUE_BOT_TOKEN": TOKEN,
           "PAYRESCUE_BOT_USERNAME": "bench_bot", "PAYRESCUE_TELEGRAM_API_BASE": emulator_url,
           "PAYRESCUE_BOT_MODE": "webhook", "PAYRESCUE_WEBHOOK_SECRET": "bench-secret",
           "PAYRESCUE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "PAYRESCUE_REDIS_URL": REDIS_URL, "PAYRESCUE_INSTANCE": instance,
           "PAYRESCUE_STRIPE_WEBHOOK_SECRET": WHSEC,
           "PAYRESCUE_TELEGRAM_RATE_PER_SECOND": "100000",
           "PAYRESCUE_TELEGRAM_CHAT_BURST": "3", "PAYRESCUE_LOG_LEVEL": "ERROR"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "payrescue", "run", "--workers", str(count), env=env)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as client:
        for _ in range(300):  # every worker up: ask more often than there are workers
            ready = 0
            for _ in range(4 * count):
                try:
                    async with client.get(f"{base}/readyz") as answer:
                        ready += answer.status == 200
                except aiohttp.ClientError:
                    pass
            if ready == 4 * count:
                break
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # the bots finish setting up their webhooks
    return process, base


async def _stop(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 60)


async def _dispatch_round(count: int) -> dict[str, Any]:
    emulator = TelegramEmulator(EmulatorLimits.unlimited())
    emulator.set_latency(LATENCY)
    emulator.add_bot(token=TOKEN, username="bench_bot")
    server, emulator_url = await start_emulator(emulator)
    chats = [emulator.create_user(f"M{n}")["id"] for n in range(MESSAGES // len(TEXTS))]
    try:
        async with scratch_database() as url:
            engine = create_engine(url)
            await upgrade(engine)
            instance = f"bench-{uuid.uuid4().hex[:8]}"
            process, _ = await _workers(count, url, emulator_url, instance)
            meter = CpuMeter(process.pid, make_url(url).database or "")
            try:
                started = await _queue(engine, chats, instance, meter)
                async with asyncio.timeout(300):
                    while emulator_sent(emulator, chats) < MESSAGES:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)  # the workers are other processes
                seconds = time.perf_counter() - started
                cpu = meter.stop(MESSAGES)
            finally:
                await _stop(process)
                await engine.dispose()
    finally:
        await server.cleanup()
    lost = duplicated = out_of_order = 0
    for chat in chats:
        got = [m["plain_text"] for m in emulator.sent_messages(chat)]
        lost += len(set(TEXTS) - set(got))
        duplicated += len(got) - len(set(got))
        out_of_order += [got.index(t) for t in TEXTS if t in got] != sorted(
            got.index(t) for t in TEXTS if t in got)
    return {"rate": MESSAGES / seconds, "lost": lost, "duplicated": duplicated,
            "out_of_order": out_of_order, "cpu": cpu}


def emulator_sent(emulator: TelegramEmulator, chats: list[int]) -> int:
    return sum(len(emulator.sent_messages(chat)) for chat in chats)


async def _queue(engine, chats: list[int], instance: str,  # noqa: ANN001
                 meter: CpuMeter) -> float:
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        ids = (await connection.execute(insert(Member).returning(Member.id), [
            {"email": f"m{n}@example.org", "name": f"M{n}", "language": "en",
             "unreachable": False, "opted_out": False, "created_at": now}
            for n in range(len(chats))])).scalars().all()
        await connection.execute(insert(TelegramLink), [
            {"member_id": member, "chat_id": chat, "telegram_user_id": chat, "linked_at": now}
            for member, chat in zip(ids, chats, strict=True)])
    started = time.perf_counter()
    meter.start()
    async with engine.begin() as connection:
        await connection.execute(insert(Outbox), [
            {"member_id": member, "chat_id": chat, "kind": "bot", "priority": 2,
             "method": "sendMessage", "payload": {"text": text}, "status": "queued",
             "attempts": 0, "not_before": now, "created_at": now}
            for text in TEXTS for member, chat in zip(ids, chats, strict=True)])
    bus = create_bus(REDIS_URL, instance)
    await bus.start()
    await bus.publish(Event("outbox.queued", {}))
    await bus.close()
    return started


async def _ingest_round(count: int) -> tuple[float, dict[str, float]]:
    emulator = TelegramEmulator(EmulatorLimits.unlimited())
    emulator.set_latency(LATENCY)
    emulator.add_bot(token=TOKEN, username="bench_bot")
    server, emulator_url = await start_emulator(emulator)
    run = uuid.uuid4().hex[:6]
    bodies = [_event(n, run) for n in range(EVENTS)]
    try:
        async with scratch_database() as url:
            engine = create_engine(url)
            await upgrade(engine)
            await engine.dispose()
            process, base = await _workers(count, url, emulator_url, f"bench-{run}")
            meter = CpuMeter(process.pid, make_url(url).database or "")
            try:
                queue: asyncio.Queue[bytes] = asyncio.Queue()
                for body in bodies:
                    queue.put_nowait(body)
                connector = aiohttp.TCPConnector(limit=CONCURRENCY, force_close=True)
                async with aiohttp.ClientSession(connector=connector) as client:
                    started = time.perf_counter()
                    meter.start()
                    await asyncio.gather(*(_post(client, base, queue)
                                           for _ in range(CONCURRENCY)))
                    seconds = time.perf_counter() - started
                    cpu = meter.stop(EVENTS)
            finally:
                await _stop(process)
    finally:
        await server.cleanup()
    return EVENTS / seconds, cpu


async def _post(client: aiohttp.ClientSession, base: str, queue: asyncio.Queue[bytes]) -> None:
    while not queue.empty():
        body = queue.get_nowait()
        async with client.post(f"{base}/webhooks/stripe", data=body, headers={
                "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
                    body.decode(), WHSEC),
                "Content-Type": "application/json"}) as answer:
            if answer.status != 200:
                raise RuntimeError(f"ingest answered {answer.status}")


async def main() -> None:
    dispatch: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    ingest: dict[int, list[tuple[float, dict[str, float]]]] = {1: [], 2: []}
    print(f"Telegram latency {LATENCY * 1000:.0f} ms (BENCH_TELEGRAM_LATENCY)", flush=True)
    for _ in range(ROUNDS):  # alternate, so the machine's drift hits both alike
        for count in (1, 2):
            dispatch[count].append(await _dispatch_round(count))
            ingest[count].append(await _ingest_round(count))
    for count in (1, 2):
        rates = [r["rate"] for r in dispatch[count]]
        faults = {k: sum(r[k] for r in dispatch[count]) for k in
                  ("lost", "duplicated", "out_of_order")}
        print(f"dispatch, {count} worker(s): median {statistics.median(rates):.0f} msg/s "
              f"(rounds {', '.join(f'{r:.0f}' for r in rates)}); {faults}; "
              f"{_cpu_line([r['cpu'] for r in dispatch[count]])}")
        events = [r[0] for r in ingest[count]]
        print(f"ingest,   {count} worker(s): median {statistics.median(events):.0f} "
              f"events/s (rounds {', '.join(f'{r:.0f}' for r in events)}); "
              f"{_cpu_line([r[1] for r in ingest[count]])}")
    ratio_d = statistics.median(r["rate"] for r in dispatch[2]) / statistics.median(
        r["rate"] for r in dispatch[1])
    ratio_i = statistics.median(r[0] for r in ingest[2]) / statistics.median(
        r[0] for r in ingest[1])
    print(f"two ÷ one: dispatch {ratio_d:.2f}, ingest {ratio_i:.2f} (target ≥ 1.7)")
    # two workers cannot keep more cores busy than the machine has: with the load generator,
    # the emulator and PostgreSQL on the same cores, this is as far as the ratio can go here
    bound_d = (os.cpu_count() or 1) / statistics.median(
        r["cpu"]["cores busy"] for r in dispatch[1])
    bound_i = (os.cpu_count() or 1) / statistics.median(r[1]["cores busy"] for r in ingest[1])
    print(f"this machine's bound (its cores ÷ cores busy with one worker): dispatch "
          f"{bound_d:.2f}, ingest {bound_i:.2f}")
