"""The aiogram Dispatcher: our middleware and every feature's router, in order."""

from __future__ import annotations

from typing import Any

from aiogram import Dispatcher

from bot.filters import PRIVATE_CHAT
from bot.middlewares import MemberContextMiddleware
from bot.routers import faq, handoff, language, notifications, relay, rights, start


def build_dispatcher(**workflow_data: Any) -> Dispatcher:
    """`workflow_data` (sessionmaker, settings, clock, bus) reaches every handler by name."""
    dispatcher = Dispatcher(**workflow_data)
    # outer: runs for every update, before any filter, so filters may use `member` too
    dispatcher.update.outer_middleware(MemberContextMiddleware())
    # members talk to us one to one; in a group the bot would answer (and relay) strangers
    dispatcher.message.filter(PRIVATE_CHAT)
    # Order matters: the first router whose filters match handles the update. Commands
    # (/start, /language) come first so they work in any conversation state; routers that
    # take free text (FAQ, handoff, relay to an agent) come after them, and a catch-all
    # must be last. Each feature module builds a fresh Router, because a Router belongs to
    # one Dispatcher only and a process (or a test run) may build several.
    dispatcher.include_routers(
        rights.build_router(),  # before start: /start after /stop turns reminders back on
        start.build_router(),
        language.build_router(),
        notifications.build_router(),
        handoff.build_router(),
        relay.build_router(),  # while a human owns the chat it takes every member message
        faq.build_router(),  # the catch-all
    )
    return dispatcher
