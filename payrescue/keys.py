"""Typed keys for what the aiohttp application shares with its handlers and tasks.

They live apart from `payrescue.app` so that `bot` and `handoff` can read them without
importing the module that assembles both.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.events import Bus

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONMAKER = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
CLOCK = web.AppKey("clock", Clock)
BUS = web.AppKey("bus", Bus)
