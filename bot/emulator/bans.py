"""Flood bans, as Telegram keeps them: after a 429 with `retry_after`, the bot must not send.

A bot that sends during its ban is refused again, and the ban grows by the original wait
(Telegram lengthens the ban of a bot that keeps sending). Each such call is counted, so a
test or a drill can read, from the emulator's own record, how often a bot ignored a 429.
Only sending and editing methods are banned; getUpdates, getMe and the like are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ApiError, too_many_requests
from .limits import Clock


def is_banned_method(method: str) -> bool:
    name = method.lower()
    return name.startswith(("send", "edit", "copy", "forward")) and name != "sendchataction"


@dataclass
class _Ban:
    until: float
    step: float


class FloodBans:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._bans: dict[int, _Ban] = {}
        self.violations = 0  # sends that arrived while their bot was banned

    def refuse(self, bot_id: int, method: str) -> ApiError | None:
        """The answer to a call made during a ban (which grows), or None when none is on."""
        ban = self._bans.get(bot_id)
        if ban is None or not is_banned_method(method):
            return None
        now = self._clock()
        if now >= ban.until:
            del self._bans[bot_id]
            return None
        self.violations += 1
        ban.until += ban.step
        return too_many_requests(max(1, math.ceil(ban.until - now)))

    def note(self, bot_id: int, method: str, error: ApiError) -> None:
        """Start (or extend) the bot's ban when it was answered 429."""
        retry_after = (error.parameters or {}).get("retry_after")
        if error.status != 429 or not retry_after or not is_banned_method(method):
            return
        until = self._clock() + retry_after
        ban = self._bans.get(bot_id)
        if ban is None or ban.until < until:
            self._bans[bot_id] = _Ban(until, float(retry_after))

    def clear(self) -> None:
        self._bans.clear()
        self.violations = 0
