"""The event bus between the bot, the console and the notifier.

In one process an in-memory fan-out is enough. When several processes share one PostgreSQL,
`RedisBus` relays every event through Redis pub/sub so an agent's browser sees a member's
message whichever process received it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """`topic` names what happened (e.g. "message.created"); `data` holds ids, never secrets."""

    topic: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> Event:
        raw = json.loads(text)
        return cls(topic=raw["topic"], data=raw.get("data", {}))


class Bus:
    """In-process fan-out: each subscriber gets its own queue of every event."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._queue_size = queue_size

    async def publish(self, event: Event) -> None:
        self.deliver_locally(event)

    def deliver_locally(self, event: Event) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # a stalled consumer (a dead browser tab) must not block everybody else;
                # live views catch up from the database when they reconnect
                log.warning("event subscriber lagging; event dropped", extra={"topic": event.topic})

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def start(self) -> None:
        """Nothing to connect for the in-process bus."""

    async def close(self) -> None:
        self._subscribers.clear()


class RedisBus(Bus):
    """Every event goes through one Redis pub/sub channel, so all processes see it.

    An event is delivered locally only when it comes back from Redis, so a process sees each
    event exactly once, whichever process published it.
    """

    def __init__(self, url: str, channel: str, queue_size: int = 1000) -> None:
        super().__init__(queue_size)
        self._url = url
        self._channel = channel
        self._redis: Any = None
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import redis.asyncio as redis  # optional dependency: only needed when scaled out

        self._redis = redis.from_url(self._url)
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)  # before returning: no early event is missed
        self._listener = asyncio.create_task(self._listen(pubsub), name="redis-bus")

    async def publish(self, event: Event) -> None:
        import redis.exceptions

        if self._redis is None:
            raise RuntimeError("RedisBus.start() was not awaited")
        try:
            await self._redis.publish(self._channel, event.to_json())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            # The change is committed already; failing the request now would only invite a
            # retry that does it twice. Other processes catch up from the database; this
            # one's consumers are woken directly.
            log.warning("redis unreachable; event delivered in this process only",
                        extra={"topic": event.topic})
            self.deliver_locally(event)

    async def _listen(self, pubsub: Any) -> None:
        import redis.exceptions

        try:
            while True:
                try:
                    message = await pubsub.get_message(timeout=None)
                except redis.exceptions.ConnectionError:
                    # the bus is a wake-up call: consumers catch up from the database, so
                    # a gap costs latency; reconnect instead of ending the listener
                    log.warning("redis bus connection lost; reconnecting")
                    await asyncio.sleep(1)
                    await pubsub.subscribe(self._channel)
                    continue
                if message is not None:
                    self.deliver_locally(Event.from_json(message["data"]))
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()
        await super().close()


def channel_name(instance: str) -> str:
    """The deployment's own Redis channel: two deployments on one Redis server (even on
    different database numbers, which pub/sub ignores) never hear each other."""
    return f"payrescue:{instance}:events"


def create_bus(redis_url: str | None, instance: str = "default") -> Bus:
    """The in-process bus, or Redis when `redis_url` is configured."""
    return RedisBus(redis_url, channel_name(instance)) if redis_url else Bus()
