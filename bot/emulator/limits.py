"""Telegram-like flood limits as token buckets.

Telegram allows a bot roughly 30 messages a second overall and about one a second per
private chat (with a short burst), and about 20 a minute per group. Exceeding any answers
429 with ``retry_after``; emulating that lets the bot's retry and queueing logic be
exercised locally. The clock is injectable so tests can move time instead of sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

Clock = Callable[[], float]


@dataclass(frozen=True)
class EmulatorLimits:
    """Flood limits; any rate set to ``None`` (or 0) switches that limit off."""

    global_per_second: float | None = 30
    global_burst: float | None = None  # defaults to one second's worth of global_per_second
    per_chat_per_second: float | None = 1
    per_chat_burst: float = 3
    per_group_per_minute: float | None = 20  # a group's own limit, instead of the chat one
    per_group_burst: float = 20

    @classmethod
    def unlimited(cls) -> EmulatorLimits:
        return cls(global_per_second=None, per_chat_per_second=None, per_group_per_minute=None)

    def to_json(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(
        cls, data: dict[str, object], base: EmulatorLimits | None = None
    ) -> EmulatorLimits:
        """Build limits from a JSON object; keys left out keep the values of `base`."""
        values = (base or cls()).to_json()
        for key, value in data.items():
            if key not in values:
                raise ValueError(f"unknown limit {key!r}")
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and not is_number:
                raise ValueError(f"limit {key!r} must be a number or null")
            if value is not None and value < 0:
                raise ValueError(f"limit {key!r} must not be negative")
            values[key] = value
        return cls(**values)  # type: ignore[arg-type]


class TokenBucket:
    """Classic token bucket; `capacity` tokens at most, refilled at `rate` per second."""

    def __init__(self, rate: float, capacity: float, clock: Clock) -> None:
        self.rate = rate
        self.capacity = max(capacity, 1.0)
        self._clock = clock
        self._tokens = self.capacity
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(now - self._updated, 0.0)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now

    def wait_time(self) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        self._refill()
        if self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.rate

    def take(self) -> None:
        self._refill()
        self._tokens -= 1


class RateLimiter:
    """Per-bot global bucket plus one bucket per (bot, chat)."""

    def __init__(self, limits: EmulatorLimits, clock: Clock) -> None:
        self.limits = limits
        self._clock = clock
        self._global: dict[int, TokenBucket] = {}
        self._per_chat: dict[tuple[int, int], TokenBucket] = {}
        self._per_group: dict[tuple[int, int], TokenBucket] = {}

    def reconfigure(self, limits: EmulatorLimits) -> None:
        self.limits = limits
        self._global.clear()
        self._per_chat.clear()
        self._per_group.clear()

    def check(self, bot_id: int, chat_id: int | None, *, group: bool = False) -> int | None:
        """Take a token for this call, or return ``retry_after`` seconds without taking any.

        `chat_id` None means the call only counts against the bot's global limit (e.g.
        sendChatAction), as Telegram does not throttle those per chat as tightly. With
        `group`, the chat is a group and its per-minute bucket applies.
        """
        buckets = []
        limits = self.limits
        if limits.global_per_second:
            burst = limits.global_burst or limits.global_per_second
            bucket = self._global.get(bot_id)
            if bucket is None:
                bucket = TokenBucket(limits.global_per_second, burst, self._clock)
                self._global[bot_id] = bucket
            buckets.append(bucket)
        if chat_id is not None and group and limits.per_group_per_minute:
            key = (bot_id, chat_id)
            bucket = self._per_group.get(key)
            if bucket is None:
                bucket = TokenBucket(
                    limits.per_group_per_minute / 60, limits.per_group_burst, self._clock
                )
                self._per_group[key] = bucket
            buckets.append(bucket)
        elif chat_id is not None and limits.per_chat_per_second:
            key = (bot_id, chat_id)
            bucket = self._per_chat.get(key)
            if bucket is None:
                bucket = TokenBucket(limits.per_chat_per_second, limits.per_chat_burst, self._clock)
                self._per_chat[key] = bucket
            buckets.append(bucket)
        # Check every bucket before taking from any, so a refused call costs nothing.
        wait = max((b.wait_time() for b in buckets), default=0.0)
        if wait > 0:
            return max(1, math.ceil(wait))
        for bucket in buckets:
            bucket.take()
        return None
