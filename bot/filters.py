"""Filters resolved in the event loop.

aiogram runs a filter that is a plain function — and a magic filter (`F.chat.type == …`)
is one — in a worker thread (`asyncio.to_thread`), once per update and filter: the thread
hop costs far more than the check (three of them were a good part of relaying a member's
message). `InLoop(F…)` wraps one as an async `Filter`, resolved in place like aiogram's own
`Command` or `CallbackData` filters; what it resolves to (a dict from `.as_()` too) means
what it meant bare.
"""

from __future__ import annotations

from typing import Any

from aiogram import F
from aiogram.enums import ChatType
from aiogram.filters import Filter
from aiogram.types import TelegramObject
from aiogram.utils.magic_filter import MagicFilter


class InLoop(Filter):
    def __init__(self, magic: MagicFilter) -> None:
        self.magic = magic

    async def __call__(self, event: TelegramObject) -> Any:
        return self.magic.resolve(event)


# members talk to us one to one: a message in a group is not ours to answer or relay
PRIVATE_CHAT = InLoop(F.chat.type == ChatType.PRIVATE)
