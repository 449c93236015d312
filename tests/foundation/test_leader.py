"""One process at a time runs the singleton duties (polling, scheduler, watcher), on both
databases: two `Leadership`s for one duty stand for two processes sharing the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from payrescue.db.models import Lease
from payrescue.leader import Leadership

LEASE = 0.6  # seconds; renewals every 0.2 s


def duty_counter(runs: list[str], who: str):  # noqa: ANN201
    async def duty() -> None:
        runs.append(who)
        await asyncio.Event().wait()  # runs until cancelled, as the real duties do
    return duty


@contextlib.asynccontextmanager
async def contender(sessionmaker, clock, runs: list[str], who: str
                    ) -> AsyncIterator[tuple[Leadership, asyncio.Task[None]]]:
    leadership = Leadership("test-duty", duty_counter(runs, who), sessionmaker=sessionmaker,
                            clock=clock, lease_seconds=LEASE)
    task = asyncio.create_task(leadership.run())
    try:
        yield leadership, task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_one_of_two_processes_runs_the_duty_and_the_other_takes_over(
        sessionmaker, clock, caplog) -> None:
    caplog.set_level(logging.INFO, logger="payrescue.leader")
    runs: list[str] = []
    async with contender(sessionmaker, clock, runs, "a") as (a, a_task):
        await asyncio.wait_for(a.leading.wait(), 5)
        async with contender(sessionmaker, clock, runs, "b") as (b, _):
            await asyncio.sleep(LEASE * 2)  # several renewal rounds of both
            assert runs == ["a"] and not b.leading.is_set()
            a_task.cancel()  # a clean stop gives the lease up: b takes over at its next try
            await asyncio.gather(a_task, return_exceptions=True)
            await asyncio.wait_for(b.leading.wait(), LEASE)
            assert runs == ["a", "b"]
    waiting = [r for r in caplog.records if "stands by" in r.getMessage()]
    assert len(waiting) == 1  # said once, not at every renewal round


async def test_a_dead_holders_lease_runs_out(sessionmaker, clock) -> None:
    async with sessionmaker() as session:  # a process that was killed: its row stays
        session.add(Lease(name="test-duty", holder="killed:1",
                          expires_at=clock.now() + timedelta(seconds=LEASE)))
        await session.commit()
    runs: list[str] = []
    async with contender(sessionmaker, clock, runs, "survivor") as (survivor, _):
        await asyncio.sleep(LEASE)
        assert runs == []  # the lease has not run out yet (the clock stands still)
        await clock.advance(LEASE + 0.01)
        await asyncio.wait_for(survivor.leading.wait(), LEASE)
    assert runs == ["survivor"]
