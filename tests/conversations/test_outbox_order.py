"""Per-chat order across workers, flood bans and blocked members (issue: faults and several
processes). Two notifiers in one test stand for two processes: they share nothing but the
database, exactly as two processes would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import select

from bot.emulator import EmulatorLimits
from bot.notifier import Notifier
from payrescue import outbox
from payrescue.db.models import Member, Outbox
from payrescue.events import Event
from payrescue.keys import BUS
from payrescue.outage import keep_running
from tests.conversations.helpers import outbox_rows, stop_notifier, texts, wait_for_rows
from tests.conversations.test_notifier import members_with_chats, queue
from tests.harness import RunningService


@contextlib.asynccontextmanager
async def notifiers(svc: RunningService, count: int) -> AsyncIterator[list[Notifier]]:
    """`count` notifiers, each with its own worker name, draining the same outbox."""
    workers = [Notifier(svc.bot, svc.sessionmaker, svc.app[BUS], svc.clock, svc.settings)
               for _ in range(count)]
    tasks = [asyncio.create_task(keep_running(w)) for w in workers]
    try:
        yield workers
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wake(svc: RunningService) -> None:
    await svc.app[BUS].publish(Event("outbox.queued", {}))


async def test_a_chat_waits_while_another_worker_holds_its_earlier_row(svc) -> None:
    await stop_notifier(svc)
    (member, chat), (other, other_chat) = await members_with_chats(svc, 2)
    await queue(svc, member, "Ihre Zahlung ist fehlgeschlagen")
    async with svc.sessionmaker() as session:  # a worker of another process takes it, and dies
        [held] = await outbox.claim(session, "a-dead-process", svc.clock.now(), 10)
    await queue(svc, member, "Ihre Zahlung ist eingegangen")
    await queue(svc, other, "for somebody else")
    async with notifiers(svc, 1):
        await svc.emulator.wait_for_messages(other_chat, 1)
        # the claim that took the other chat's row passed this chat over
        assert svc.emulator.sent_messages(chat) == []
        await svc.clock.advance(svc.settings.outbox_lease_seconds + 1)
        await wake(svc)
        messages = await svc.emulator.wait_for_messages(chat, 2, timeout=10)
    assert texts(messages) == ["Ihre Zahlung ist fehlgeschlagen", "Ihre Zahlung ist eingegangen"]
    assert (await outbox_rows(svc, id=held.id))[0].status == "sent"


async def test_two_notifiers_keep_every_chats_order(svc) -> None:
    await stop_notifier(svc)
    svc.emulator.set_limits(EmulatorLimits.unlimited())  # about order here, not the pace
    svc.emulator.set_latency(0.01)
    pairs = await members_with_chats(svc, 30)
    async with notifiers(svc, 2) as workers:
        for wave in range(1, 5):  # new rows arrive while earlier ones are still under way
            for member, _ in pairs:
                await queue(svc, member, str(wave))
            await asyncio.sleep(0.02)
        await wait_for_rows(svc, 4 * len(pairs), status="sent", timeout=30)
    for _, chat in pairs:
        assert texts(svc.emulator.sent_messages(chat)) == ["1", "2", "3", "4"]
    assert all(worker.stats.sent > 0 for worker in workers)  # both really took part
    # Telegram's limit is the bot's: the two share it
    assert max(worker.peers for worker in workers) == 2


async def test_with_a_high_rate_no_notifier_takes_the_whole_queue(svc) -> None:
    """A bot allowed thousands of messages a second (paid broadcasts) once let the first
    process claim every waiting row, while the second had nothing to send."""
    await stop_notifier(svc)
    svc.emulator.set_limits(EmulatorLimits.unlimited())
    svc.emulator.set_latency(0.01)
    pairs = await members_with_chats(svc, 150)
    for wave in range(3):
        for member, _ in pairs:
            await queue(svc, member, str(wave))
    fast = svc.settings.model_copy(update={"telegram_rate_per_second": 10_000})
    workers = [Notifier(svc.bot, svc.sessionmaker, svc.app[BUS], svc.clock, fast)
               for _ in range(2)]
    tasks = [asyncio.create_task(keep_running(w)) for w in workers]
    try:
        await wait_for_rows(svc, 3 * len(pairs), status="sent", timeout=30)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    shares = sorted(worker.stats.sent for worker in workers)
    assert sum(shares) == 3 * len(pairs)
    assert shares[0] >= len(pairs) // 2, shares  # both did a fair part of the work
    for _, chat in pairs:
        assert texts(svc.emulator.sent_messages(chat)) == ["0", "1", "2"]


async def test_a_crashed_worker_leaves_no_chat_out_of_order(svc) -> None:
    await stop_notifier(svc)
    svc.emulator.set_limits(EmulatorLimits.unlimited())
    svc.emulator.set_latency(0.05)
    pairs = await members_with_chats(svc, 20)
    for wave in range(1, 4):
        for member, _ in pairs:
            await queue(svc, member, str(wave))
    doomed = Notifier(svc.bot, svc.sessionmaker, svc.app[BUS], svc.clock, svc.settings)
    doomed_task = asyncio.create_task(doomed.run())
    async with notifiers(svc, 1):
        await wait_for_rows(svc, 10, status="sent", timeout=10)
        doomed_task.cancel()  # it dies holding rows; the other worker must not overtake them
        await asyncio.gather(doomed_task, return_exceptions=True)
        held = len(await outbox_rows(svc, status="sending", claimed_by=doomed.worker))
        await svc.clock.advance(svc.settings.outbox_lease_seconds + 1)
        await wake(svc)
        await wait_for_rows(svc, 3 * len(pairs), status="sent", timeout=30)
    received = 0
    for _, chat in pairs:
        got = [int(text) for text in texts(svc.emulator.sent_messages(chat))]
        assert got == sorted(got) and set(got) == {1, 2, 3}, got
        received += len(got)
    assert received - 3 * len(pairs) <= held  # at most the rows in flight came twice


async def test_a_flood_wait_holds_every_sender(svc) -> None:
    await stop_notifier(svc)
    pairs = await members_with_chats(svc, 40)
    for member, _ in pairs:  # all queued: many senders wait for a permit when the 429 comes
        await queue(svc, member, "during a flood wait")
    # Telegram allows less than we send: it answers 429, and bans a bot that sends on
    svc.emulator.set_limits(EmulatorLimits(global_per_second=10, per_chat_per_second=None))
    async with notifiers(svc, 1) as [worker]:
        await wait_for_rows(svc, len(pairs), status="sent", timeout=30)
    assert worker.stats.too_many_requests >= 1
    # only requests already on the wire when a 429 came may reach Telegram in the ban:
    # at most one burst of the global pacer (rate × 0.2 s) per 429
    burst = int(svc.settings.telegram_rate_per_second * 0.2)
    assert svc.emulator.bans.violations <= burst * worker.stats.too_many_requests
    assert svc.emulator.bans.violations <= len(pairs) // 4


async def test_a_member_who_blocked_the_bot_is_tried_once(svc) -> None:
    await stop_notifier(svc)
    [(member, chat)] = await members_with_chats(svc, 1)
    for n in range(5):
        await queue(svc, member, f"reminder {n}")
    svc.emulator.block(chat)
    async with svc.app[BUS].subscribe() as events, notifiers(svc, 1) as [worker]:
        async with asyncio.timeout(10):
            while (await events.get()).topic != "member.unreachable":
                pass
        await wait_for_rows(svc, 4, status="cancelled")
        assert worker.stats.blocked == 1  # one 403, not one per queued row
        async with svc.sessionmaker() as session:  # what is queued later is not tried either
            blocked = await session.get(Member, member)
            late = await outbox.queue_message(session, blocked, "bot", {"text": "x"},
                                              svc.clock.now())
            await session.commit()
        await wake(svc)
        await svc.clock.advance(1)
    assert late is not None
    rows = await outbox_rows(svc)
    assert [row.status for row in rows] == ["failed"] + ["cancelled"] * 5
    assert {row.error for row in rows} == {outbox.BLOCKED_REASON}
    assert worker.stats.blocked == 1


async def test_leases_are_renewed_only_for_rows_still_held(svc) -> None:
    """A run that ended (its database went away) must not keep its rows alive through the
    next run: they are queued again at once, and the next run sends them."""
    await stop_notifier(svc)
    pairs = await members_with_chats(svc, 3)
    for member, _ in pairs:
        await queue(svc, member, "held by a run that ended")
    notifier = Notifier(svc.bot, svc.sessionmaker, svc.app[BUS], svc.clock, svc.settings)
    started = svc.clock.now()
    svc.emulator.set_latency(5)  # the run ends while its sends are under way
    first_run = asyncio.create_task(notifier.run())
    await wait_for_rows(svc, len(pairs), status="sending")
    first_run.cancel()
    await asyncio.gather(first_run, return_exceptions=True)
    svc.emulator.set_latency(0)
    async with svc.sessionmaker() as session:
        stale = list(await session.scalars(select(Outbox.claimed_by).distinct()))
    second_run = asyncio.create_task(notifier.run())  # the same notifier, as after a crash
    try:
        await wait_for_rows(svc, len(pairs), status="sent", timeout=10)  # no lease ran out
    finally:
        second_run.cancel()
        await asyncio.gather(second_run, return_exceptions=True)
    assert notifier.worker not in stale  # each run has its own name
    assert svc.clock.now() == started  # no lease ran out: the clock never moved
