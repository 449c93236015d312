"""The per-update middleware: a session that commits or rolls back, the member, the language."""

from __future__ import annotations

from typing import Any

import pytest
from aiogram import Dispatcher, F, Router
from aiogram.types import Message, Update
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.middlewares import MemberContextMiddleware
from payrescue.clock import Clock
from payrescue.db.models import Member
from payrescue.i18n import _, current_language
from payrescue.keys import BUS
from payrescue.members import add_member
from tests.harness import RunningService


def _text_update(user: dict[str, Any], text: str, update_id: int = 700_001) -> Update:
    return Update.model_validate({
        "update_id": update_id,
        "message": {
            "message_id": 1, "date": 1_767_600_000, "text": text, "from": user,
            "chat": {"id": user["id"], "type": "private", "first_name": user["first_name"]},
        },
    })


def _dispatcher_with(service: RunningService, router: Router) -> Dispatcher:
    """The middleware as build_dispatcher wires it, with only the test's router behind it
    (the feature routers would answer the test's texts first)."""
    dispatcher = Dispatcher(
        sessionmaker=service.sessionmaker, settings=service.settings, clock=service.clock,
        bus=service.app[BUS],
    )
    dispatcher.update.outer_middleware(MemberContextMiddleware())
    dispatcher.include_router(router)
    return dispatcher


async def _members(service: RunningService) -> int:
    async with service.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(Member)) or 0


async def test_handler_gets_member_and_language(service: RunningService) -> None:
    member = await service.add_member(name="Anna Schmidt", language="de")
    user = service.create_user("Anna", language_code="en")
    await service.link(member, user)
    seen: dict[str, Any] = {}
    probe = Router()

    @probe.message(F.text == "probe")
    async def record(message: Message, member: Member | None, language: str,
                     session: AsyncSession) -> None:
        seen.update(member_id=member and member.id, language=language,
                    active=current_language(), session=session.is_active)

    await _dispatcher_with(service, probe).feed_update(service.bot, _text_update(user, "probe"))

    assert seen == {"member_id": member.id, "language": "de", "active": "de", "session": True}


async def test_a_failing_handler_rolls_back_its_writes(service: RunningService) -> None:
    user = service.create_user(language_code="en")
    failing = Router()

    @failing.message(F.text == "boom")
    async def write_then_fail(message: Message, session: AsyncSession, clock: Clock) -> None:
        await add_member(session, email="ghost@example.org", name="Ghost", now=clock.now())
        raise RuntimeError("handler failed after writing")

    dispatcher = _dispatcher_with(service, failing)
    with pytest.raises(RuntimeError, match="handler failed"):
        await dispatcher.feed_update(service.bot, _text_update(user, "boom"))

    assert await _members(service) == 0
    assert service.emulator.sent_messages(user["id"]) == []  # no apology: not a DB fault


async def test_a_database_failure_rolls_back_is_reraised_and_the_member_hears_it(
    service: RunningService,
) -> None:
    user = service.create_user(language_code="de")
    broken = Router()

    @broken.message(F.text == "db")
    async def write_then_break(message: Message, session: AsyncSession, clock: Clock) -> None:
        await add_member(session, email="ghost@example.org", name="Ghost", now=clock.now())
        await session.execute(text("SELECT * FROM no_such_table"))
        await message.answer(_("Hello!"))  # never reached

    dispatcher = _dispatcher_with(service, broken)
    update = _text_update(user, "db")
    for _delivery in range(3):  # Telegram redelivers an update the webhook did not accept
        with pytest.raises(SQLAlchemyError):
            await dispatcher.feed_update(service.bot, update)

    assert await _members(service) == 0
    apology = await service.emulator.wait_for_messages(user["id"], 1)
    assert apology[-1]["plain_text"].startswith("Entschuldigung – bei uns ist gerade etwas")
    # sent before each delivery failed: so one message means one apology, not one per delivery
    assert len(service.emulator.sent_messages(user["id"])) == 1
