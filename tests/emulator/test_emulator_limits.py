"""Token buckets and limits configuration, driven by a hand-moved clock."""

import pytest

from bot.emulator import EmulatorLimits
from bot.emulator.limits import RateLimiter


def test_per_chat_burst_then_one_per_second(clock):
    limiter = RateLimiter(EmulatorLimits(per_chat_per_second=1, per_chat_burst=3), clock)
    assert [limiter.check(1, 42) for _ in range(3)] == [None, None, None]
    assert limiter.check(1, 42) == 1
    # A refused call takes no token: after one second exactly one more call passes.
    clock.advance(1)
    assert limiter.check(1, 42) is None
    assert limiter.check(1, 42) == 1
    # Other chats have their own bucket.
    assert limiter.check(1, 43) is None


def test_global_limit_spans_chats_and_reports_whole_seconds(clock):
    limiter = RateLimiter(EmulatorLimits(global_per_second=2, per_chat_per_second=None), clock)
    assert limiter.check(1, 1) is None
    assert limiter.check(1, 2) is None
    assert limiter.check(1, 3) == 1  # ceil(0.5 s)
    assert limiter.check(2, 3) is None  # another bot is not affected
    clock.advance(0.5)
    assert limiter.check(1, 3) is None


def test_slow_rate_reports_longer_retry_after(clock):
    limiter = RateLimiter(EmulatorLimits(per_chat_per_second=0.2, per_chat_burst=1), clock)
    assert limiter.check(1, 1) is None
    assert limiter.check(1, 1) == 5


def test_unlimited_and_raised_limits(clock):
    limiter = RateLimiter(EmulatorLimits.unlimited(), clock)
    assert all(limiter.check(1, 1) is None for _ in range(10_000))
    limiter.reconfigure(
        EmulatorLimits(global_per_second=1000, per_chat_per_second=1000, per_chat_burst=1000)
    )
    assert all(limiter.check(1, 1) is None for _ in range(1000))
    assert limiter.check(1, 1) == 1


def test_limits_from_json_keeps_unmentioned_values():
    base = EmulatorLimits(global_per_second=30, per_chat_burst=5)
    limits = EmulatorLimits.from_json({"global_per_second": 1000}, base=base)
    assert limits.global_per_second == 1000
    assert limits.per_chat_burst == 5
    assert EmulatorLimits.from_json(limits.to_json()) == limits
    with pytest.raises(ValueError, match="unknown limit"):
        EmulatorLimits.from_json({"per_minute": 1})
    with pytest.raises(ValueError, match="number or null"):
        EmulatorLimits.from_json({"global_per_second": "fast"})
    with pytest.raises(ValueError, match="negative"):
        EmulatorLimits.from_json({"per_chat_burst": -1})
