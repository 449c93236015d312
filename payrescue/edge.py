"""What every request meets before a handler: bounded input, and a 503 for a lost database.

Handlers trust what passes here, so a malformed request is answered 4xx in one place
instead of failing somewhere deep (a 500 with a traceback):

- path ids (`{…_id}`) are integers our INTEGER primary keys hold, else 404;
- query strings and form fields hold no NUL (PostgreSQL refuses it in text) and forms must
  parse (a broken multipart or a non-UTF-8 body is 400); the form is read here once and
  aiohttp keeps it for the handler;
- a machine endpoint's JSON body nests at most `MAX_JSON_DEPTH` deep (Python's parser
  raises RecursionError, a 500, on a body nested 100,000 deep);
- a database that is away answers 503 and is logged once (an `OutageLog`), not per request.

Bodies of the machine endpoints (webhooks, the events API, Telegram) are read raw by their
handlers, which check them themselves: reading them as a form here would consume them
(the raw bytes read here are kept by aiohttp for the handler).

`same_secret` is the one comparison of secrets: constant-time over bytes, since
`hmac.compare_digest` raises TypeError on a `str` with non-ASCII characters.
"""

from __future__ import annotations

import hmac
import logging
import re

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from payrescue.outage import OutageLog

log = logging.getLogger(__name__)

MAX_ID = 2**31 - 1  # our primary keys are INTEGER: 32 bits on PostgreSQL
RAW_BODY_PREFIXES = ("/webhooks/", "/api/", "/telegram/")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout, ConnectionRefusedError)
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled: linear and fast
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
OUTAGE = web.AppKey("edge_outage", OutageLog)


def same_secret(given: str | bytes | None, expected: str | bytes) -> bool:
    """Constant-time equality of two secrets, whatever characters `given` holds."""
    if given is None:
        return False
    return hmac.compare_digest(_bytes(given), _bytes(expected))


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def bounded_id(text: str) -> int | None:
    """The id a path segment names, or None when it is no id we could have stored."""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def has_nul(text: str) -> bool:
    return "\x00" in text


def setup_edge(app: web.Application) -> None:
    app[OUTAGE] = OutageLog(log, down="database unavailable: requests are answered 503",
                            back="database back: %d requests were answered 503 meanwhile")
    app.middlewares.append(edge_middleware)


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    _check_path(request)
    _check_query(request)
    if request.method == "POST":
        if request.path.startswith(RAW_BODY_PREFIXES):
            refusal = await _check_raw_body(request)
            if refusal is not None:
                return refusal
        else:
            await _check_form(request)
    outage = request.app[OUTAGE]
    try:
        response = await handler(request)
    except _UNAVAILABLE as exc:
        outage.failed(exc, path=_route_of(request))
        raise web.HTTPServiceUnavailable(text="The database is unavailable; please try "
                                              "again in a moment.") from None
    except DataError as exc:  # a value the edge let through but the database refuses
        log.warning("request refused by the database", extra={
            "route": _route_of(request), "error": type(exc.orig).__name__})
        raise web.HTTPBadRequest(text="The request holds a value that cannot be stored.") \
            from None
    outage.succeeded()
    return response


def _route_of(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


def _check_path(request: web.Request) -> None:
    for name, value in request.match_info.items():
        if name.endswith("_id") and bounded_id(value) is None:
            raise web.HTTPNotFound()


def _check_query(request: web.Request) -> None:
    try:
        query = request.query
    except (ValueError, UnicodeError):
        raise web.HTTPBadRequest(text="The query string cannot be read.") from None
    if any(has_nul(key) or has_nul(value) for key, value in query.items()):
        raise web.HTTPBadRequest(text="The query string holds a NUL character.")


async def _check_form(request: web.Request) -> None:
    if request.content_type not in FORM_TYPES:
        return
    try:
        form = await request.post()
    except (ValueError, LookupError, HttpProcessingError, AssertionError):
        # a broken multipart, an unknown charset, bytes that are not UTF-8
        raise web.HTTPBadRequest(text="The form cannot be read.") from None
    for key, value in form.items():
        if has_nul(key) or (isinstance(value, str) and has_nul(value)):
            raise web.HTTPBadRequest(text="The form holds a NUL character.")


async def _check_raw_body(request: web.Request) -> web.Response | None:
    """A refusal in the machine endpoints' own JSON shape, or None to go on."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return web.json_response({"error": "body larger than 1 MiB"}, status=413)
    if json_depth(body) > MAX_JSON_DEPTH:
        return web.json_response(
            {"error": f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels"},
            status=400)
    return None


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets in strings do not
    count); a text that is no JSON gets some number, and its parser refuses it later."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for char in brackets:
        depth += 1 if char in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                break
    return deepest
