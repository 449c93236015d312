"""The bot talks to members one to one: group chats get no answers and nothing is stored."""

from __future__ import annotations

from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import Update
from sqlalchemy import func, select

from bot.keys import BOT_RUNNER
from payrescue.db.models import Conversation, Message
from tests.harness import RunningService


async def test_group_messages_are_ignored_by_every_router(service: RunningService) -> None:
    user = service.create_user(language_code="de")
    for number, text in enumerate(["ich will mit einem Menschen sprechen", "/help", "asdfgh"]):
        update = Update.model_validate({
            "update_id": 900_000 + number,
            "message": {
                "message_id": number + 1, "date": 1_767_600_000, "from": user,
                "chat": {"id": -100_777, "type": "group", "title": "Stammtisch"},
                "text": text,
            },
        })
        result = await service.app[BOT_RUNNER].dispatcher.feed_update(service.bot, update)
        assert result is UNHANDLED
    async with service.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Conversation)) == 0
        assert await session.scalar(select(func.count()).select_from(Message)) == 0
