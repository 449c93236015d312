"""Typed keys for what the bot shares with the rest of the application.

The notifier reads `BOT` to send messages with the same client (and connection pool) as the
dispatcher; tests read `BOT_RUNNER` to wait until Telegram accepted the bot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Bot
from aiohttp import web

if TYPE_CHECKING:
    from bot.service import BotRunner

BOT = web.AppKey("bot", Bot)
BOT_RUNNER: web.AppKey[BotRunner] = web.AppKey("bot_runner")
# Long-polling wait in seconds; tests shorten it so shutting down never waits on a poll.
POLLING_TIMEOUT = web.AppKey("bot_polling_timeout", int)
