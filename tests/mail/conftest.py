from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payrescue.clock import FakeClock
from tests.harness import BOT_USERNAME, RunningService, running_service
from tests.mail.smtp import Mailbox, smtp_settings


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.start()
    yield box
    box.stop()


@pytest.fixture
async def mail_service(engine: AsyncEngine, clock: FakeClock, tmp_path,  # noqa: ANN001
                       mailbox: Mailbox) -> AsyncIterator[RunningService]:
    """The whole service with the e-mail channel pointed at `mailbox`."""
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               bot_username=BOT_USERNAME, **smtp_settings(mailbox)) as svc:
        yield svc
