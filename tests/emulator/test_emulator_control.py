"""The JSON control API and the member chat page, over HTTP."""

import asyncio
import base64
import re

import aiohttp
import pytest
from aiogram.exceptions import TelegramServerError
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup


@pytest.fixture
async def http(base_url):
    async with aiohttp.ClientSession(base_url=base_url + "/") as session:
        yield session


async def call(http, method, path, body=None, status=200):
    async with http.request(method, path.lstrip("/"), json=body) as resp:
        data = await resp.json()
        assert resp.status == status, data
        return data


async def test_member_lifecycle_over_http(http, bot, emu):
    bots = await call(http, "GET", "/_emulator/bots")
    assert bots["bots"][0]["username"] == "payrescue_demo_bot"

    user = await call(
        http,
        "POST",
        "/_emulator/users",
        {"first_name": "Jonas", "language_code": "en", "username": "jonas"},
        status=201,
    )
    uid = user["id"]
    assert (await call(http, "GET", f"/_emulator/users/{uid}"))["blocked"] is False
    assert [u["first_name"] for u in (await call(http, "GET", "/_emulator/users"))["users"]] == [
        "Jonas"
    ]

    await call(http, "POST", f"/_emulator/users/{uid}/start", {"payload": "tok_42"})
    await call(http, "POST", f"/_emulator/users/{uid}/messages", {"text": "Hallo"})
    photo = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    await call(
        http, "POST", f"/_emulator/users/{uid}/photo", {"data_base64": photo, "caption": "Beleg"}
    )
    pdf = base64.b64encode(b"%PDF").decode()
    await call(
        http,
        "POST",
        f"/_emulator/users/{uid}/document",
        {"data_base64": pdf, "filename": "a.pdf", "mime_type": "application/pdf"},
    )
    await call(http, "POST", f"/_emulator/users/{uid}/voice", {"data_base64": pdf, "duration": 2})
    await call(http, "POST", f"/_emulator/users/{uid}/sticker", {"emoji": "🎉"})
    updates = await bot.get_updates()
    assert updates[0].message.text == "/start tok_42"
    assert updates[1].message.text == "Hallo"
    assert updates[2].message.caption == "Beleg"
    assert updates[3].message.document.file_name == "a.pdf"
    assert updates[4].message.voice.duration == 2
    assert updates[5].message.sticker.emoji == "🎉"

    sent = await bot.send_message(
        uid,
        "<b>Zahlung</b> fehlgeschlagen",
        parse_mode="HTML",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Retry", callback_data="retry")]]
        ),
    )
    await bot.send_chat_action(uid, "typing")
    chat = await call(http, "GET", f"/_emulator/chats/{uid}/messages?who=bot")
    [bot_message] = chat["messages"]
    assert bot_message["text"] == "<b>Zahlung</b> fehlgeschlagen"
    assert bot_message["entities"] == [{"type": "bold", "offset": 0, "length": 7}]
    assert len((await call(http, "GET", f"/_emulator/chats/{uid}/messages"))["messages"]) == 7

    query = await call(
        http,
        "POST",
        f"/_emulator/users/{uid}/callback",
        {"message_id": sent.message_id, "data": "retry"},
    )
    await bot.answer_callback_query(query["id"], text="OK")
    answers = (await call(http, "GET", "/_emulator/callback_answers"))["callback_answers"]
    assert answers[0]["text"] == "OK"
    assert (await call(http, "GET", f"/_emulator/chats/{uid}/messages"))["callback_answers"][0][
        "data"
    ] == "retry"
    actions = await call(http, "GET", f"/_emulator/chats/{uid}/actions")
    assert [a["action"] for a in actions["actions"]] == ["typing"]

    await call(http, "POST", f"/_emulator/users/{uid}/block")
    assert (await call(http, "GET", f"/_emulator/users/{uid}"))["blocked"] is True
    await call(http, "POST", f"/_emulator/users/{uid}/unblock")

    file_id = updates[2].message.photo[-1].file_id
    async with http.get(f"_emulator/files/{file_id}") as resp:
        assert resp.status == 200 and (await resp.read()).startswith(b"\x89PNG")
    doc_id = updates[3].message.document.file_id
    async with http.get(f"_emulator/files/{doc_id}") as resp:
        assert resp.headers["Content-Disposition"].startswith("attachment")


