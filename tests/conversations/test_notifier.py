"""Outbox delivery through the emulator: limits, faults, priorities, crash and restart."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from bot.notifier import NOTIFIER, Notifier
from payrescue import outbox
from payrescue.db.models import Member, TelegramLink
from payrescue.events import Event
from payrescue.keys import BUS
from payrescue.outage import keep_running
from tests.conversations.helpers import linked_member, outbox_rows, stop_notifier, wait_for_rows
from tests.harness import RunningService


async def queue(svc: RunningService, member_id: int, text: str, *,
                priority: int = outbox.PRIORITY_REMINDER, kind: str = "reminder") -> int:
    async with svc.sessionmaker() as session:
        member = await session.get(Member, member_id)
        assert member is not None
        row = await outbox.queue_message(session, member, kind, {"text": text},
                                         svc.clock.now(), priority=priority)
        assert row is not None
        await session.commit()
    await svc.app[BUS].publish(Event("outbox.queued", {"outbox_id": row.id}))
    return row.id


async def members_with_chats(svc: RunningService, count: int) -> list[tuple[int, int]]:
    """`count` members linked to emulator users, written directly (no /start round trip)."""
    pairs = []
    async with svc.sessionmaker() as session:
        for n in range(count):
            user = svc.emulator.create_user(f"M{n}", language_code="en")
            member = Member(email=f"m{n}@example.org", name=f"M{n}", language="en",
                            created_at=svc.clock.now())
            session.add(member)
            await session.flush()
            session.add(TelegramLink(member_id=member.id, chat_id=user["id"],
                                     telegram_user_id=user["id"], linked_at=svc.clock.now()))
            pairs.append((member.id, user["id"]))
        await session.commit()
    return pairs


async def test_flood_wait_is_obeyed_and_nothing_is_lost(svc) -> None:
    [(member, chat)] = await members_with_chats(svc, 1)
    svc.emulator.inject_faults("sendMessage", count=2, status=429, retry_after=1)
    await queue(svc, member, "hello after a flood wait")
    await svc.emulator.wait_for_messages(chat, 1, timeout=10)
    [row] = await wait_for_rows(svc, 1, status="sent")
    assert row.telegram_message_id is not None
    assert svc.app[NOTIFIER].stats.too_many_requests == 2


async def test_network_faults_and_5xx_are_retried(svc) -> None:
    [(member, chat)] = await members_with_chats(svc, 1)
    svc.emulator.inject_faults("sendMessage", count=1, drop_connection=True)
    svc.emulator.inject_faults("sendMessage", count=1, status=502)
    await queue(svc, member, "still arrives")
    messages = await svc.emulator.wait_for_messages(chat, 1, timeout=10)
    assert messages[0]["plain_text"] == "still arrives"
    assert svc.app[NOTIFIER].stats.retried >= 2


async def test_blocked_member_is_marked_unreachable_and_announced(svc) -> None:
    [(member, chat)] = await members_with_chats(svc, 1)
    svc.emulator.block(chat)
    async with svc.app[BUS].subscribe() as events:
        await queue(svc, member, "you blocked me")
        async with asyncio.timeout(10):
            while (event := await events.get()).topic != "member.unreachable":
                pass
    assert event.data == {"member_id": member}
    [row] = await outbox_rows(svc)
    assert row.status == "failed"
    async with svc.sessionmaker() as session:
        assert (await session.get(Member, member)).unreachable


async def test_agent_replies_overtake_queued_reminders(svc) -> None:
    pairs = await members_with_chats(svc, 3)
    async with svc.sessionmaker() as session:  # a bulk of reminders, then one agent reply
        for member_id, _ in pairs:
            member = await session.get(Member, member_id)
            for n in range(3):
                await outbox.queue_message(session, member, "reminder", {"text": f"r{n}"},
                                           svc.clock.now(), priority=outbox.PRIORITY_REMINDER)
        reply = await outbox.queue_message(session, member, "agent_reply",
                                           {"text": "an agent writes"}, svc.clock.now(),
                                           priority=outbox.PRIORITY_AGENT)
        await session.commit()
    await svc.app[BUS].publish(Event("outbox.queued", {"outbox_id": reply.id}))
    rows = await wait_for_rows(svc, 10, timeout=15, status="sent")
    order = [r.id for r in sorted(rows, key=lambda r: (r.sent_at, r.telegram_message_id))]
    assert order.index(reply.id) < 3  # ahead of its chat's reminders, not behind the batch
    chat = pairs[-1][1]
    assert svc.emulator.sent_messages(chat)[0]["plain_text"] == "an agent writes"


async def test_crash_mid_batch_loses_nothing(svc) -> None:
    pairs = await members_with_chats(svc, 12)
    svc.emulator.set_latency(0.2)
    for member, _ in pairs:
        await queue(svc, member, "renewal reminder")
    await wait_for_rows(svc, 2, status="sent", timeout=10)
    # kill: the notifier task dies at once, whatever it was doing
    await stop_notifier(svc)
    in_flight = len(await outbox_rows(svc, status="sending"))
    assert in_flight > 0
    svc.emulator.set_latency(0)
    await svc.clock.advance(svc.settings.outbox_lease_seconds + 1)
    restarted = Notifier(svc.bot, svc.sessionmaker, svc.app[BUS], svc.clock, svc.settings)
    runner = asyncio.create_task(keep_running(restarted))
    try:
        await wait_for_rows(svc, len(pairs), status="sent", timeout=15)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    received = [len(svc.emulator.sent_messages(chat)) for _, chat in pairs]
    assert all(count >= 1 for count in received)  # nothing lost
    assert sum(received) - len(pairs) <= in_flight  # at most the in-flight ones twice


async def test_two_workers_never_claim_the_same_row(svc) -> None:
    pairs = await members_with_chats(svc, 40)
    await stop_notifier(svc)
    async with svc.sessionmaker() as session:
        for n, (member_id, _) in enumerate(pairs):
            member = await session.get(Member, member_id)
            await outbox.queue_message(session, member, "bot", {"text": str(n)},
                                       svc.clock.now())
        await session.commit()

    async def worker(name: str) -> list[int]:
        claimed = []
        async with svc.sessionmaker() as session:
            while rows := await outbox.claim(session, name, svc.clock.now(), 3):
                claimed += [row.id for row in rows]
        return claimed

    first, second = await asyncio.gather(worker("a"), worker("b"))
    assert sorted(first + second) == sorted(set(first + second))
    assert len(first + second) == 40


async def test_stuck_rows_come_back_only_after_their_lease(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    await stop_notifier(svc)
    row_id = await queue(svc, member.id, "x")
    async with svc.sessionmaker() as session:
        [row] = await outbox.claim(session, "dead", svc.clock.now(), 10)
        assert row.id == row_id
        lease = timedelta(seconds=svc.settings.outbox_lease_seconds)
        assert await outbox.release_expired_leases(session, svc.clock.now(), lease) == 0
        later = svc.clock.now() + lease
        assert await outbox.release_expired_leases(session, later, lease) == 1
        assert (await session.scalar(select(outbox.Outbox.status))) == "queued"


async def test_text_without_parse_mode_arrives_as_written(svc) -> None:
    [(member, chat)] = await members_with_chats(svc, 1)
    await queue(svc, member, "<b>not bold</b> & <script>", kind="agent_reply",
                priority=outbox.PRIORITY_AGENT)
    [message] = await svc.emulator.wait_for_messages(chat, 1)
    assert message["plain_text"] == "<b>not bold</b> & <script>"
    assert not message["entities"]


async def test_a_live_worker_keeps_its_claims(svc) -> None:
    [(member, _)] = await members_with_chats(svc, 1)
    await stop_notifier(svc)
    await queue(svc, member, "held up by a long flood wait")
    lease = timedelta(seconds=svc.settings.outbox_lease_seconds)
    async with svc.sessionmaker() as session:
        [row] = await outbox.claim(session, "alive", svc.clock.now(), 10)
        await svc.clock.advance(lease.total_seconds())
        await outbox.renew_leases(session, "alive", [row.id], svc.clock.now())
        assert await outbox.release_expired_leases(session, svc.clock.now(), lease) == 0
        assert (await session.get(outbox.Outbox, row.id, populate_existing=True)).status \
            == "sending"


async def test_a_member_who_writes_again_is_reachable_again(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    svc.emulator.block(chat)
    await queue(svc, member.id, "you blocked me")
    await wait_for_rows(svc, 1, status="failed")
    svc.emulator.unblock(chat)
    before = len(svc.emulator.sent_messages(chat))
    await svc.emulator.send_text(chat, "how do I update my card?")
    await svc.emulator.wait_for_messages(chat, before + 1)
    async with svc.sessionmaker() as session:
        assert not (await session.get(Member, member.id)).unreachable
