"""The console's share of the service's security headers (`payrescue.headers`, set on every
response by its middleware), and the test for a console path."""

from __future__ import annotations

from payrescue.headers import CONSOLE_HEADERS, is_console

HEADERS = CONSOLE_HEADERS  # for responses that send their headers early (media, streams)

__all__ = ["HEADERS", "is_console"]
