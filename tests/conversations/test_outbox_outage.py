"""The database goes away while the notifier drains the outbox (a real cut: a TCP proxy
between the service and PostgreSQL drops every connection and refuses new ones).

PostgreSQL only: SQLite is a file inside the process, with no connection to cut.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.notifier import NOTIFIER
from payrescue.clock import FakeClock
from payrescue.db import create_engine, create_sessionmaker
from payrescue.db.models import Outbox
from tests.conversations.helpers import texts, wait_for_rows
from tests.conversations.test_notifier import members_with_chats, queue
from tests.dbproxy import TcpProxy
from tests.harness import eventually, running_service

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
CHATS = 20


async def test_nothing_stays_in_sending_after_an_outage_and_order_holds(
        engine: AsyncEngine, clock: FakeClock, tmp_path: Path, caplog) -> None:
    url = engine.url
    async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        behind = create_engine(proxy.url_for(url.render_as_string(hide_password=False)))
        try:
            async with running_service(engine=behind, clock=clock, data_dir=tmp_path,
                                       outbox_retry_seconds=0.01) as svc:
                pairs = await members_with_chats(svc, CHATS)
                svc.emulator.set_latency(0.15)  # sends are under way when the cut comes
                for wave in ("fehlgeschlagen", "eingegangen"):
                    for member, _ in pairs:
                        await queue(svc, member, f"Ihre Zahlung ist {wave}")
                await wait_for_rows(svc, 5, status="sent", timeout=10)
                direct = create_sessionmaker(engine)  # around the proxy: what was in flight
                async with direct() as session:
                    in_flight = await session.scalar(
                        select(func.count()).where(Outbox.status == "sending"))
                caplog.clear()
                caplog.set_level(logging.INFO)
                await proxy.cut()
                notifier = svc.app[NOTIFIER]
                await eventually(lambda: notifier.outage.failures >= 2, "the notifier failed")
                await asyncio.sleep(1)
                await proxy.restore()
                await wait_for_rows(svc, 2 * CHATS, status="sent", timeout=30)
                async with direct() as session:
                    stuck = await session.scalar(
                        select(func.count()).where(Outbox.status == "sending"))
                outage_lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
        finally:
            await behind.dispose()
    assert stuck == 0  # nothing waits for a lease to run out (the clock never moved)
    duplicates = 0
    for _, chat in pairs:
        got = texts(svc.emulator.sent_messages(chat))
        assert got[0] == "Ihre Zahlung ist fehlgeschlagen", got  # never "eingegangen" first
        assert got.index("Ihre Zahlung ist eingegangen") > 0
        first_paid = got.index("Ihre Zahlung ist eingegangen")
        assert all("eingegangen" in t for t in got[first_paid:]), got  # no failure after it
        duplicates += len(got) - 2
    assert duplicates <= in_flight  # at most what was under way at the cut came twice
    # the whole process said so once when it went and once when it came back
    assert len(outage_lines) <= 5, [r.getMessage() for r in outage_lines]
