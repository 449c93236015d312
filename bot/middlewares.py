"""Middlewares: what every update gets, and how answers to members cope with flood limits.

`MemberContextMiddleware` is the one outer middleware every update passes. Handlers receive
`session` (an `AsyncSession`), `member` (the `Member` linked to this chat, or None),
`latest_conversation` (that member's newest `Conversation`, or None), `language` ("de" or
"en", already active for `_()`), plus the dispatcher's workflow data
`settings`, `clock`, `bus` and `sessionmaker`.

`ReplyFloodWait` is a request middleware on the Bot's session: an answer sent while handling
an update that hits Telegram's per-chat limit (429) waits `retry_after` and goes out, instead
of leaving the member without a reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramAPIError, TelegramRetryAfter
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import Chat, TelegramObject, Update, User
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import timeline
from bot.replies import render
from payrescue.config import Settings
from payrescue.i18n import choose_language, use_language
from payrescue.members import find_by_chat
from payrescue.outage import DATABASE, DATABASE_ERRORS, OutageLog, is_database_unavailable

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
# True while an update is being handled: only then does ReplyFloodWait wait and retry
_handling_update: ContextVar[bool] = ContextVar("payrescue_handling_update", default=False)
MAX_REPLY_WAIT = 10  # seconds; a longer flood wait fails the update rather than stall it
MAX_REPLY_RETRIES = 3
APOLOGIES_REMEMBERED = 10_000  # update ids; Telegram gives up redelivering within a day


class MemberContextMiddleware(BaseMiddleware):
    """Opens one session per update: committed when the handler succeeds, else rolled back.

    Errors are re-raised on purpose. When the database is unavailable, the webhook answers
    503 and the poller (bot/polling.py) leaves the update unconfirmed, so Telegram delivers
    it again once the database may be back; swallowing the error would mark the update as
    handled and lose the member's message. A database failure is also told to the member,
    once per update: Telegram's redeliveries of it while the database is down stay silent.
    An outage is logged once when it starts and once when an update succeeds again, however
    many updates fail meanwhile; any other database error (a bug) is logged each time.
    """

    def __init__(self) -> None:
        self._apologised: OrderedDict[int, None] = OrderedDict()  # update ids, newest last
        self.outage = OutageLog(
            log, down="database unavailable: member messages are apologised for and "
                      "left with Telegram, which delivers them again until it is back",
            back="database back: %d member updates failed meanwhile and are handled again",
            group=DATABASE)

    def _first_failure(self, update_id: int | None) -> bool:
        if update_id is None:
            return True
        if update_id in self._apologised:
            return False
        self._apologised[update_id] = None
        if len(self._apologised) > APOLOGIES_REMEMBERED:
            self._apologised.popitem(last=False)
        return True

    async def __call__(self, handler: Handler, event: TelegramObject,
                       data: dict[str, Any]) -> Any:
        sessionmaker: async_sessionmaker[AsyncSession] = data["sessionmaker"]
        settings: Settings = data["settings"]
        chat: Chat | None = data.get("event_chat")
        user: User | None = data.get("event_from_user")
        update_id = event.update_id if isinstance(event, Update) else None
        telegram_code = user.language_code if user else None
        # until the member is known (or when the database fails) their app's language is best
        language = choose_language(None, telegram_code, settings.default_language)
        async with sessionmaker() as session:
            try:
                member, latest = (await find_by_chat(session, chat.id) if chat
                                  else (None, None))
                if member is not None:
                    language = choose_language(member.language, telegram_code,
                                               settings.default_language)
                data.update(session=session, member=member, latest_conversation=latest,
                            language=language)
                handling = _handling_update.set(True)
                try:
                    with use_language(language), timeline.recording(
                            session, member, event, data["clock"].now()) as lines:
                        result = await handler(event, data)
                        if lines is not None:
                            await timeline.finish(lines)
                finally:
                    _handling_update.reset(handling)
                await session.commit()
                if lines is not None:
                    await timeline.announce(lines, data["bus"])
            except BaseException as exc:
                await _roll_back(session)
                if isinstance(exc, DATABASE_ERRORS):
                    self._database_failed(exc, update_id)
                    if self._first_failure(update_id):
                        await _apologise(data.get("bot"), chat, language)
                raise
        self.outage.succeeded()
        return result

    def _database_failed(self, exc: BaseException, update_id: int | None) -> None:
        if is_database_unavailable(exc):
            self.outage.failed(exc, update_id=update_id)
        else:
            log.error("update %s: database failure, rolled back: %s",
                      update_id, exc.__class__.__name__)


async def _roll_back(session: AsyncSession) -> None:
    """Roll back what the update wrote. On a connection that is already gone there is
    nothing left to undo (the server dropped the transaction with it), and the failure that
    got us here is the one to report, so the rollback's own failure is not."""
    try:
        await session.rollback()
    except DATABASE_ERRORS as exc:
        log.debug("rollback on a lost connection failed: %s", exc.__class__.__name__)


async def _apologise(bot: Bot | None, chat: Chat | None, language: str) -> None:
    """Tell the member we could not handle their message, so silence never looks like success."""
    if bot is None or chat is None:
        return
    with use_language(language):
        text = render("outage/sorry.j2")
    try:
        await bot.send_message(chat.id, text)
    except TelegramAPIError as exc:
        log.warning("chat %s: could not send the apology: %s", chat.id, exc.__class__.__name__)


class ReplyFloodWait(BaseRequestMiddleware):
    """Waits out short flood limits (429) for answers sent while handling an update.

    Calls made elsewhere (the notifier draining the outbox) see the 429 unchanged: they
    reschedule the message themselves instead of holding a worker.
    """

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                       method: TelegramMethod[TelegramType]) -> Response[TelegramType]:
        attempt = 0
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                attempt += 1
                if (not _handling_update.get() or attempt > MAX_REPLY_RETRIES
                        or exc.retry_after > MAX_REPLY_WAIT):
                    raise
                log.info("%s: flood limit, retrying in %s s", method.__api_method__,
                         exc.retry_after)
                # Telegram's limit runs on real time, so this waits real seconds
                await asyncio.sleep(exc.retry_after)
