"""Runs the Telegram bot inside the service's aiohttp application.

Polling mode (one process, the default) long-polls getUpdates in a background task
(`bot/polling.py`: an update is confirmed to Telegram only once it was handled). Webhook
mode (several processes behind a load balancer) lets Telegram POST updates to
`/telegram/webhook` on the same web server, checked against the configured secret token.

Telegram being unreachable at start-up never stops the web server: the bot keeps retrying
with back-off in the background, and a refused token is reported once and leaves the bot off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    AiogramError,
    ClientDecodeError,
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import TelegramMethod
from aiogram.types import Update, User
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.commands import describe_bot
from bot.dispatcher import build_dispatcher, readable
from bot.keys import BOT, BOT_RUNNER, POLLING_TIMEOUT
from bot.middlewares import ReplyFloodWait
from bot.polling import CONCURRENT_CHATS, Poller
from bot.timeline import TimelineRequestMiddleware
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.edge import same_secret
from payrescue.keys import BUS, CLOCK, SESSIONMAKER, SETTINGS
from payrescue.leader import Leadership
from payrescue.outage import is_database_unavailable
from payrescue.workers import worker_count

log = logging.getLogger(__name__)
MAX_WEBHOOK_CONNECTIONS = 100  # what setWebhook accepts

WEBHOOK_PATH = "/telegram/webhook"
DEFAULT_POLLING_TIMEOUT = 25  # seconds Telegram holds a getUpdates call open
FIRST_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 60.0
STOP_GRACE = 5.0  # seconds a stop waits for the updates in hand before cutting them off
_WEBHOOK_HANDLER = web.AppKey("bot_webhook_handler", SimpleRequestHandler)
# worth another try later; any other refusal at start-up (a wrong token, a wrong API base
# that answers 404, a webhook URL Telegram rejects) will not fix itself by waiting
_TRANSIENT = (TelegramNetworkError, TelegramServerError, TelegramRetryAfter, ClientDecodeError)


class TelegramUnavailable(Exception):
    """Telegram could not be asked something; the message is one line for the operator."""


class BotSession(AiohttpSession):
    """aiogram's session, minus its fixed 250 ms pause on close when the API is plain HTTP.

    The pause lets TLS connections shut down cleanly; a local Bot API server over http://
    (the emulator in the demo and in tests) has none, and every stop would wait for nothing.
    """

    async def close(self) -> None:
        if self.api.base.startswith("https://"):
            await super().close()
        elif self._session is not None and not self._session.closed:
            await self._session.close()


def create_bot(settings: Settings) -> Bot:
    """A Bot speaking HTML parse mode to Telegram, or to the server `telegram_api_base` names."""
    if settings.bot_token is None:
        raise TelegramUnavailable("PAYRESCUE_BOT_TOKEN is not set")
    base = str(settings.telegram_api_base).rstrip("/")
    api = PRODUCTION if base == "https://api.telegram.org" else TelegramAPIServer.from_base(base)
    session = BotSession(api=api)
    session.middleware(ReplyFloodWait())
    session.middleware(TimelineRequestMiddleware())  # inner: records what got through
    return Bot(
        settings.bot_token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )


async def fetch_bot_username(settings: Settings) -> str:
    """Ask Telegram (getMe) for the bot's @username, for deep links."""
    bot = create_bot(settings)
    try:
        me = await bot.get_me()
    except TelegramUnauthorizedError:
        raise TelegramUnavailable("Telegram refused the bot token (PAYRESCUE_BOT_TOKEN)") from None
    except AiogramError as exc:
        raise TelegramUnavailable(f"cannot reach Telegram: {exc.__class__.__name__}") from exc
    finally:
        await bot.session.close()
    if not me.username:
        raise TelegramUnavailable("Telegram reports no username for this bot")
    return me.username


def setup_bot(app: web.Application) -> None:
    """Attach the bot to the application; a no-op (with a warning) without a bot token."""
    settings = app[SETTINGS]
    if settings.bot_token is None:
        log.warning("PAYRESCUE_BOT_TOKEN is not set: the Telegram bot is off")
        return
    if settings.bot_mode == "webhook":
        # routes cannot be added once the application runs, so this one delegates to the
        # handler the start-up below creates
        app.router.add_post(WEBHOOK_PATH, _webhook_endpoint)
    app.cleanup_ctx.append(_bot_context)


