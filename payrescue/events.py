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
