"""The aiogram Dispatcher: our middleware and every feature's router, in order."""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Dispatcher, Router
from aiogram.types import Update
from aiogram.types.update import UpdateTypeLookupError

from bot.filters import PRIVATE_CHAT
from bot.middlewares import MemberContextMiddleware
from bot.routers import faq, handoff, language, notifications, relay, rights, start
from bot.team import router as team

log = logging.getLogger(__name__)


def build_dispatcher(**workflow_data: Any) -> Dispatcher:
    """`workflow_data` (sessionmaker, settings, clock, bus) reaches every handler by name."""
    dispatcher = Dispatcher(**workflow_data)
    # outer: runs for every update, before any filter, so filters may use `member` too
    dispatcher.update.outer_middleware(MemberContextMiddleware())
    # members talk to us one to one; in a group the bot would answer (and relay) strangers
    members = Router(name="members")
    members.message.filter(PRIVATE_CHAT)
    # Order matters: the first router whose filters match handles the update. Commands
    # (/start, /language) work in any conversation state: the relay, first because it takes
    # most messages (a member writing to an agent), lets every command through
    # (`relay.ForTheHumans`), and the routers after it take only commands and buttons; the
    # FAQ, which takes any other text, must be last. Each feature module builds a fresh
    # Router, because a Router belongs to one Dispatcher only and a process (or a test run)
    # may build several.
    members.include_routers(
        relay.build_router(),  # while a human owns the chat it takes every member message
        rights.build_router(),  # before start: /start after /stop turns reminders back on
        start.build_router(),
        language.build_router(),
        notifications.build_router(),
        handoff.build_router(),
        faq.build_router(),  # the catch-all
    )
    # the agents' team group (and an agent's /start agent-… link) before any member router
    dispatcher.include_routers(team.build_router(), members)
    return dispatcher


def readable(update: Update) -> bool:
    """False for an update of a kind this aiogram does not know (Telegram added one): it is
    skipped as handled, with its id only. aiogram itself would warn with the whole update
    (member names and texts) in the log, and a webhook would answer 500 so Telegram sends
    it again and again."""
    try:
        update.event_type  # noqa: B018 - raises for an unknown kind
    except UpdateTypeLookupError:
        log.info("update %s is of a kind this version does not read: skipped",
                 update.update_id)
        return False
    return True
