"""Webhook mode: delivery with the secret header, a queue per chat, retries in order,
replies in the body."""

import asyncio
import json

import pytest
from aiogram import Dispatcher
from aiogram.exceptions import TelegramBadRequest, TelegramConflictError
from aiogram.filters import CommandStart
from aiogram.methods import SendMessage
from aiogram.types import Message
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web


class Receiver:
    """A tiny webhook endpoint that records what it gets and can fail on demand."""

    def __init__(self) -> None:
        self.updates: list[dict] = []
        self.secrets: list[str | None] = []
        self.fail_next = 0
        self.reply: dict | None = None
        self.received = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=500)
        self.updates.append(await request.json())
        self.secrets.append(request.headers.get("X-Telegram-Bot-Api-Secret-Token"))
        self.received.set()
        if self.reply is not None:
            return web.json_response(self.reply)
        return web.json_response({})


@pytest.fixture
async def receiver(aiohttp_server):
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/hook", recv.handle)
    server = await aiohttp_server(app)
    recv.url = str(server.make_url("/hook"))
    return recv


async def test_updates_are_posted_with_the_secret_header(bot, emu, member, receiver):
    assert await bot.set_webhook(receiver.url, secret_token="s3cr3t-Token_1")
    await emu.send_text(member["id"], "one")
    await emu.send_text(member["id"], "two")
    await emu.wait_until(lambda: len(receiver.updates) == 2)
    assert [u["message"]["text"] for u in receiver.updates] == ["one", "two"]
    assert receiver.secrets == ["s3cr3t-Token_1", "s3cr3t-Token_1"]
    info = await bot.get_webhook_info()
    assert (info.url, info.pending_update_count, info.has_custom_certificate) == (
        receiver.url,
        0,
        False,
    )


async def test_failed_deliveries_are_retried_in_order(bot, emu, member, receiver):
    receiver.fail_next = 2
    await bot.set_webhook(receiver.url)
    for text in ("a", "b", "c"):
        await emu.send_text(member["id"], text)
    await emu.wait_until(lambda: len(receiver.updates) == 3)
    assert [u["message"]["text"] for u in receiver.updates] == ["a", "b", "c"]
    info = await bot.get_webhook_info()
    assert info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"
    assert info.last_error_date is not None


class HoldingReceiver:
    """Holds every request until released; a chat named in `failing` gets 500s."""

    def __init__(self) -> None:
        self.in_flight: list[str] = []
        self.most_at_once = 0
        self.updates: list[dict] = []
        self.release = asyncio.Event()
        self.failing: set[int] = set()

    async def handle(self, request: web.Request) -> web.Response:
        update = await request.json()
        chat = update["message"]["chat"]["id"]
        if chat in self.failing:
            return web.Response(status=500)
        self.in_flight.append(update["message"]["text"])
        self.most_at_once = max(self.most_at_once, len(self.in_flight))
        await self.release.wait()
        self.in_flight.remove(update["message"]["text"])
        self.updates.append(update)
        return web.json_response({})


async def test_chats_are_delivered_side_by_side_each_in_its_order(bot, emu, aiohttp_server):
    """As Telegram's Bot API server: a queue per chat, one update of a chat at a time, chats
    side by side up to max_connections, and a chat that keeps failing holds up only itself."""
    receiver = HoldingReceiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    users = [emu.create_user(f"Chat{n}") for n in range(5)]
    receiver.failing.add(users[4]["id"])
    await bot.set_webhook(str(server.make_url("/hook")), max_connections=3)
    for number in range(3):
        for user in users:
            await emu.send_text(user["id"], f"{user['first_name']}:{number}")
    await emu.wait_until(lambda: len(receiver.in_flight) == 3)
    # three chats at once (the limit), each with its first message only
    assert sorted(receiver.in_flight) == ["Chat0:0", "Chat1:0", "Chat2:0"]
    receiver.release.set()
    await emu.wait_until(lambda: len(receiver.updates) == 12)
    assert receiver.most_at_once == 3
    for user in users[:4]:
        texts = [u["message"]["text"] for u in receiver.updates
                 if u["message"]["chat"]["id"] == user["id"]]
        assert texts == [f"{user['first_name']}:{n}" for n in range(3)]
    assert [u["message"]["text"] for u in emu.pending_updates()] == [
        "Chat4:0", "Chat4:1", "Chat4:2"]  # still waiting, in order, for the failing chat


