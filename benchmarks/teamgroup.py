"""Relay latency through the team group with BENCH_TEAM_CONVERSATIONS (default 200)
conversations a person holds, each with its forum topic.

1. member → topic: members write at BENCH_TEAM_RATE messages a second (default 20, spread over
   the conversations); the latency of each is from handing it to Telegram (the emulator) to
   the bot's post carrying it in the member's topic.
2. topic → member: the agent writes in the topics at the same rate; the latency is from the
   group message to the answer in the member's private chat (through the outbox, as a
   console reply goes).

p50 and p99 of BENCH_TEAM_EACH (default 3) messages per conversation, on SQLite and (when
reachable) PostgreSQL. Telegram's limit of about 20 posts a minute per group is lifted here
(in the emulator and in `team_group_per_minute`): the figure is what the relay itself adds,
not the group's pace, which only a bigger Telegram allowance changes.

    python -m benchmarks teamgroup        # or: make bench BENCH=teamgroup
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from benchmarks._postgres import with_postgres
from benchmarks.notifier import _members_with_a_human
from bot.emulator import EmulatorLimits, TelegramEmulator
from payrescue import assignment
from payrescue.clock import Clock
from payrescue.db import create_engine
from payrescue.db.migrate import upgrade
from payrescue.db.models import Agent, TeamGroup, TeamTopic
from payrescue.events import Event
from payrescue.keys import BUS

CONVERSATIONS = int(os.environ.get("BENCH_TEAM_CONVERSATIONS", "200"))
EACH = int(os.environ.get("BENCH_TEAM_EACH", "3"))
RATE = float(os.environ.get("BENCH_TEAM_RATE", "20"))


def _percentiles(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[max(int(len(ordered) * 0.99) - 1, 0)]
    return f"p50 {statistics.median(ordered):7.1f} ms   p99 {p99:7.1f} ms"


async def _prepare(svc, emulator: TelegramEmulator) -> tuple[int, int, dict[int, int]]:  # noqa: ANN001
    """A bound team group, a linked agent, and CONVERSATIONS claimed conversations with
    their topics; returns (group id, agent's Telegram id, chat → thread)."""
    owner = emulator.create_user("Lena", language_code="en")["id"]
    group = emulator.create_group("Team", owner)["id"]
    emulator.set_bot_rights(group, admin=True, can_manage_topics=True)
    chats = await _members_with_a_human(svc, CONVERSATIONS)
    now = svc.clock.now()
    async with svc.sessionmaker() as session:
        session.add(TeamGroup(chat_id=group, linked_at=now, linked_by_telegram_user_id=owner))
        agent = Agent(email="lena@example.org", name="Lena", password_hash="-",
                      telegram_user_id=owner, max_open=CONVERSATIONS, created_at=now)
        session.add(agent)
        await session.flush()
        for conversation_id in chats.values():
            await assignment.claim(session, conversation_id, agent.id, now)
        await session.commit()
    for conversation_id in chats.values():
        await svc.app[BUS].publish(Event("conversation.waiting",
                                         {"conversation_id": conversation_id}))
    threads: dict[int, int] = {}
    async with asyncio.timeout(600):
        while len(threads) < len(chats):
            await asyncio.sleep(0.5)
            async with svc.sessionmaker() as session:
                rows = (await session.execute(select(
                    TeamTopic.conversation_id, TeamTopic.thread_id).where(
                    TeamTopic.first_post_id.is_not(None)))).all()
            by_conversation = dict(rows)
            threads = {chat: by_conversation[cid] for chat, cid in chats.items()
                       if cid in by_conversation}
    return group, owner, threads


async def _paced(sends: list, rate: float) -> dict[str, float]:  # noqa: ANN001
    """Run the sends at `rate` a second; returns text → time handed over."""
    started_at: dict[str, float] = {}
    begin = time.perf_counter()
    for number, (text, send) in enumerate(sends):
        delay = begin + number / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        started_at[text] = time.perf_counter()
        await send()
    return started_at


async def _arrivals(emulator: TelegramEmulator, expected: set[str], seen_texts) -> dict[str, float]:  # noqa: ANN001
    """text → when it first showed where `seen_texts()` looks (event-driven)."""
    arrived: dict[str, float] = {}

    def check() -> bool:
        now = time.perf_counter()
        for text in seen_texts():
            if text in expected and text not in arrived:
                arrived[text] = now
        return len(arrived) == len(expected)

    async with asyncio.timeout(600):
        while not check():
            await emulator.state.notifier.wait_for(check, 5)
    return arrived


def _group_lines(emulator: TelegramEmulator, group: int):  # noqa: ANN202
    def texts() -> list[str]:
        return [line.split(": ", 1)[-1]
                for message in emulator.state.groups[group].messages
                if message.from_bot and message.plain_text
                for line in message.plain_text.split("\n")]
    return texts


async def member_to_topic(emulator: TelegramEmulator, group: int, chats: list[int]) -> list[float]:
    sends = [(f"m{number}-{chat}", lambda chat=chat, number=number:
              emulator.send_text(chat, f"m{number}-{chat}"))
             for number in range(EACH) for chat in chats]
    expected = {text for text, _ in sends}
    arrivals = asyncio.create_task(_arrivals(emulator, expected, _group_lines(emulator, group)))
    started = await _paced(sends, RATE)
    arrived = await arrivals
    return [(arrived[text] - started[text]) * 1000 for text in expected]


async def topic_to_member(emulator: TelegramEmulator, group: int, agent: int,
                          threads: dict[int, int]) -> list[float]:
    sends = [(f"a{number}-{chat}", lambda chat=chat, number=number:
              emulator.group_send_text(group, agent, f"a{number}-{chat}",
                                       thread_id=threads[chat]))
             for number in range(EACH) for chat in threads]
    expected = {text for text, _ in sends}

    def member_texts() -> list[str]:
        return [m.plain_text for conv in emulator.state.conversations.values()
                for m in conv.messages if m.from_bot and m.plain_text]

    arrivals = asyncio.create_task(_arrivals(emulator, expected, member_texts))
    started = await _paced(sends, RATE)
    arrived = await arrivals
    return [(arrived[text] - started[text]) * 1000 for text in expected]


async def measure(name: str, url: str, directory: Path) -> None:
    from tests.harness import running_service

    engine = create_engine(url)
    await upgrade(engine)
    emulator = TelegramEmulator(EmulatorLimits.unlimited())
    try:
        async with running_service(engine=engine, clock=Clock(), emulator=emulator,
                                   data_dir=directory, polling_timeout=10,
                                   team_group_per_minute=60_000, team_group_burst=1000,
                                   telegram_rate_per_second=1000) as svc:
            group, agent, threads = await _prepare(svc, emulator)
            inbound = await member_to_topic(emulator, group, list(threads))
            outbound = await topic_to_member(emulator, group, agent, threads)
    finally:
        await engine.dispose()
    what = f"{len(threads)} conversations × {EACH} messages at {RATE:g}/s"
    print(f"{name:<10} member → topic   {_percentiles(inbound)}   ({what})", flush=True)
    print(f"{name:<10} topic → member   {_percentiles(outbound)}   ({what})", flush=True)


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.sqlite3'}"
        await measure("sqlite", url, Path(directory))
        await with_postgres(lambda pg_url: measure("postgresql", pg_url, Path(directory)))
