"""Webhook delivery: POST each pending update to the bot's URL, as Telegram's Bot API
server does it (telegram-bot-api, `WebhookActor`).

Updates wait in queues: one per chat for messages (and edits), one per user for button
presses, one per chat for the bot's own membership changes; any other update is a queue of
its own. A queue sends one update at a time, in order; different queues send side by side,
up to the webhook's `max_connections` (40 unless setWebhook said otherwise). A failed
delivery holds back its queue only, retried with a growing pause (shorter than Telegram's,
to keep local runs snappy), while the other queues go on. The receiver may answer with a
Bot API call in the response body, which is executed like Telegram does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .errors import ApiError
from .params import Params, Upload
from .state import BotAccount, EmulatorState, Webhook

log = logging.getLogger(__name__)

Execute = Callable[[BotAccount, str, Params], Awaitable[Any]]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name


async def local_address_error(url: str) -> str | None:
    """Why the emulator refuses this webhook URL, or None if it is local.

    The emulator must never send traffic off the machine or private network, so only
    loopback, private and link-local addresses (and names resolving to them) are allowed.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "invalid URL; an http:// or https:// URL is required"
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 80)
        except OSError:
            return f"failed to resolve host {host!r}"
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if any(address.is_global for address in addresses):
        return "the emulator only delivers to local or private addresses"
    return None


async def read_method_call(resp: aiohttp.ClientResponse) -> tuple[str, Params] | None:
    """The Bot API call a webhook answered with, as JSON or multipart form (aiogram)."""
    content_type = resp.headers.get("Content-Type", "")
    fields: dict[str, Any] = {}
    if content_type.startswith("application/json"):
        try:
            data = await resp.json()
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        fields = data
    elif content_type.startswith("multipart/form-data"):
        reader = aiohttp.MultipartReader(resp.headers, resp.content)
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader) or not part.name:
                continue
            if part.filename:
                fields[part.name] = Upload(
                    part.filename, bytes(await part.read()), part.headers.get("Content-Type")
                )
            else:
                fields[part.name] = await part.text()
    method = fields.pop("method", None)
    if not isinstance(method, str) or not method:
        return None
    return method, Params(fields)


class WebhookDispatcher:
    def __init__(
        self,
        state: EmulatorState,
        execute: Execute,
        retry_initial: float = 0.05,
        retry_max: float = 2.0,
        request_timeout: float = 10.0,
    ) -> None:
        self.state = state
        self.execute = execute
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.request_timeout = request_timeout
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def start(self, bot: BotAccount) -> None:
        self.stop(bot)
        assert bot.webhook is not None
        self._tasks[bot.id] = asyncio.create_task(
            self._run(bot, bot.webhook), name=f"emulator-webhook-{bot.id}"
        )

    def stop(self, bot: BotAccount) -> None:
        task = self._tasks.pop(bot.id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                trust_env=False,  # never route through a proxy from the environment
            )
        return self._session

    async def _run(self, bot: BotAccount, webhook: Webhook) -> None:
        queues = _Queues(self.retry_initial, self.retry_max)
        notifier = self.state.notifier
        sending: set[asyncio.Task[None]] = set()

        def sendable() -> dict[str, Any] | None:
            """The next update to send, while a connection is free."""
            if len(queues.busy) >= webhook.max_connections:
                return None
            return queues.next_update(bot.pending)

        try:
            while True:
                await notifier.wait_for(
                    lambda: sendable() is not None or bot.webhook is not webhook
                    or notifier.closed, None)
                if bot.webhook is not webhook or notifier.closed:
                    return
                while (update := sendable()) is not None:
                    key = queue_of(update)
                    queues.busy.add(key)
                    task = asyncio.create_task(self._send(bot, webhook, queues, key, update))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
        finally:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)

    async def _send(self, bot: BotAccount, webhook: Webhook, queues: _Queues, key: Hashable,
                    update: dict[str, Any]) -> None:
        """Deliver one update; after a failure its queue waits out a pause here, without
        holding one of the webhook's connections."""
        try:
            error, call = await self._deliver(webhook, update)
            if error is not None:
                webhook.last_error_date = self.state.now()
                webhook.last_error_message = error
                log.debug("webhook delivery to %s failed: %s", webhook.url, error)
                queues.busy.discard(key)
                queues.pausing.add(key)
                self.state.changed()  # a connection is free; tests may wait for the failure
                await asyncio.sleep(queues.pause_after_failure(key))
                return
            queues.delivered(key)
            if any(pending is update for pending in bot.pending):
                bot.pending = [pending for pending in bot.pending if pending is not update]
            if call is not None:
                method, params = call
                try:
                    await self.execute(bot, method, params)
                except ApiError as exc:
                    # Telegram drops errors of webhook replies silently as well.
                    log.info("webhook reply %s failed: %s", method, exc.description)
        finally:
            queues.busy.discard(key)
            queues.pausing.discard(key)
            self.state.changed()  # the next update of this queue may go

    async def _deliver(
        self, webhook: Webhook, update: dict[str, Any]
    ) -> tuple[str | None, tuple[str, Params] | None]:
        headers = {SECRET_HEADER: webhook.secret_token} if webhook.secret_token else {}
        try:
            async with self._client().post(webhook.url, json=update, headers=headers) as resp:
                if not 200 <= resp.status < 300:
                    return f"Wrong response from the webhook: {resp.status} {resp.reason}", None
                try:
                    return None, await read_method_call(resp)
                except ValueError as exc:  # a malformed reply still counts as delivered
                    log.info("ignoring unreadable webhook reply: %s", exc)
                    return None, None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"Connection error: {type(exc).__name__}: {exc}", None


def queue_of(update: dict[str, Any]) -> Hashable:
    """The queue an update waits in: Telegram's `webhook_queue_id` (telegram-bot-api's
    Client.cpp): the chat for messages, the user for button presses."""
    for kind in ("message", "edited_message", "channel_post", "edited_channel_post"):
        if kind in update:
            return ("chat", update[kind]["chat"]["id"])
    if "callback_query" in update:
        return ("button", update["callback_query"]["from"]["id"])
    if "my_chat_member" in update:
        return ("membership", update["my_chat_member"]["chat"]["id"])
    return ("update", update["update_id"])


class _Queues:
    """Which queues have an update in flight, and which wait out a failed delivery."""

    def __init__(self, retry_initial: float, retry_max: float) -> None:
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.busy: set[Hashable] = set()  # an update in flight: holds a connection
        self.pausing: set[Hashable] = set()  # after a failure: holds no connection
        self._delay: dict[Hashable, float] = {}

    def next_update(self, pending: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The oldest update at the head of a queue that may send now."""
        seen: set[Hashable] = set()
        for update in pending:
            key = queue_of(update)
            if key in seen:
                continue
            seen.add(key)
            if key not in self.busy and key not in self.pausing:
                return update
        return None

    def pause_after_failure(self, key: Hashable) -> float:
        """Seconds this queue waits before it tries again: doubling, up to retry_max."""
        delay = self._delay.get(key, self.retry_initial)
        self._delay[key] = min(delay * 2, self.retry_max)
        return delay

    def delivered(self, key: Hashable) -> None:
        self._delay.pop(key, None)
