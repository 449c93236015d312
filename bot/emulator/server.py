"""The aiohttp application: Bot API, file downloads, control API and member chat page."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import ApiError
from .params import Params, Upload

if TYPE_CHECKING:
    from .emulator import TelegramEmulator

EMULATOR_KEY: web.AppKey[TelegramEmulator] = web.AppKey("emulator")
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # Telegram's upload limit for bots

_UNAUTHORIZED = ApiError(401, "Unauthorized")
_NOT_FOUND = ApiError(404, "Not Found")


def api_response(error: ApiError | None = None, result: Any = None) -> web.Response:
    if error is not None:
        return web.json_response(error.to_json(), status=error.status)
    return web.json_response({"ok": True, "result": result})


async def read_params(request: web.Request) -> Params:
    """Query string plus body, whichever encoding the client chose."""
    raw: dict[str, Any] = dict(request.query)
    content_type = request.content_type
    if content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse JSON request body") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Bad Request: request body must be a JSON object")
        raw.update(body)
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.post()
        for name, value in form.items():
            if isinstance(value, web.FileField):
                raw[name] = Upload(value.filename, value.file.read(), value.content_type)
            else:
                raw[name] = value
    return Params(raw)


async def bot_api(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR_KEY]
    bot = emu.state.bots_by_token.get(request.match_info["token"])
    if bot is None:
        return api_response(_UNAUTHORIZED)
    method = request.match_info["method"]
    if not emu.api.knows(method):
        return api_response(_NOT_FOUND)
    if emu.latency:
        await asyncio.sleep(emu.latency)
    banned = emu.bans.refuse(bot.id, method)
    if banned is not None:
        return api_response(banned)
    fault = emu.faults.take(method)
    if fault is not None:
        if fault.drop_connection:
            # Close the socket before answering: the client sees a disconnect, as on a
            # network failure between the bot and Telegram.
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        error = fault.to_api_error()
        emu.bans.note(bot.id, method, error)
        return api_response(error)
    try:
        params = await read_params(request)
        result = await emu.api.call(bot, method, params)
    except ApiError as exc:
        emu.bans.note(bot.id, method, exc)
        return api_response(exc)
    return api_response(result=result)


async def download_file(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR_KEY]
    if request.match_info["token"] not in emu.state.bots_by_token:
        return api_response(_UNAUTHORIZED)
    stored = emu.files.by_path(request.match_info["file_path"])
    if stored is None:
        return api_response(_NOT_FOUND)
    return web.Response(
        body=stored.data, content_type=stored.mime_type or "application/octet-stream"
    )


def make_app(emu: TelegramEmulator) -> web.Application:
    # Imported here: both modules take EMULATOR_KEY from this one.
    from .chat_page import add_chat_page_routes
    from .control import add_control_routes

    app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
    app[EMULATOR_KEY] = emu
    app.router.add_route("*", "/bot{token}/{method}", bot_api)
    app.router.add_get("/file/bot{token}/{file_path:.+}", download_file)
    add_control_routes(app)
    add_chat_page_routes(app)

    async def on_startup(app: web.Application) -> None:
        emu.state.notifier.closed = False

    async def on_shutdown(app: web.Application) -> None:
        # Answer pending long polls now instead of letting shutdown wait for them.
        emu.state.notifier.close()
        await emu.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


async def start_emulator(
    emu: TelegramEmulator, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve the emulator on host:port (0 picks a free port); returns (runner, base_url).

    Stop it with ``await runner.cleanup()``.
    """
    runner = web.AppRunner(
        emu.make_app(),
        access_log=None,
        # A client that gives up on a long poll should not keep its handler waiting.
        handler_cancellation=True,
        shutdown_timeout=5,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    if ":" in bound_host:
        bound_host = f"[{bound_host}]"
    return runner, f"http://{bound_host}:{bound_port}"