async def test_unreachable_webhook_keeps_updates_pending(bot, emu, member, unused_tcp_port):
    await bot.set_webhook(f"http://127.0.0.1:{unused_tcp_port}/hook")
    await emu.send_text(member["id"], "waiting")
    await emu.wait_until(lambda: "last_error_message" in emu.webhook_info())
    info = await bot.get_webhook_info()
    assert info.pending_update_count == 1
    assert info.last_error_message.startswith("Connection error: ")
    # Switching back to polling hands over what is still pending.
    await bot.delete_webhook()
    assert [u.message.text for u in await bot.get_updates()] == ["waiting"]


async def test_get_updates_conflicts_with_an_active_webhook(bot, receiver):
    await bot.set_webhook(receiver.url)
    with pytest.raises(
        TelegramConflictError, match="can't use getUpdates method while webhook is active"
    ):
        await bot.get_updates()
    assert await bot.delete_webhook()
    assert await bot.get_updates() == []
    assert (await bot.get_webhook_info()).url == ""


async def test_drop_pending_updates(bot, emu, member, receiver):
    await emu.send_text(member["id"], "old")
    await bot.set_webhook(receiver.url, drop_pending_updates=True)
    await emu.send_text(member["id"], "new")
    await emu.wait_until(lambda: len(receiver.updates) == 1)
    assert receiver.updates[0]["message"]["text"] == "new"


async def test_webhook_url_must_be_local(bot):
    with pytest.raises(
        TelegramBadRequest, match="bad webhook: the emulator only delivers to local"
    ):
        await bot.set_webhook("https://8.8.8.8/hook")
    with pytest.raises(TelegramBadRequest, match="bad webhook: invalid URL"):
        await bot.set_webhook("ftp://localhost/hook")
    with pytest.raises(TelegramBadRequest, match="secret token contains unallowed characters"):
        await bot.set_webhook("http://localhost:1/hook", secret_token="not allowed!")


async def test_json_method_in_the_webhook_answer_is_executed(bot, emu, member, receiver):
    receiver.reply = {"method": "sendMessage", "chat_id": member["id"], "text": "inline reply"}
    await bot.set_webhook(receiver.url)
    await emu.send_text(member["id"], "hi")
    [reply] = await emu.wait_for_messages(member["id"], 1)
    assert reply["plain_text"] == "inline reply"


async def test_aiogram_webhook_handler_with_inline_replies(bot, emu, member, aiohttp_server):
    """aiogram's own SimpleRequestHandler answers in the body as multipart form data."""
    dp = Dispatcher()

    @dp.message(CommandStart())
    async def start(message: Message) -> SendMessage:
        return message.answer(f"Hallo {message.from_user.first_name}")

    app = web.Application()
    SimpleRequestHandler(dp, bot, secret_token="hook-secret", handle_in_background=False).register(
        app, path="/tg"
    )
    server = await aiohttp_server(app)
    await bot.set_webhook(str(server.make_url("/tg")), secret_token="hook-secret")
    await emu.start(member["id"], "abc")
    [reply] = await emu.wait_for_messages(member["id"], 1)
    assert reply["plain_text"] == "Hallo Anna"

    # With a wrong secret aiogram refuses the update; the emulator keeps retrying it.
    await bot.set_webhook(str(server.make_url("/tg")), secret_token="wrong-secret")
    await emu.send_text(member["id"], "/start")
    await emu.wait_until(lambda: "401" in emu.webhook_info().get("last_error_message", ""))
    assert (await bot.get_webhook_info()).pending_update_count == 1
    await bot.delete_webhook(drop_pending_updates=True)
    assert json.dumps(emu.pending_updates()) == "[]"
