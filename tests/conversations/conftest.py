"""The running service with quick retries, so fault tests take milliseconds, not seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payrescue.clock import FakeClock
from tests.harness import RunningService, running_service


@pytest.fixture
async def svc(engine: AsyncEngine, clock: FakeClock, tmp_path: Path
              ) -> AsyncIterator[RunningService]:
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               outbox_retry_seconds=0.01,
                               referral_url="https://example.org/invite") as service:
        yield service
