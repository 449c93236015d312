"""CSRF protection: one random token per session, required on every state-changing request.

Forms carry it as `csrf_token`, scripts as the `X-CSRF-Token` header (read from the page's
`<meta name="csrf-token">`). A request without a matching token is refused with 403.
"""

from __future__ import annotations

import secrets

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_session import get_session

from handoff.security import is_console
from payrescue.edge import same_secret
from payrescue.i18n import _

SESSION_FIELD = "csrf"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_REQUEST_TOKEN = web.RequestKey("console_csrf_token", str)


def csrf_token(request: web.Request) -> str:
    """The session's token (made by the middleware for every console request)."""
    return request.get(_REQUEST_TOKEN, "")


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_console(request):
        return await handler(request)
    session = await get_session(request)
    expected = session.get(SESSION_FIELD)
    if request.method not in SAFE_METHODS:
        given = request.headers.get(HEADER) or await _form_token(request)
        if not expected or not given or not same_secret(given, expected):
            raise web.HTTPForbidden(text=_(
                "This form has expired or did not come from the console. Please reload the "
                "page and try again."))
    if not expected:
        expected = session[SESSION_FIELD] = secrets.token_urlsafe(32)
    request[_REQUEST_TOKEN] = expected
    return await handler(request)


async def _form_token(request: web.Request) -> str:
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return ""
    value = (await request.post()).get(FORM_FIELD, "")
    return value if isinstance(value, str) else ""
