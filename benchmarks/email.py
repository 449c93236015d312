"""E-mail delivery through the outbox to a local SMTP server (aiosmtpd in a thread).

1. Throughput: EMAILS rows (default 500) for as many members, queued (each message is
   made then, as in production: the time is printed too), drained by `mail.sender`'s worker
   (claim, re-check, send the stored bytes, record) with its rate limit raised out of the
   way, from the moment they become due for a sender that is up and idle, as in a running
   service; then a bare aiosmtplib loop sends the same bytes (`sendmail`, one connection) in the
   same run. Prints both rates and their ratio (target ≥ 0.8).
2. Crash: a worker process drains the same number of rows and is killed (SIGKILL) once a
   third has arrived; a fresh worker takes over after the dead one's lease. Prints e-mails
   lost (target 0) and sent twice (at most those in flight).

BENCH_ROUNDS rounds (default 5) of part 1, each on a fresh SQLite database in a temporary
directory: medians and ranges are printed.

    python -m benchmarks email
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import statistics
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update

from mail.sender import MailSender, SmtpTransport
from payrescue import outbox
from payrescue.clock import Clock
from payrescue.config import Settings, load_settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.db.migrate import upgrade
from payrescue.db.models import Member, Outbox
from payrescue.email_message import date_header
from payrescue.events import Bus, Event

EMAILS = int(os.environ.get("BENCH_EMAILS", "500"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


class Counter:
    def __init__(self) -> None:
        self.recipients: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _settings(directory: Path, port: int) -> Settings:
    return load_settings(
        data_dir=directory, database_url=f"sqlite+aiosqlite:///{directory / 'bench.sqlite3'}",
        secret_key="benchmark-secret-key-0123456789-abcdef", smtp_host="127.0.0.1",
        smtp_port=port, smtp_security="none", smtp_from="club@example.org",
        smtp_rate_per_second=100_000, outbox_lease_seconds=5)


async def _queue(settings: Settings, count: int, *, later: bool = False) -> float:
    """Queue `count` e-mail rows for as many members (`later`: due tomorrow, for `_drain`'s
    warm start); returns the seconds it took."""
    engine = create_engine(settings.effective_database_url)
    await upgrade(engine)
    now = Clock().now()
    due = now + timedelta(days=1) if later else now
    started = time.perf_counter()
    async with create_sessionmaker(engine)() as session:
        for n in range(count):
            member = Member(email=f"m{n}@example.org", name=f"M {n}", language="de",
                            created_at=now)
            session.add(member)
            await session.flush()
            await outbox.queue_message(
                session, member, "reminder",
                {"subject": "Ihre Zahlung", "body": f"Hallo M {n},\n\nbitte aktualisieren.",
                 "language": "de", "update_url": "https://example.org/u/x"},
                now, not_before=due, channel=outbox.EMAIL, settings=settings)
        await session.commit()
    seconds = time.perf_counter() - started
    await engine.dispose()
    return seconds


async def _drain(settings: Settings, count: int, *, warm: bool = False
                 ) -> tuple[float, float]:
    """Seconds (wall clock, and this process's CPU) until `count` rows are recorded sent
    (told by the sender's own events, so the measurement adds no database reads).

    `warm`: as in a running service, the sender is up and idle (its database connection
    open, leases checked) when the rows (queued for tomorrow) become due; the clock starts
    then. Otherwise it starts with the sender."""
    engine = create_engine(settings.effective_database_url)
    sessionmaker = create_sessionmaker(engine)
    bus = Bus()
    await bus.start()
    sender = MailSender(SmtpTransport(settings), sessionmaker, bus, Clock(), settings)
    async with bus.subscribe() as events:
        task = asyncio.create_task(sender.run())
        if warm:
            await asyncio.sleep(0.5)  # up and idle: nothing is due yet
            async with sessionmaker() as session:
                await session.execute(update(Outbox).values(not_before=Clock().now()))
                await session.commit()
            await bus.publish(Event("outbox.queued", {"outbox_id": 0}))
        started, cpu = time.perf_counter(), time.process_time()
        try:
            sent = 0
            while sent < count:
                event = await events.get()
                sent += event.topic == "outbox.updated" and event.data["status"] == "sent"
            return time.perf_counter() - started, time.process_time() - cpu
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await bus.close()
            await engine.dispose()


async def _bare(settings: Settings, count: int) -> tuple[float, float]:
    """The same messages (stored bytes, a Date put before them as the sender does) sent one
    after the other over one connection, nothing else."""
    engine = create_engine(settings.effective_database_url)
    async with create_sessionmaker(engine)() as session:
        rows = (await session.execute(
            select(Outbox.payload, Outbox.email_raw).order_by(Outbox.id).limit(count))).all()
    await engine.dispose()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=settings.smtp_port, start_tls=False)
    started, cpu = time.perf_counter(), time.process_time()
    await client.connect()
    for payload, raw in rows:
        await client.sendmail("club@example.org", [payload["to"]],
                              date_header(Clock().now()) + raw)
    await client.quit()
    return time.perf_counter() - started, time.process_time() - cpu


async def _recorded(settings: Settings) -> int:
    """Rows recorded as sent."""
    engine = create_engine(settings.effective_database_url)
    async with create_sessionmaker(engine)() as session:
        count = await session.scalar(select(func.count()).where(Outbox.status == outbox.SENT))
    await engine.dispose()
    return count or 0


def _worker(directory: str, port: int) -> None:
    settings = _settings(Path(directory), port)
    asyncio.run(_drain(settings, 10**9))


async def _round(port: int, bare_first: bool) -> tuple[float, ...]:
    """One round on a fresh database: ms to queue one e-mail; e-mails/s through the outbox
    and by the bare loop (which reads the stored messages, so it may go first); and ms of
    this process's CPU (the SMTP server's thread included) per e-mail each way."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp), port)
        queued = await _queue(settings, EMAILS, later=True)
        if bare_first:
            bare, bare_cpu = await _bare(settings, EMAILS)
        through_outbox, outbox_cpu = await _drain(settings, EMAILS, warm=True)
        if not bare_first:
            bare, bare_cpu = await _bare(settings, EMAILS)
    return (queued / EMAILS * 1000, EMAILS / through_outbox, EMAILS / bare,
            outbox_cpu / EMAILS * 1000, bare_cpu / EMAILS * 1000)


def _spread(values: list[float], fmt: str = ",.0f") -> str:
    return (f"{statistics.median(values):{fmt}} (median; {min(values):{fmt}}–"
            f"{max(values):{fmt}})")


async def _throughput() -> None:
    counter = Counter()
    port = _free_port()
    controller = Controller(counter, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        # rounds, each measuring both ways back to back, in turn which goes first: a burst
        # of load on the machine falls on both sides of a round's ratio
        rounds = [await _round(port, bare_first=n % 2 == 1) for n in range(ROUNDS)]
    finally:
        controller.stop()
    queue_ms, rates, bare_rates, cpu, bare_cpu = (list(column)
                                                  for column in zip(*rounds, strict=True))
    ratios = [rate / bare for rate, bare in zip(rates, bare_rates, strict=True)]
    cpu_ratios = [bare / mine for mine, bare in zip(cpu, bare_cpu, strict=True)]
    print(f"{ROUNDS} rounds of {EMAILS} e-mails")
    print(f"queueing, each message made then: {_spread(queue_ms, '.2f')} ms per e-mail")
    print(f"outbox → SMTP: {_spread(rates)} e-mails/s")
    print(f"bare aiosmtplib loop: {_spread(bare_rates)} e-mails/s")
    print(f"ratio: {_spread(ratios, '.2f')} (target ≥ 0.8)")
    # CPU time is what a loaded machine disturbs least
    print(f"CPU per e-mail (this process, the SMTP server's thread included): outbox "
          f"{_spread(cpu, '.2f')} ms, bare loop {_spread(bare_cpu, '.2f')} ms; "
          f"ratio {_spread(cpu_ratios, '.2f')}")


async def _crash() -> None:
    counter = Counter()
    port = _free_port()
    controller = Controller(counter, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = _settings(Path(tmp), port)
            await _queue(settings, EMAILS)
            process = multiprocessing.get_context("spawn").Process(
                target=_worker, args=(tmp, port))
            process.start()
            # the server counts in its own thread: polling is the simple bridge
            while len(counter.recipients) < EMAILS // 3:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            os.kill(process.pid or 0, signal.SIGKILL)
            process.join()
            at_kill = len(counter.recipients)
            await asyncio.sleep(settings.outbox_lease_seconds)  # the dead worker's lease
            await _drain(settings, EMAILS - await _recorded(settings))
        received = counter.recipients
        lost = EMAILS - len(set(received))
        print(f"kill -9 after {at_kill} of {EMAILS}: lost {lost} (target 0), sent twice "
              f"{len(received) - len(set(received))}")
    finally:
        controller.stop()


async def main() -> None:
    await _throughput()
    await _crash()
