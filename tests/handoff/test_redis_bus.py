"""The Redis bus against the real Redis at 127.0.0.1:6379: events cross processes."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from payrescue.events import Bus, Event, RedisBus, channel_name, create_bus

REDIS_URL = os.environ.get("PAYRESCUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def channel() -> str:
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except OSError as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"Redis unreachable in CI at {REDIS_URL}: {exc}")
        pytest.skip("Redis not reachable")
    finally:
        await client.aclose()
    return f"payrescue:test:{uuid.uuid4().hex}"


async def test_an_event_published_by_one_process_reaches_every_process(channel):
    one, two = RedisBus(REDIS_URL, channel), RedisBus(REDIS_URL, channel)
    await one.start()
    await two.start()
    try:
        async with one.subscribe() as first, two.subscribe() as second:
            event = Event("message.created", {"conversation_id": 7, "message_id": 9})
            await one.publish(event)
            assert await asyncio.wait_for(first.get(), 5) == event
            assert await asyncio.wait_for(second.get(), 5) == event
            assert first.empty() and second.empty()  # each process sees it exactly once
    finally:
        await one.close()
        await two.close()


async def test_a_publisher_stopped_mid_publish_ends_at_once_and_the_event_still_goes(channel):
    """A stop cancels the notifier's tasks while they publish. redis-py, cancelled in the
    middle of a command, went on waiting in a third of the tries, and the stop with it."""
    bus, listener = RedisBus(REDIS_URL, channel), RedisBus(REDIS_URL, channel)
    await bus.start()
    await listener.start()
    published = 0

    async def keep_publishing() -> None:
        nonlocal published
        while True:
            await bus.publish(Event("outbox.updated", {"outbox_id": published}))
            published += 1

    try:
        async with listener.subscribe() as heard:
            for attempt in range(100):
                publisher = asyncio.create_task(keep_publishing())
                await asyncio.sleep(0.0005 * (attempt % 7))  # somewhere inside a command
                publisher.cancel()
                done, _ = await asyncio.wait({publisher}, timeout=1)
                assert done, f"try {attempt}: the cancelled publisher is still running"
                assert publisher.cancelled()
            await bus.close()  # waits for the publishes under way
            got = set()
            while len(got) < published:
                got.add((await asyncio.wait_for(heard.get(), 5)).data["outbox_id"])
    finally:
        await bus.close()
        await listener.close()


async def test_the_setting_chooses_the_bus():
    assert type(create_bus(None)) is Bus
    assert isinstance(create_bus(REDIS_URL, "shop"), RedisBus)


async def test_publishing_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="start"):
        await RedisBus(REDIS_URL, "payrescue:test:unstarted").publish(Event("x"))


async def test_a_console_behind_redis_hears_another_process(
        aiohttp_client, settings, clock, engine, world, channel):
    from payrescue.app import init_app
    from payrescue.keys import BUS
    from tests.handoff.conftest import log_in
    from tests.handoff.test_live import next_event

    deployment = settings.model_copy(update={"redis_url": REDIS_URL})
    app = init_app(deployment, clock=clock, engine=engine, with_bot=False)
    assert isinstance(app[BUS], RedisBus)
    await world.agent()
    client = await aiohttp_client(app)
    await log_in(client)
    other_process = create_bus(REDIS_URL, deployment.instance_name)
    await other_process.start()
    try:
        stream = await client.get("/console/stream/queue",
                                  headers={"Accept": "text/event-stream"})
        await other_process.publish(Event("conversation.waiting", {"conversation_id": 4242}))
        event = await next_event(stream)
        while event.data.get("conversation_id") != 4242:  # another test run shares Redis
            event = await next_event(stream)
        assert event.data == {"conversation_id": 4242, "new": True}
        stream.close()
    finally:
        await other_process.close()


async def test_a_lost_redis_connection_still_wakes_this_process(channel, monkeypatch, caplog):
    import redis.exceptions

    bus = RedisBus(REDIS_URL, channel)
    await bus.start()

    async def unreachable(*_args: object) -> None:
        raise redis.exceptions.ConnectionError("Connection refused")

    try:
        monkeypatch.setattr(bus._redis, "publish", unreachable)
        async with bus.subscribe() as events:
            await bus.publish(Event("outbox.queued", {"outbox_id": 1}))
            assert (await asyncio.wait_for(events.get(), 5)).data == {"outbox_id": 1}
        assert "redis unreachable" in caplog.text
    finally:
        await bus.close()


async def test_two_deployments_on_one_redis_never_meet(channel, settings, tmp_path):
    """The channel carries the deployment's name: by default derived from its database, so
    the processes of one deployment meet and a second deployment's events stay apart (also
    when it uses another Redis database number, which pub/sub ignores)."""
    first = settings.model_copy(update={"redis_url": REDIS_URL})
    same = first.model_copy()
    other = first.model_copy(update={"database_url": f"sqlite+aiosqlite:///{tmp_path}/b.db",
                                     "redis_url": REDIS_URL.rsplit("/", 1)[0] + "/3"})
    assert first.instance_name == same.instance_name != other.instance_name
    assert "test-secret" not in first.instance_name and len(first.instance_name) == 12
    named = first.model_copy(update={"instance": "shop-eu"})
    assert named.instance_name == "shop-eu"
    buses = [create_bus(s.redis_url, s.instance_name) for s in (first, same, other)]
    for bus in buses:
        await bus.start()
    try:
        async with buses[1].subscribe() as colleague, buses[2].subscribe() as stranger:
            await buses[0].publish(Event("agent.typing", {"chat_id": 42}))
            assert (await asyncio.wait_for(colleague.get(), 5)).data == {"chat_id": 42}
            await buses[2].publish(Event("own", {}))  # the stranger hears only its own
            assert (await asyncio.wait_for(stranger.get(), 5)).topic == "own"
    finally:
        for bus in buses:
            await bus.close()
    assert channel_name("shop-eu") == "payrescue:shop-eu:events"
