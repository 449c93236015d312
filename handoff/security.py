"""Security headers for every console response.

The Content-Security-Policy allows nothing but this server: no inline script, no inline
style attribute injection, no framing. Every asset lives under /console/static.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

CONSOLE_PREFIX = "/console"
CSP = "; ".join([
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
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def is_console(request: web.Request) -> bool:
    return request.path == CONSOLE_PREFIX or request.path.startswith(CONSOLE_PREFIX + "/")


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_console(request):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and errors get the headers too
        exc.headers.update(HEADERS)
        raise
    if not response.prepared:  # a live stream has sent its headers already
        response.headers.update(HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
    return response