async def _bot_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    bot = create_bot(settings)
    dispatcher = build_dispatcher(
        sessionmaker=app[SESSIONMAKER], settings=settings, clock=app[CLOCK], bus=app[BUS],
    )
    runner = BotRunner(bot, dispatcher, settings, app[CLOCK], app[SESSIONMAKER],
                       polling_timeout=app.get(POLLING_TIMEOUT, DEFAULT_POLLING_TIMEOUT))
    app[BOT] = bot
    app[BOT_RUNNER] = runner
    if settings.bot_mode == "webhook":
        assert settings.webhook_secret is not None  # Settings refuses webhook mode without it
        app[_WEBHOOK_HANDLER] = WebhookHandler(
            dispatcher, bot, secret_token=settings.webhook_secret.get_secret_value(),
            # answer only after handling: a failure then reaches Telegram as a 500 and
            # Telegram delivers the update again, instead of it being lost in the background
            handle_in_background=False,
        )
    runner.start()
    try:
        yield
    finally:
        await runner.stop()


async def _webhook_endpoint(request: web.Request) -> web.Response:
    handler = request.app.get(_WEBHOOK_HANDLER)
    if handler is None:  # the bot's start-up has not run (or failed): nothing can handle it
        raise web.HTTPServiceUnavailable(text="the bot is not running")
    return await handler.handle(request)


class WebhookHandler(SimpleRequestHandler):
    """aiogram's handler (secret compared with `secrets.compare_digest`, 401 when wrong) that
    answers a body which is no Telegram update with 400 instead of a server error, and an
    update that failed because the database is unavailable with 503: Telegram delivers it
    again later, and the middleware has logged the outage once instead of a traceback each."""

    def verify_secret(self, telegram_secret_token: str, bot: Bot) -> bool:
        # as bytes: aiogram's compare of `str`s raises TypeError (a 500) on a non-ASCII token
        return same_secret(telegram_secret_token, self.secret_token or "")

    async def _handle_request(self, bot: Bot, request: web.Request) -> web.Response:
        try:
            update = Update.model_validate(
                await request.json(loads=bot.session.json_loads), context={"bot": bot}
            )
        except ValueError:  # invalid JSON, bad encoding, or not the shape of an Update
            return web.json_response(
                {"ok": False, "description": "Bad Request: the body is not a Telegram update"},
                status=400,
            )
        if not readable(update):
            return web.json_response({})  # delivered: sending it again changes nothing
        try:
            result = await self.dispatcher.feed_update(bot, update, **self.data)
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            return web.json_response(
                {"ok": False, "description": "Service Unavailable: database unavailable"},
                status=503,
            )
        answer = result if isinstance(result, TelegramMethod) else None
        return web.Response(body=self._build_response_writer(bot=bot, result=answer))


def webhook_connections() -> int:
    """How many updates Telegram may POST at once. It sends chats side by side, 40 at a time
    unless told; here as many as the processes handle at once (each as many as a poller
    does), so that no update waits for one of the pool's database connections: 40 queued
    for 15 cost a process a third more CPU per update."""
    return min(CONCURRENT_CHATS * worker_count(), MAX_WEBHOOK_CONNECTIONS)


