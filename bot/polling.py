"""Long-polling Telegram so that an update is confirmed only once it was handled.

aiogram's `start_polling` moves the offset past every update it fetched, whatever its
handler did: a member's message that failed because the database was away would be gone.
Here an update is confirmed (the next getUpdates' `offset` passes it) when it was handled,
or when it failed for a reason a later try would not cure (a bug: logged with its traceback,
like aiogram does, and skipped). When the database is unavailable the offset stays at the
first update that failed, the poller waits a growing pause on the app's clock and asks
again, and Telegram delivers the same updates once more — as it does when a webhook
answers 503.

Order and speed: a chat's updates (a forum topic's, in a group with topics) are handled one
after another, in order; different chats of one batch concurrently (up to CONCURRENT_CHATS
at a time). When a chat's update fails, its later updates wait for the redelivery, while
other chats go on; the ids of updates handled past the confirmed offset are remembered, so a
redelivery never handles (stores, relays) one twice.

Telegram itself failing (network, 5xx, 429, 409 Conflict when another process polls the
same bot) is retried with a growing pause too, and logged once until getUpdates works again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence

from aiogram import Bot, Dispatcher
from aiogram.dispatcher.middlewares.user_context import UserContextMiddleware
from aiogram.exceptions import AiogramError, TelegramConflictError, TelegramRetryAfter
from aiogram.methods import GetUpdates, TelegramMethod
from aiogram.types import Update

from bot.dispatcher import readable
from payrescue.clock import Clock
from payrescue.outage import OutageLog, is_database_unavailable

log = logging.getLogger(__name__)
FIRST_PAUSE = 1.0  # seconds before asking again after a failure; doubles up to MAX_PAUSE
MAX_PAUSE = 8.0  # short enough that members' messages follow soon after the database is back
BATCH = 100  # updates per getUpdates, Telegram's maximum
# chats handled at the same time: each holds a database connection, and the pool has 15
# (payrescue.db.POOL_SIZE) for the whole process; more would only queue for one (a burst could
# even run into the pool's timeout, which reads as an outage) or, on SQLite, for the lock
CONCURRENT_CHATS = 10


class Poller:
    """Fetches updates with getUpdates and feeds them to the dispatcher until `stop()`."""

    def __init__(self, bot: Bot, dispatcher: Dispatcher, clock: Clock, *, timeout: int) -> None:
        self.bot, self.dispatcher, self.clock, self.timeout = bot, dispatcher, clock, timeout
        self.offset: int | None = None  # the first update not yet handled
        self._confirmed: int | None = None  # the offset Telegram was last told
        self._handled: set[int] = set()  # ids at or past `offset` already handled
        self._stopping = asyncio.Event()
        self._pause = FIRST_PAUSE
        self._conflict_told = False
        self._telegram = OutageLog(
            log, down="Telegram getUpdates failed; asking again with a growing pause",
            back="Telegram getUpdates works again after %d failed tries")

    def stop(self) -> None:
        """End after the updates in hand are handled (and confirmed to Telegram)."""
        self._stopping.set()

    async def run(self) -> None:
        allowed = self.dispatcher.resolve_used_update_types()
        while not self._stopping.is_set():
            updates = await self._fetch(allowed)
            if updates is None:
                continue
            if await self._handle_batch(updates):
                self._pause = FIRST_PAUSE
            else:
                await self._wait(self._grow_pause())
        await self._confirm()

    # --- talking to Telegram -----------------------------------------------------------------

    async def _fetch(self, allowed: list[str]) -> list[Update] | None:
        """The next updates from `offset` on; None when stopping or Telegram failed."""
        method = GetUpdates(offset=self.offset, limit=BATCH, timeout=self.timeout,
                            allowed_updates=allowed)
        # the request must outlast Telegram's long poll, or every quiet poll would time out
        request_timeout = int(self.bot.session.timeout + self.timeout)
        asking = asyncio.ensure_future(self.bot(method, request_timeout=request_timeout))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({asking, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not asking.done():  # stopping: the updates not yet fetched stay with Telegram
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)
            return None
        try:
            updates = asking.result()
        except TelegramConflictError:
            # another getUpdates of this bot ended ours: with two pollers that happens every
            # few seconds for as long as both run, so it is said once, not once per round
            if not self._conflict_told:
                log.warning("another process polls this bot (409 Conflict); each update "
                            "reaches one of them only: run one poller per bot, or webhook mode")
                self._conflict_told = True
            await self._wait(self._grow_pause())
            return None
        except AiogramError as exc:
            self._telegram.failed(exc)
            wait = (exc.retry_after if isinstance(exc, TelegramRetryAfter)
                    else self._grow_pause())
            await self._wait(wait)
            return None
        self._telegram.succeeded()
        self._confirmed = self.offset
        return updates

    async def _confirm(self) -> None:
        """Tell Telegram which updates were handled, so a restart does not get them again."""
        if self.offset is None or self.offset == self._confirmed:
            return
        try:
            await self.bot(GetUpdates(offset=self.offset, limit=1, timeout=0))
        except AiogramError as exc:
            log.warning("could not confirm the handled updates to Telegram (%s); it will "
                        "deliver them again after a restart", exc.__class__.__name__)

    async def _wait(self, seconds: float) -> None:
        """A pause on the app's clock that `stop()` cuts short."""
        await self.clock.sleep_unless(seconds, self._stopping)

    def _grow_pause(self) -> float:
        pause, self._pause = self._pause, min(self._pause * 2, MAX_PAUSE)
        return pause

    # --- handling ----------------------------------------------------------------------------

    async def _handle_batch(self, updates: Sequence[Update]) -> bool:
        """Handle a batch, chats side by side; False when some update must come again."""
        if not updates:
            return True
        chats: dict[Hashable, list[Update]] = {}
        for update in updates:
            chats.setdefault(_chat_of(update), []).append(update)
        limit = asyncio.Semaphore(CONCURRENT_CHATS)

        async def one_chat(chat_updates: list[Update]) -> int | None:
            async with limit:
                return await self._handle_chat(chat_updates)

        again = [i for i in await asyncio.gather(*map(one_chat, chats.values()))
                 if i is not None]
        self.offset = min(again) if again else updates[-1].update_id + 1
        self._handled = {i for i in self._handled if i >= self.offset}
        return not again

    async def _handle_chat(self, updates: list[Update]) -> int | None:
        """One chat's updates in order; the id of the first that must come again, if any."""
        for update in updates:
            if update.update_id in self._handled:
                continue  # a redelivery of one handled while an earlier chat's update failed
            if not await self._handle(update):
                return update.update_id
            self._handled.add(update.update_id)
        return None

    async def _handle(self, update: Update) -> bool:
        """True when the update is done with; False when the database was unavailable (the
        middleware told the member and logged the outage)."""
        if not readable(update):
            return True
        try:
            response = await self.dispatcher.feed_update(self.bot, update)
            if isinstance(response, TelegramMethod):  # a handler answering like a webhook
                await self.dispatcher.silent_call_request(self.bot, response)
        except Exception as exc:  # noqa: BLE001 - one update's bug must not stop the bot
            if is_database_unavailable(exc):
                return False
            log.exception("update %s failed and is skipped: %s", update.update_id,
                          exc.__class__.__name__)
        return True


def _chat_of(update: Update) -> Hashable:
    """Whose updates must keep their order: the chat's (a forum topic's, in the team
    group: topics are independent conversations), else the user's, else its own."""
    context = UserContextMiddleware.resolve_event_context(update)
    if context.chat is not None and context.chat.is_forum and context.thread_id is not None:
        return ("topic", context.chat.id, context.thread_id)
    if context.chat is not None:
        return ("chat", context.chat.id)
    if context.user is not None:
        return ("user", context.user.id)
    return ("update", update.update_id)
