"""CSRF protection: one random token per session, required on every state-changing request,
and a same-origin check of the browser's `Origin` / `Sec-Fetch-Site` headers.

Forms carry it as `csrf_token`, scripts as the `X-CSRF-Token` header (read from the page's
`<meta name="csrf-token">`). A request without a matching token is refused with 403.
"""

from __future__ import annotations

import secrets

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_session import get_session
from yarl import URL

from handoff.security import is_console
from payrescue.edge import same_secret
from payrescue.i18n import _
from payrescue.keys import SETTINGS

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
        if not _same_origin(request):
            raise web.HTTPForbidden(text=_(
                "This form has expired or did not come from the console. Please reload the "
                "page and try again."))
        given = request.headers.get(HEADER) or await _form_token(request)
        if not expected or not given or not same_secret(given, expected):
            raise web.HTTPForbidden(text=_(
                "This form has expired or did not come from the console. Please reload the "
                "page and try again."))
    if not expected:
        expected = session[SESSION_FIELD] = secrets.token_urlsafe(32)
    request[_REQUEST_TOKEN] = expected
    return await handler(request)


def _same_origin(request: web.Request) -> bool:
    """A browser names the page that sent a POST in `Origin` (and `Sec-Fetch-Site`); one
    from another site is refused even with a token. Clients that send neither rely on the
    token alone."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    public = URL(str(request.config_dict[SETTINGS].public_base_url))
    allowed = {str(public.origin()),
               f"{request.scheme}://{request.host}"}
    return origin in allowed


async def _form_token(request: web.Request) -> str:
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return ""
    value = (await request.post()).get(FORM_FIELD, "")
    return value if isinstance(value, str) else ""
