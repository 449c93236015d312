"""The two kinds of failure the emulator reports.

`ApiError` is what a Bot API method answers with: it carries Telegram's HTTP status and
description verbatim, because aiogram maps exactly those onto its exception classes.
`EmulatorError` is a misuse of the control API or the Python helpers (unknown user, a
button that is not there); it is never shown to the bot.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A Bot API error answer: ``{"ok": false, "error_code": ..., "description": ...}``."""

    def __init__(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429,
        f"Too Many Requests: retry after {retry_after}",
        {"retry_after": retry_after},
    )


class EmulatorError(Exception):
    """A control-side mistake; `status` is the HTTP status the control API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class NotFoundError(EmulatorError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=404)
