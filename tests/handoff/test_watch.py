"""The console's background duties: round-robin auto-assignment and overdue alarms."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from handoff.watch import run_once
from payrescue.config import Settings
from payrescue.db.models import Conversation, Outbox


async def test_auto_assignment_and_one_overdue_alarm_per_wait(
        settings, clock, bus, sessionmaker, world):
    settings = Settings(**(settings.model_dump() | {
        "auto_assign": True, "admin_chat_id": -100123, "first_response_minutes": 10}))
    available = await world.agent(available=True, max_open=1)
    waiting = [await world.conversation(chat_id=i) for i in (1, 2)]
    async with bus.subscribe() as events:
        await run_once(sessionmaker, settings, clock.now(), bus)
        event = await asyncio.wait_for(events.get(), 5)
    assert event.data == {"conversation_id": waiting[0], "status": "assigned",
                          "assigned_agent_id": available}
    async with sessionmaker() as db:
        second = await db.get(Conversation, waiting[1])
    assert (second.status, second.assigned_agent_id) == ("waiting", None)  # limit is one

    await clock.advance(11 * 60)
    await run_once(sessionmaker, settings, clock.now(), bus)
    await run_once(sessionmaker, settings, clock.now(), bus)  # no second alarm for one wait
    async with sessionmaker() as db:
        alarms = (await db.scalars(select(Outbox).where(Outbox.kind == "alert"))).all()
    assert len(alarms) == 1
    assert alarms[0].chat_id == -100123
    assert alarms[0].payload["text"] == (
        f"Conversation #{waiting[1]} has been waiting for 11 minutes.")


async def test_the_watcher_runs_with_the_application(
        engine, aiohttp_client, settings, clock, bus, world):
    # the engine first: it must outlive the application, whose stop gives up the lease
    from payrescue.app import init_app

    available = await world.agent(available=True)
    conversation_id = await world.conversation()
    app = init_app(Settings(**(settings.model_dump() | {"auto_assign": True})),
                   clock=clock, bus=bus, engine=engine, with_bot=False)
    async with bus.subscribe() as events:
        await aiohttp_client(app)  # starting the application starts the watcher
        event = await asyncio.wait_for(events.get(), 5)
    assert event.data == {"conversation_id": conversation_id, "status": "assigned",
                          "assigned_agent_id": available}
