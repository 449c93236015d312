"""Injected failures: the next N Bot API calls (optionally of one method) fail.

This is how tests check that the bot survives Telegram's 5xx hiccups, flood waits and
dropped connections without a real outage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import ApiError

_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Fault:
    method: str | None  # lower-case Bot API method name; None = any method
    remaining: int
    status: int = 500
    retry_after: int | None = None
    description: str | None = None
    drop_connection: bool = False

    def matches(self, method: str) -> bool:
        return self.remaining > 0 and (self.method is None or self.method == method.lower())

    def to_api_error(self) -> ApiError:
        if self.status == 429:
            retry_after = self.retry_after if self.retry_after is not None else 1
            description = self.description or f"Too Many Requests: retry after {retry_after}"
            return ApiError(429, description, {"retry_after": retry_after})
        description = self.description or _DEFAULT_DESCRIPTIONS.get(self.status, "Error")
        parameters = {"retry_after": self.retry_after} if self.retry_after else None
        return ApiError(self.status, description, parameters)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(
        self,
        method: str | None = None,
        count: int = 1,
        status: int = 500,
        retry_after: int | None = None,
        description: str | None = None,
        drop_connection: bool = False,
    ) -> Fault:
        if count < 1:
            raise ValueError("count must be at least 1")
        if not drop_connection and not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        fault = Fault(
            method=method.lower() if method else None,
            remaining=count,
            status=status,
            retry_after=retry_after,
            description=description,
            drop_connection=drop_connection,
        )
        self._faults.append(fault)
        return fault

    def take(self, method: str) -> Fault | None:
        """The first armed fault for `method`, with one use consumed, or None."""
        for fault in self._faults:
            if fault.matches(method):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        return [fault.to_json() for fault in self._faults]