class BotRunner:
    """Connects the bot to Telegram in the background, then polls (in polling mode).

    `ready` is set once Telegram accepted the token and the webhook or polling is set up;
    `failure` holds the one-line reason when the bot gave up.
    """

    def __init__(self, bot: Bot, dispatcher: Dispatcher, settings: Settings, clock: Clock,
                 sessionmaker: async_sessionmaker[AsyncSession], *, polling_timeout: int) -> None:
        self.bot = bot
        self.dispatcher = dispatcher
        self.settings = settings
        self.clock = clock
        self.sessionmaker = sessionmaker
        self.polling_timeout = polling_timeout
        self.ready = asyncio.Event()
        self.me: User | None = None
        self.failure: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._poller: Poller | None = None
        self._polled = asyncio.Event()  # the poller of this process has finished
        self.polling: Leadership | None = None  # in polling mode: this process's claim

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telegram-bot")

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 - a start-up bound
        """Return once ready; raise RuntimeError if the bot gave up, TimeoutError if slow."""
        assert self._task is not None, "start() first"
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait({ready, self._task}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self.ready.is_set():
            return
        if self._task.done():
            raise RuntimeError(f"the Telegram bot did not start: {self.failure}")
        raise TimeoutError(f"the Telegram bot was not ready within {timeout} s")

    async def stop(self) -> None:
        try:
            if self._poller is not None and self._task is not None and not self._task.done():
                self._poller.stop()  # finish the updates in hand and confirm them to Telegram
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._polled.wait(), STOP_GRACE)
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        finally:
            await self.bot.session.close()

    async def _run(self) -> None:
        try:
            self.me = await self._connect()
            if self.me is None:
                return
            log.info("Telegram bot @%s (id %s) ready in %s mode",
                     self.me.username, self.me.id, self.settings.bot_mode)
            self.ready.set()
            if self.settings.bot_mode == "polling":
                await self._poll()
        except Exception as exc:
            # the poller retries Telegram's and the database's faults itself; reaching here
            # is a bug, reported with its traceback while the web server keeps serving
            log.exception("the Telegram bot stopped unexpectedly; it stays off")
            self.failure = f"stopped: {exc.__class__.__name__}"

    async def _poll(self) -> None:
        """The one place where this process starts polling Telegram for updates: only while
        it holds the polling lease (Telegram answers a second poller of a bot with 409, and
        with several processes each would take some updates out of the others' chats)."""
        self.polling = Leadership("telegram-polling", self._poll_while_leading,
                                  sessionmaker=self.sessionmaker, clock=self.clock,
                                  lease_seconds=self.settings.leader_lease_seconds)
        await self.polling.run()

    async def _poll_while_leading(self) -> None:
        self._polled.clear()
        self._poller = Poller(self.bot, self.dispatcher, self.clock,
                              timeout=self.polling_timeout)
        try:
            await self._poller.run()
        finally:
            self._poller = None
            self._polled.set()

    async def _connect(self) -> User | None:
        """getMe, then deleteWebhook (polling) or setWebhook; retried while Telegram is away."""
        delay = FIRST_RETRY_DELAY
        attempt = 0
        while True:
            attempt += 1
            try:
                me = await self.bot.me()
                await self._prepare_updates()
                await describe_bot(self.bot)
                return me
            except TelegramUnauthorizedError:
                return self._give_up("Telegram refused the bot token (401 Unauthorized): "
                                     "check PAYRESCUE_BOT_TOKEN")
            except _TRANSIENT as exc:
                wait = exc.retry_after if isinstance(exc, TelegramRetryAfter) else delay
                log.warning("Telegram not reachable (attempt %d, %s); next try in %.0f s",
                            attempt, exc.__class__.__name__, wait)
                await self.clock.sleep(wait)
                delay = min(delay * 2, MAX_RETRY_DELAY)
            except TelegramAPIError as exc:
                return self._give_up(f"Telegram refused the bot set-up "
                                     f"({exc.__class__.__name__}: {exc.message})")

    async def _prepare_updates(self) -> None:
        if self.settings.bot_mode == "polling":
            # a webhook left from an earlier deployment would make getUpdates fail with 409
            await self.bot.delete_webhook(drop_pending_updates=False)
            return
        assert self.settings.webhook_secret is not None
        await self.bot.set_webhook(
            self.settings.public_url(WEBHOOK_PATH),
            secret_token=self.settings.webhook_secret.get_secret_value(),
            allowed_updates=self.dispatcher.resolve_used_update_types(),
            drop_pending_updates=False,
            max_connections=webhook_connections(),
        )

    def _give_up(self, reason: str) -> None:
        log.error("%s; the Telegram bot stays off until the service restarts", reason)
        self.failure = reason
        return None
