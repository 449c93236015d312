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
CLOSE_SECONDS = 5.0  # a closing Redis bus waits this long for its publishes and listener


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
        self._sending: set[asyncio.Future[None]] = set()  # publishes under way
        self._closing = False

    async def start(self) -> None:
        import redis.asyncio as redis  # optional dependency: only needed when scaled out

        self._redis = redis.from_url(self._url)
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)  # before returning: no early event is missed
        self._listener = asyncio.create_task(self._listen(pubsub), name="redis-bus")

    async def publish(self, event: Event) -> None:
        """Publish; a caller cancelled meanwhile (a stop) gets its CancelledError at once,
        while the event still goes out.

        redis-py cannot be cancelled in the middle of a command: it drops the connection
        and may go on waiting, or retry, so the CancelledError never arrives (a third of
        tries here), and a stopping process waited forever for the task that published. So
        the command runs in a task of its own, which the caller's cancel does not reach."""
        if self._redis is None:
            raise RuntimeError("RedisBus.start() was not awaited")
        sending = asyncio.ensure_future(self._send(event))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)
        await asyncio.shield(sending)

    async def _send(self, event: Event) -> None:
        import redis.exceptions

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
                    if self._closing:  # close() shut the connection under it
                        return
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
        self._closing = True
        if self._sending:  # what was published just before the stop still goes out
            await asyncio.wait(self._sending, timeout=CLOSE_SECONDS)
        if self._listener is not None:
            # the listener waits in redis-py, which may not end on a cancel (see publish)
            self._listener.cancel()
            await asyncio.wait({self._listener}, timeout=CLOSE_SECONDS)
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
