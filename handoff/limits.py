"""A rate limit in front of the log-in: so many tries per client address and per e-mail
address in a sliding window, kept in this process's memory.

The lock-out (five wrong passwords lock an account) protects each account; this limit slows
down guessing across many addresses from one client, and guessing at one address from many
clients before it even reaches the lock. It answers the same for known and unknown
addresses, so it tells nothing about which exist. With several processes each keeps its own
count, which multiplies the allowance by the number of processes, not more.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from aiohttp import web

PER_CLIENT = 20  # tries per client address …
PER_ADDRESS = 10  # … and per e-mail address …
WINDOW = timedelta(minutes=5)  # … within this long
MAX_KEYS = 50_000  # memory bound: the oldest keys are forgotten first


class LoginLimiter:
    def __init__(self) -> None:
        self._tries: dict[str, deque[datetime]] = {}

    def allow(self, client: str, email: str, now: datetime) -> bool:
        """Count a try; False when the client or the address has used up its allowance."""
        allowed = (self._room(f"client:{client}", PER_CLIENT, now)
                   and self._room(f"email:{email}", PER_ADDRESS, now))
        if allowed:
            for key in (f"client:{client}", f"email:{email}"):
                self._tries.setdefault(key, deque()).append(now)
            self._forget_oldest()
        return allowed

    def _room(self, key: str, limit: int, now: datetime) -> bool:
        tries = self._tries.get(key)
        if tries is None:
            return True
        while tries and now - tries[0] >= WINDOW:
            tries.popleft()
        if not tries:
            del self._tries[key]
            return True
        return len(tries) < limit

    def _forget_oldest(self) -> None:
        while len(self._tries) > MAX_KEYS:
            del self._tries[next(iter(self._tries))]


LOGIN_LIMITER = web.AppKey("console_login_limiter", LoginLimiter)
