"""Security headers on every response the service gives, errors and redirects included.

Two Content-Security-Policies: the console's allows nothing but this server (no inline
script or style; every asset lives under /console/static); the member and demo pages
(`/u/…`, `/demo`) bring their small stylesheet inline and have no script at all, so theirs
allows inline style and nothing else. Both deny framing. Behind an https public URL every
answer also carries Strict-Transport-Security, so browsers never fall back to http.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from payrescue.keys import SETTINGS

CONSOLE_PREFIX = "/console"
CONSOLE_CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
PAGE_CSP = "; ".join([
    "default-src 'none'",
    "style-src 'unsafe-inline'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
_COMMON = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
CONSOLE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, **_COMMON}
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, **_COMMON}
HSTS = "max-age=31536000"


def is_console(request: web.Request) -> bool:
    return request.path == CONSOLE_PREFIX or request.path.startswith(CONSOLE_PREFIX + "/")


def setup_headers(app: web.Application) -> None:
    app.middlewares.append(security_headers)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and errors get the headers too
        _add(request, exc)
        raise
    if not response.prepared:  # a live stream has sent its headers already (with these)
        _add(request, response)
    return response


def _add(request: web.Request, response: web.StreamResponse) -> None:
    console = is_console(request)
    for name, value in (CONSOLE_HEADERS if console else PAGE_HEADERS).items():
        response.headers.setdefault(name, value)  # a page's own stricter choice wins
    if console:
        response.headers.setdefault("Cache-Control", "no-store")
    if str(request.config_dict[SETTINGS].public_base_url).startswith("https://"):
        response.headers.setdefault("Strict-Transport-Security", HSTS)
