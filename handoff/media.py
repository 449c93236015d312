"""Member photos, documents and voice notes, streamed through the server after a log-in check.

The browser never sees the bot token or a Telegram URL: the server asks the Bot API for the
file path (`getFile`) and relays the bytes.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from handoff.auth import login_required
from handoff.security import HEADERS
from payrescue import email_replies
from payrescue.db.models import Message
from payrescue.i18n import _
from payrescue.keys import SESSIONMAKER, SETTINGS

INLINE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "audio/ogg", "audio/mpeg",
                "video/mp4")
TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)


class MediaUnavailable(Exception):
    """Telegram did not hand out the file."""


@login_required
async def media_view(request: web.Request) -> web.StreamResponse:
    async with request.config_dict[SESSIONMAKER]() as db:
        message = await db.get(Message, int(request.match_info["message_id"]))
    if message is None or not message.file_id:
        raise web.HTTPNotFound()
    settings = request.config_dict[SETTINGS]
    if message.file_id.startswith(email_replies.MAIL_FILE):
        return _mail_file(settings.data_dir, message)
    if settings.bot_token is None:
        raise web.HTTPServiceUnavailable(
            text=_("Files cannot be shown: no Telegram bot token is configured."))
    base = str(settings.telegram_api_base).rstrip("/")
    token = settings.bot_token.get_secret_value()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        try:
            file_path = await _file_path(client, f"{base}/bot{token}/getFile", message.file_id)
            async with client.get(f"{base}/file/bot{token}/{file_path}") as upstream:
                if upstream.status != 200:
                    raise MediaUnavailable(f"file download answered {upstream.status}")
                return await _relay(request, upstream, message)
        except (aiohttp.ClientError, TimeoutError, MediaUnavailable) as exc:
            # reported to the agent; the token stays out of the message
            raise web.HTTPBadGateway(
                text=f"Telegram did not deliver the file ({type(exc).__name__})."
            ) from None


def _mail_file(data_dir: Path, message: Message) -> web.StreamResponse:
    """An e-mail attachment, kept in the data directory (`payrescue.email_replies`)."""
    path = email_replies.attachment_path(data_dir, message.file_id)
    if path is None or not path.is_file():
        raise web.HTTPNotFound()
    mime, inline = _presentation(message)
    return web.FileResponse(path, headers={
        **HEADERS, "Content-Type": mime,
        "Content-Disposition": "inline" if inline else "attachment",
        "Cache-Control": "private, no-store",
    })


async def _file_path(client: aiohttp.ClientSession, url: str, file_id: str) -> str:
    async with client.post(url, data={"file_id": file_id}) as response:
        body = await response.json(content_type=None)
    if not body.get("ok") or not body.get("result", {}).get("file_path"):
        raise MediaUnavailable(str(body.get("error_code", "no file_path")))
    return body["result"]["file_path"]


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse,
                 message: Message) -> web.StreamResponse:
    mime, inline = _presentation(message)
    response = web.StreamResponse(headers={
        **HEADERS,  # sent before the middleware could add them
        "Content-Type": mime,
        # anything that is not a known image or sound downloads: an uploaded HTML file
        # must never render inside the console's origin
        "Content-Disposition": "inline" if inline else "attachment",
        "Cache-Control": "private, no-store",
    })
    await response.prepare(request)
    async for chunk in upstream.content.iter_chunked(64 * 1024):
        await response.write(chunk)
    await response.write_eof()
    return response


TELEGRAM_DEFAULTS = {"photo": "image/jpeg", "voice": "audio/ogg", "sticker": "image/webp"}


def _presentation(message: Message) -> tuple[str, bool]:
    """(content type, shown inline?) for a member's file."""
    mime = message.mime_type or TELEGRAM_DEFAULTS.get(message.kind, "")
    if mime in INLINE_TYPES:
        return mime, True
    return "application/octet-stream", False


def routes() -> list[web.RouteDef]:
    return [web.get("/console/media/{message_id:\\d+}", media_view)]
