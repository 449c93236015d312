"""Reporting a failing outside service (mostly the database) without burying the log.

While the database is away, every webhook, tick and retry fails. A line (often with a
traceback) for each would hide the one line that matters, so an `OutageLog` says it once
when the failures start, with the first traceback, and once when the work succeeds again,
with how many tries failed meanwhile.
"""

from __future__ import annotations

import logging


class OutageLog:
    def __init__(self, log: logging.Logger, *, down: str, back: str) -> None:
        """`down` is logged at the first failure; `back` (with %d for the number of
        failures) at the first success after them."""
        self.log, self.down, self.back = log, down, back
        self.failures = 0

    def failed(self, exc: BaseException, **extra: object) -> None:
        if self.failures == 0:
            self.log.warning(self.down, exc_info=exc, extra={"error": type(exc).__name__,
                                                             **extra})
        self.failures += 1

    def succeeded(self) -> None:
        if self.failures:
            self.log.warning(self.back, self.failures, extra={"failures": self.failures})
            self.failures = 0