async def test_messages_long_poll_returns_on_change(http, bot, emu, member):
    version = (await call(http, "GET", f"/_emulator/chats/{member['id']}/messages"))["version"]
    waiting = asyncio.create_task(
        call(
            http, "GET", f"/_emulator/chats/{member['id']}/messages?after_version={version}&wait=5"
        )
    )
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await bot.send_message(member["id"], "news")
    result = await asyncio.wait_for(waiting, 2)
    assert result["version"] > version
    assert result["messages"][0]["plain_text"] == "news"


async def test_faults_latency_limits_and_reset(http, bot, emu, member):
    fault = await call(
        http, "POST", "/_emulator/faults", {"method": "getMe", "status": 500}, status=201
    )
    assert fault["remaining"] == 1
    assert len((await call(http, "GET", "/_emulator/faults"))["faults"]) == 1
    with pytest.raises(TelegramServerError):
        await bot.get_me()
    await call(http, "POST", "/_emulator/faults", {"count": 5}, status=201)
    assert (await call(http, "DELETE", "/_emulator/faults"))["faults"] == []

    assert (await call(http, "POST", "/_emulator/latency", {"seconds": 0.01}))["seconds"] == 0.01
    assert (await call(http, "GET", "/_emulator/latency"))["seconds"] == 0.01

    limits = await call(http, "PUT", "/_emulator/limits", {"global_per_second": 1000})
    assert limits["global_per_second"] == 1000 and limits["per_chat_per_second"] == 1
    assert (await call(http, "GET", "/_emulator/limits"))["global_per_second"] == 1000
    assert emu.limits.global_per_second == 1000

    await emu.send_text(member["id"], "pending")
    assert len((await call(http, "GET", "/_emulator/updates"))["updates"]) == 1
    await call(http, "POST", "/_emulator/reset")
    assert emu.users() == [] and emu.latency == 0
    assert (await call(http, "GET", "/_emulator/updates"))["updates"] == []
    assert (await bot.get_me()).username == "payrescue_demo_bot"  # bots survive a reset


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/_emulator/users", {}, 400, "'first_name' is required"),
        ("POST", "/_emulator/users", {"first_name": 5}, 400, "'first_name' has the wrong type"),
        ("GET", "/_emulator/users/999", None, 404, "unknown user 999"),
        ("GET", "/_emulator/users/abc", None, 400, "'user_id' must be an integer"),
        ("POST", "/_emulator/users/{uid}/messages", {"text": ""}, 400, "text must not be empty"),
        ("POST", "/_emulator/users/{uid}/photo", {"data_base64": "%%%"}, 400, "not valid base64"),
        (
            "POST",
            "/_emulator/users/{uid}/callback",
            {"message_id": 9, "data": "x"},
            404,
            "message 9 not found",
        ),
        ("POST", "/_emulator/users/{uid}/start", {"payload": "bad payload!"}, 400, "start payload"),
        ("POST", "/_emulator/faults", {"method": "nope"}, 400, "unknown Bot API method 'nope'"),
        ("PUT", "/_emulator/limits", {"speed": 1}, 400, "unknown limit 'speed'"),
        ("GET", "/_emulator/chats/{uid}/messages?bot=ghost", None, 404, "unknown bot 'ghost'"),
        ("GET", "/_emulator/files/nothing", None, 404, "unknown file"),
    ],
)
async def test_control_errors_are_json(http, member, method, path, body, status, error):
    result = await call(http, method, path.format(uid=member["id"]), body, status=status)
    assert error in result["error"]


async def test_control_rejects_non_json_body(http, member):
    async with http.post(f"_emulator/users/{member['id']}/messages", data=b"text=hi") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "the request body must be JSON"


async def test_blocked_member_cannot_write(http, emu, member):
    emu.block(member["id"])
    result = await call(
        http, "POST", f"/_emulator/users/{member['id']}/messages", {"text": "hi"}, status=400
    )
    assert "blocked" in result["error"]


async def test_chat_page_and_assets_are_served_with_csp(http):
    async with http.get("chat") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        html = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert '<script src="/chat/static/chat.js"></script>' in html
    assert "<style" not in html and not re.search(r"\son[a-z]+=", html)  # no inline handlers
    async with http.get("chat/static/chat.js") as resp:
        assert resp.status == 200 and resp.content_type == "text/javascript"
        script = await resp.text()
    assert "innerHTML" not in script
    async with http.get("chat/static/chat.css") as resp:
        assert resp.status == 200 and resp.content_type == "text/css"
    async with http.get("chat/static/secrets.txt") as resp:
        assert resp.status == 404
