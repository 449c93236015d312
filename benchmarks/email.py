"""E-mail delivery through the outbox to a local SMTP server (aiosmtpd in a thread).

1. Throughput: EMAILS rows (default 500) for as many members, drained by `mail.sender`'s
   worker (claim, compose, send, record) with its rate limit raised out of the way; then a
   bare aiosmtplib loop sends the same composed messages over one connection in the same
   run. Prints both rates and their ratio (target ≥ 0.8).
2. Crash: a worker process drains the same number of rows and is killed (SIGKILL) once a
   third has arrived; a fresh worker takes over after the dead one's lease. Prints e-mails
   lost (target 0) and sent twice (at most those in flight).

SQLite in a temporary directory.

    python -m benchmarks email
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from mail.compose import compose
from mail.sender import MailSender, SmtpTransport
from payrescue import outbox
from payrescue.clock import Clock
from payrescue.config import Settings, load_settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.db.migrate import upgrade
from payrescue.db.models import Member, Outbox
from payrescue.events import Bus

EMAILS = int(os.environ.get("BENCH_EMAILS", "500"))


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


async def _queue(settings: Settings, count: int) -> None:
    engine = create_engine(settings.effective_database_url)
    await upgrade(engine)
    now = Clock().now()
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
                now, channel=outbox.EMAIL)
        await session.commit()
    await engine.dispose()


async def _drain(settings: Settings, count: int) -> float:
    engine = create_engine(settings.effective_database_url)
    sessionmaker = create_sessionmaker(engine)
    bus = Bus()
    await bus.start()
    sender = MailSender(SmtpTransport(settings), sessionmaker, bus, Clock(), settings)
    started = time.perf_counter()
    task = asyncio.create_task(sender.run())
    try:
        while True:
            async with sessionmaker() as session:
                sent = await session.scalar(select(func.count()).where(
                    Outbox.status == outbox.SENT))
            if sent >= count:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.close()
        await engine.dispose()


async def _bare(settings: Settings, count: int) -> float:
    engine = create_engine(settings.effective_database_url)
    async with create_sessionmaker(engine)() as session:
        rows = list(await session.scalars(select(Outbox).order_by(Outbox.id)))
        members = {m.id: m for m in await session.scalars(select(Member))}
    await engine.dispose()
    now = Clock().now()
    messages: list[EmailMessage] = [compose(r, members[r.member_id], settings, now)
                                    for r in rows[:count]]
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=settings.smtp_port, start_tls=False)
    started = time.perf_counter()
    await client.connect()
    for message in messages:
        await client.send_message(message)
    await client.quit()
    return time.perf_counter() - started


def _worker(directory: str, port: int) -> None:
    settings = _settings(Path(directory), port)
    asyncio.run(_drain(settings, 10**9))


async def _throughput() -> None:
    counter = Counter()
    port = _free_port()
    controller = Controller(counter, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = _settings(Path(tmp), port)
            await _queue(settings, EMAILS)
            through_outbox = await _drain(settings, EMAILS)
            bare = await _bare(settings, EMAILS)
        rate, bare_rate = EMAILS / through_outbox, EMAILS / bare
        print(f"outbox → SMTP: {rate:,.0f} e-mails/s; bare aiosmtplib loop: {bare_rate:,.0f}"
              f" e-mails/s; ratio {rate / bare_rate:.2f} (target ≥ 0.8)")
    finally:
        controller.stop()


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
            await _drain(settings, EMAILS)
        received = counter.recipients
        lost = EMAILS - len(set(received))
        print(f"kill -9 after {at_kill} of {EMAILS}: lost {lost} (target 0), sent twice "
              f"{len(received) - len(set(received))}")
    finally:
        controller.stop()


async def main() -> None:
    await _throughput()
    await _crash()
