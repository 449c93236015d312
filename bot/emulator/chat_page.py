"""The member chat page at /chat (and the team group at /team): a browser stand-in for the
Telegram app in demos.

The page is static (HTML, JS and CSS files, no inline script or style) so it works under
a strict Content-Security-Policy; everything dynamic goes through the control API.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"
_CONTENT_TYPES = {
    "chat.html": "text/html",
    "chat.js": "text/javascript",
    "chat.css": "text/css",
    "team.html": "text/html",
    "team.js": "text/javascript",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def _static_response(name: str) -> web.Response:
    return web.Response(
        body=(STATIC_DIR / name).read_bytes(),
        content_type=_CONTENT_TYPES[name],
        charset="utf-8",
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


async def chat_page(request: web.Request) -> web.Response:
    return _static_response("chat.html")


async def team_page(request: web.Request) -> web.Response:
    """The team group with its forum topics, as an agent's Telegram app shows it."""
    return _static_response("team.html")


async def chat_static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _CONTENT_TYPES or name.endswith(".html"):
        raise web.HTTPNotFound()
    return _static_response(name)


async def no_favicon(request: web.Request) -> web.Response:
    # Browsers ask for it on every page; answering 204 keeps their consoles clean.
    return web.Response(status=204)


def add_chat_page_routes(app: web.Application) -> None:
    app.router.add_get("/chat", chat_page)
    app.router.add_get("/team", team_page)
    app.router.add_get("/favicon.ico", no_favicon)
    app.router.add_get("/chat/static/{name}", chat_static)
