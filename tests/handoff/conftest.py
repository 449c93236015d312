"""Fixtures for the console: a running application, agents, members and conversations."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import pytest
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from payrescue import agents
from payrescue.agents import add_agent
from payrescue.app import init_app
from payrescue.clock import FakeClock
from payrescue.config import Settings
from payrescue.db.models import Conversation, Handoff, Member, RecoveryCase, TelegramLink
from payrescue.events import Bus

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


@dataclass
class World:
    """Builds the data a test needs and remembers the ids."""

    sessionmaker: async_sessionmaker[AsyncSession]
    clock: FakeClock

    async def agent(self, email: str = "anna@example.org", *, name: str = "Anna",
                    role: str = "agent", language: str = "en", available: bool = False,
                    max_open: int = 5) -> int:
        async with self.sessionmaker() as db, db.begin():
            agent = await add_agent(db, email=email, name=name, role=role, password=PASSWORD,
                                    now=self.clock.now(), language=language)
            agent.available, agent.max_open = available, max_open
            return agent.id

    async def conversation(self, *, name: str = "Mia Muster", language: str = "de",
                           status: str = "waiting", reasons: tuple[str, ...] = ("human",),
                           priority: int = 0, chat_id: int = 5001, amount: int = 2900,
                           waiting_since: datetime | None = None,
                           email: str | None = None) -> int:
        now = self.clock.now()
        async with self.sessionmaker() as db, db.begin():
            member = Member(name=name, email=email or f"{chat_id}@example.org",
                            language=language, created_at=now)
            db.add(member)
            await db.flush()
            db.add(TelegramLink(member_id=member.id, chat_id=chat_id,
                                telegram_user_id=chat_id, linked_at=now))
            case = RecoveryCase(member_id=member.id, provider="stripe",
                                invoice_ref=f"in_{chat_id}", amount_minor=amount, currency="EUR",
                                decline_category="insufficient_funds",
                                decline_code="insufficient_funds", opened_at=now,
                                last_failure_at=now, updated_at=now)
            db.add(case)
            await db.flush()
            conversation = Conversation(
                member_id=member.id, case_id=case.id, status=status, priority=priority,
                handoff_reasons=list(reasons), waiting_since=waiting_since or now,
                created_at=now, updated_at=now,
            )
            db.add(conversation)
            await db.flush()
            db.add(Handoff(conversation_id=conversation.id, reasons=list(reasons),
                           priority=priority, requested_at=now))
            return conversation.id


@pytest.fixture(autouse=True)
def quick_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2 parameters: the suite tests the flow, not the hash's strength."""
    monkeypatch.setattr(agents, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024,
                                                          parallelism=1))


@pytest.fixture
def bus() -> Bus:
    return Bus()


@pytest.fixture
def world(sessionmaker: async_sessionmaker[AsyncSession], clock: FakeClock) -> World:
    return World(sessionmaker, clock)


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(
    aiohttp_client, settings: Settings, clock: FakeClock, bus: Bus, engine: AsyncEngine
) -> AsyncIterator[MakeClient]:
    """A fresh browser (its own cookie jar) against one console application."""
    app = init_app(settings, clock=clock, bus=bus, engine=engine, with_bot=False)
    server = None

    async def make() -> TestClient:
        nonlocal server
        if server is None:
            client = await aiohttp_client(app)
            server = client.server
            return client
        return await aiohttp_client(server)

    yield make


async def csrf_of(client: TestClient, path: str = "/console/login") -> str:
    response = await client.get(path)
    match = CSRF.search(await response.text())
    assert match, f"no CSRF token on {path}"
    return match.group(1)


async def log_in(client: TestClient, email: str = "anna@example.org",
                 password: str = PASSWORD) -> str:
    """Signs in and returns the CSRF token of the signed-in session."""
    token = await csrf_of(client)
    response = await client.post("/console/login", data={
        "email": email, "password": password, "csrf_token": token}, allow_redirects=False)
    assert response.status == 303, await response.text()
    return await csrf_of(client, "/console/queue")
