"""The control API: JSON under /_emulator/ to drive the emulator from outside Python.

It plays the member's side (write, tap, upload, block) and sets the emulation knobs.
It is a development tool with no authentication: bind the emulator to localhost.
Errors are ``{"error": "..."}`` with status 400 (bad input) or 404 (unknown thing).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .errors import EmulatorError
from .limits import EmulatorLimits
from .server import EMULATOR_KEY

PREFIX = "/_emulator"
MAX_WAIT_SECONDS = 30

Handler = Callable[[web.Request], Awaitable[Any]]


def _json_handler(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Turn a handler's return value into JSON and its EmulatorError into {"error": ...}."""

    async def wrapped(request: web.Request) -> web.Response:
        try:
            result = await handler(request)
        except EmulatorError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        if isinstance(result, web.Response):
            return result
        return web.json_response(result)

    return wrapped


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise EmulatorError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise EmulatorError("the request body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...):
    value = body.get(name, default)
    if value is ...:
        raise EmulatorError(f"{name!r} is required")
    if value is not None and value is not default and not isinstance(value, kind):
        raise EmulatorError(f"{name!r} has the wrong type")
    return value


def _int_param(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EmulatorError(f"{name!r} must be an integer") from None


def _float_param(value: Any, name: str) -> float:
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        raise EmulatorError(f"{name!r} must be a number") from None


def _b64(body: dict[str, Any]) -> bytes:
    encoded = _field(body, "data_base64", str)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise EmulatorError("'data_base64' is not valid base64") from None


def _bot_ref(request: web.Request, body: dict[str, Any] | None = None) -> str | None:
    value = (body or {}).get("bot") or request.query.get("bot")
    return str(value) if value is not None else None


def _user_id(request: web.Request) -> int:
    return _int_param(request.match_info["user_id"], "user_id")


def add_control_routes(app: web.Application) -> None:
    def emu(request: web.Request):
        return request.app[EMULATOR_KEY]

    routes = web.RouteTableDef()

    @routes.get(PREFIX + "/bots")
    async def list_bots(request: web.Request) -> Any:
        return {"bots": emu(request).bots()}

    @routes.get(PREFIX + "/users")
    async def list_users(request: web.Request) -> Any:
        return {"users": emu(request).users()}

    @routes.post(PREFIX + "/users")
    async def create_user(request: web.Request) -> Any:
        body = await _body(request)
        user = emu(request).create_user(
            first_name=_field(body, "first_name", str),
            last_name=_field(body, "last_name", str, None),
            username=_field(body, "username", str, None),
            language_code=_field(body, "language_code", str, "de"),
            user_id=_field(body, "id", int, None),
        )
        return web.json_response(user, status=201)

    @routes.get(PREFIX + "/users/{user_id}")
    async def get_user(request: web.Request) -> Any:
        e = emu(request)
        user = e.get_user(_user_id(request))
        return {**user, "blocked": e.is_blocked(user["id"], bot=_bot_ref(request))}

    @routes.post(PREFIX + "/users/{user_id}/messages")
    async def send_text(request: web.Request) -> Any:
        body = await _body(request)
        return await emu(request).send_text(
            _user_id(request), _field(body, "text", str), bot=_bot_ref(request, body)
        )

    @routes.post(PREFIX + "/users/{user_id}/start")
    async def start(request: web.Request) -> Any:
        body = await _body(request)
        return await emu(request).start(
            _user_id(request), _field(body, "payload", str, None), bot=_bot_ref(request, body)
        )

    @routes.post(PREFIX + "/users/{user_id}/callback")
    async def press_button(request: web.Request) -> Any:
        body = await _body(request)
        return await emu(request).press_button(
            _user_id(request),
            _int_param(_field(body, "message_id", (int, str)), "message_id"),
            _field(body, "data", str),
            bot=_bot_ref(request, body),
        )

    @routes.post(PREFIX + "/users/{user_id}/photo")
    async def send_photo(request: web.Request) -> Any:
        body = await _body(request)
        return await emu(request).send_photo(
            _user_id(request),
            _b64(body),
            _field(body, "caption", str, None),
            bot=_bot_ref(request, body),
        )

    @routes.post(PREFIX + "/users/{user_id}/document")
    async def send_document(request: web.Request) -> Any:
        body = await _body(request)
        return await emu(request).send_document(
            _user_id(request),
            _b64(body),
            _field(body, "filename", str),
            _field(body, "mime_type", str, "application/octet-stream"),
            _field(body, "caption", str, None),
            bot=_bot_ref(request, body),
        )

    @routes.post(PREFIX + "/users/{user_id}/voice")
    async def send_voice(request: web.Request) -> Any:
        body = await _body(request)
        return await emu(request).send_voice(
            _user_id(request),
            _b64(body),
            _field(body, "duration", int, 1),
            _field(body, "mime_type", str, "audio/ogg"),
            bot=_bot_ref(request, body),
        )

    @routes.post(PREFIX + "/users/{user_id}/sticker")
    async def send_sticker(request: web.Request) -> Any:
        body = await _body(request)
        data = _b64(body) if "data_base64" in body else b"RIFF\x00\x00\x00\x00WEBP"
        return await emu(request).send_sticker(
            _user_id(request), data, _field(body, "emoji", str, "🙂"), bot=_bot_ref(request, body)
        )

    @routes.post(PREFIX + "/users/{user_id}/block")
    async def block(request: web.Request) -> Any:
        body = await _body(request)
        emu(request).block(_user_id(request), bot=_bot_ref(request, body))
        return {"blocked": True}

    @routes.post(PREFIX + "/users/{user_id}/unblock")
    async def unblock(request: web.Request) -> Any:
        body = await _body(request)
        emu(request).unblock(_user_id(request), bot=_bot_ref(request, body))
        return {"blocked": False}

    @routes.get(PREFIX + "/chats/{user_id}/messages")
    async def chat_messages(request: web.Request) -> Any:
        """Messages of a chat; `?after_version=N&wait=S` long-polls for a change."""
        e = emu(request)
        chat_id, bot = _user_id(request), _bot_ref(request)
        after = request.query.get("after_version")
        if after is not None:
            after_version = _int_param(after, "after_version")
            wait = min(_float_param(request.query.get("wait", "25"), "wait"), MAX_WAIT_SECONDS)
            await e.state.notifier.wait_for(
                lambda: e.chat_version(chat_id, bot=bot) > after_version, wait
            )
        who = request.query.get("who", "all")
        if who not in ("all", "bot"):
            raise EmulatorError("'who' must be 'all' or 'bot'")
        if who == "all":
            messages = e.history(chat_id, bot=bot)
        else:
            messages = e.sent_messages(chat_id, bot=bot)
        answers = [
            a
            for a in e.callback_answers
            if a["user_id"] == chat_id and a["bot_id"] == e.bot(bot)["id"]
        ]
        return {
            "version": e.chat_version(chat_id, bot=bot),
            "blocked": e.is_blocked(chat_id, bot=bot),
            "messages": messages,
            "callback_answers": answers,
        }

    # --- supergroups and forum topics -------------------------------------------------------

    def group_id(request: web.Request) -> int:
        return _int_param(request.match_info["group_id"], "group_id")

    @routes.get(PREFIX + "/groups")
    async def list_groups(request: web.Request) -> Any:
        return {"groups": emu(request).groups()}

    @routes.post(PREFIX + "/groups")
    async def create_group(request: web.Request) -> Any:
        body = await _body(request)
        chat = emu(request).create_group(
            _field(body, "title", str),
            _int_param(_field(body, "owner_id", (int, str)), "owner_id"),
            is_forum=bool(_field(body, "is_forum", bool, True)),
        )
        return web.json_response(chat, status=201)

    @routes.get(PREFIX + "/groups/{group_id}")
    async def get_group(request: web.Request) -> Any:
        return emu(request).group(group_id(request))

    @routes.post(PREFIX + "/groups/{group_id}/members")
    async def add_group_member(request: web.Request) -> Any:
        body = await _body(request)
        e = emu(request)
        e.add_group_member(
            group_id(request),
            _int_param(_field(body, "user_id", (int, str)), "user_id"),
            admin=bool(_field(body, "admin", bool, False)),
        )
        return e.group(group_id(request))

    @routes.put(PREFIX + "/groups/{group_id}/bot")
    async def set_bot_rights(request: web.Request) -> Any:
        body = await _body(request)
        e = emu(request)
        e.set_bot_rights(
            group_id(request),
            bot=_bot_ref(request, body),
            member=bool(_field(body, "member", bool, True)),
            admin=bool(_field(body, "admin", bool, False)),
            can_manage_topics=bool(_field(body, "can_manage_topics", bool, False)),
        )
        return e.group(group_id(request))

    @routes.post(PREFIX + "/groups/{group_id}/messages")
    async def group_send_text(request: web.Request) -> Any:
        body = await _body(request)
        return await emu(request).group_send_text(
            group_id(request),
            _int_param(_field(body, "user_id", (int, str)), "user_id"),
            _field(body, "text", str),
            thread_id=_field(body, "thread_id", int, None),
        )

    @routes.post(PREFIX + "/groups/{group_id}/callback")
    async def group_press_button(request: web.Request) -> Any:
        body = await _body(request)
        return await emu(request).group_press_button(
            group_id(request),
            _int_param(_field(body, "user_id", (int, str)), "user_id"),
            _int_param(_field(body, "message_id", (int, str)), "message_id"),
            _field(body, "data", str),
        )

    @routes.get(PREFIX + "/groups/{group_id}/messages")
    async def group_messages(request: web.Request) -> Any:
        """The group's messages (`?thread_id=`); `?after_version=N&wait=S` long-polls."""
        e = emu(request)
        gid = group_id(request)
        after = request.query.get("after_version")
        if after is not None:
            after_version = _int_param(after, "after_version")
            wait = min(_float_param(request.query.get("wait", "25"), "wait"), MAX_WAIT_SECONDS)
            await e.state.notifier.wait_for(
                lambda: e.group(gid)["version"] > after_version, wait
            )
        thread = request.query.get("thread_id")
        thread_id = _int_param(thread, "thread_id") if thread else None
        group = e.group(gid)
        answers = [a for a in e.callback_answers if a.get("chat_id") == gid]
        return {
            **group,
            "messages": e.group_messages(gid, thread_id=thread_id),
            "callback_answers": answers,
        }

    @routes.post(PREFIX + "/groups/{group_id}/topics/{thread_id}/{action:close|reopen|delete}")
    async def topic_by_hand(request: web.Request) -> Any:
        body = await _body(request)
        e = emu(request)
        gid = group_id(request)
        thread_id = _int_param(request.match_info["thread_id"], "thread_id")
        by = _int_param(_field(body, "user_id", (int, str)), "user_id")
        action = request.match_info["action"]
        if action == "delete":
            e.delete_topic(gid, thread_id, by=by)
        else:
            e.close_topic(gid, thread_id, by=by, closed=action == "close")
        return {"topics": e.topics(gid)}

    @routes.get(PREFIX + "/chats/{user_id}/actions")
    async def chat_actions(request: web.Request) -> Any:
        return {"actions": emu(request).chat_action_log(_user_id(request), bot=_bot_ref(request))}

    @routes.get(PREFIX + "/callback_answers")
    async def callback_answers(request: web.Request) -> Any:
        return {"callback_answers": emu(request).callback_answers}

    @routes.get(PREFIX + "/updates")
    async def pending_updates(request: web.Request) -> Any:
        return {"updates": emu(request).pending_updates(bot=_bot_ref(request))}

    @routes.get(PREFIX + "/faults")
    async def list_faults(request: web.Request) -> Any:
        return {"faults": emu(request).faults.pending()}

    @routes.post(PREFIX + "/faults")
    async def inject_faults(request: web.Request) -> Any:
        body = await _body(request)
        fault = emu(request).inject_faults(
            method=_field(body, "method", str, None),
            count=_field(body, "count", int, 1),
            status=_field(body, "status", int, 500),
            retry_after=_field(body, "retry_after", int, None),
            description=_field(body, "description", str, None),
            drop_connection=bool(_field(body, "drop_connection", bool, False)),
        )
        return web.json_response(fault, status=201)

    @routes.get(PREFIX + "/flood-bans")
    async def flood_bans(request: web.Request) -> Any:
        return {"violations": emu(request).bans.violations}

    @routes.delete(PREFIX + "/faults")
    async def clear_faults(request: web.Request) -> Any:
        emu(request).clear_faults()
        return {"faults": []}

    @routes.get(PREFIX + "/latency")
    async def get_latency(request: web.Request) -> Any:
        return {"seconds": emu(request).latency}

    @routes.post(PREFIX + "/latency")
    async def set_latency(request: web.Request) -> Any:
        body = await _body(request)
        emu(request).set_latency(_field(body, "seconds", (int, float)))
        return {"seconds": emu(request).latency}

    @routes.get(PREFIX + "/limits")
    async def get_limits(request: web.Request) -> Any:
        return emu(request).limits.to_json()

    @routes.put(PREFIX + "/limits")
    async def set_limits(request: web.Request) -> Any:
        e = emu(request)
        try:
            limits = EmulatorLimits.from_json(await _body(request), base=e.limits)
        except ValueError as exc:
            raise EmulatorError(str(exc)) from None
        e.set_limits(limits)
        return limits.to_json()

    @routes.post(PREFIX + "/reset")
    async def reset(request: web.Request) -> Any:
        emu(request).reset()
        return {"reset": True}

    @routes.get(PREFIX + "/files/{file_id}")
    async def get_file(request: web.Request) -> Any:
        stored = emu(request).files.get(request.match_info["file_id"])
        if stored is None:
            raise EmulatorError("unknown file", status=404)
        headers = {"X-Content-Type-Options": "nosniff"}
        if not (stored.mime_type or "").startswith("image/"):
            # Anything but an image downloads, so an uploaded HTML file never renders here.
            name = stored.file_name or stored.file_path.rsplit("/", 1)[-1]
            headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
        return web.Response(
            body=stored.data,
            content_type=stored.mime_type or "application/octet-stream",
            headers=headers,
        )

    for route in routes:
        assert isinstance(route, web.RouteDef)
        app.router.add_route(route.method, route.path, _json_handler(route.handler))
