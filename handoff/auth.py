"""Log-in for agents and admins: server-side sessions, lock-out, rate limit, log-out,
password change, "sign out everywhere".

Reuse in other console pages:

    from handoff.auth import login_required, admin_required, request_agent

    @login_required          # or @admin_required: an agent gets 403
    async def page(request): agent = request_agent(request); ...

Pages without a session are redirected to the log-in page; streams, APIs and every
non-GET request get 401 instead.

The encrypted cookie carries the CSRF token and the session token; whether the token still
signs anyone in is decided by `payrescue.sessions` in the database, so ending a session
there ends it for every copy of the cookie. Every failed log-in gets the same answer,
whether the address is unknown, the account locked or disabled, or the password wrong; each
costs one password verification (in a worker thread), so timing tells nothing either.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web
from aiohttp_session import get_session, new_session
from aiohttp_session import setup as setup_sessions
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from handoff.limits import LOGIN_LIMITER, LoginLimiter
from payrescue import agents, sessions
from payrescue.config import Settings
from payrescue.db.models import Agent
from payrescue.i18n import _, choose_language, use_language
from payrescue.keys import CLOCK, SESSIONMAKER, SETTINGS

COOKIE_NAME = "payrescue_console"
SESSION_ID_FIELD = "sid"
_AGENT = web.RequestKey("console_agent", object)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_auth(app: web.Application, settings: Settings) -> None:
    # A key of its own, derived from the service secret, so a session cookie can never be
    # confused with any other signed value.
    key = hashlib.sha256(b"payrescue-console-session:" + settings.secret).digest()
    setup_sessions(app, EncryptedCookieStorage(
        key,  # 32 raw bytes; the storage makes the Fernet key of them
        cookie_name=COOKIE_NAME,
        max_age=settings.session_hours * 3600,
        secure=str(settings.public_base_url).startswith("https"),
        httponly=True,
        samesite="Strict",
        path="/console",
    ))
    app[LOGIN_LIMITER] = LoginLimiter()


def request_agent(request: web.Request) -> Agent | None:
    """The signed-in agent of this request (set by `load_agent`), or None."""
    return request.get(_AGENT)


async def load_agent(request: web.Request) -> Agent | None:
    if _AGENT in request:
        return request[_AGENT]
    cookie = await get_session(request)
    agent = None
    token = cookie.get(SESSION_ID_FIELD)
    if token is not None:
        now = request.config_dict[CLOCK].now()
        async with request.config_dict[SESSIONMAKER]() as db, db.begin():
            agent = await sessions.agent_of(db, token, now, request.config_dict[SETTINGS])
        if agent is None:
            cookie.pop(SESSION_ID_FIELD, None)
    request[_AGENT] = agent
    return agent


async def still_signed_in(request: web.Request) -> bool:
    """Asked again by a live stream now and then: a session ended (log-out, disable, …)
    must not keep receiving a conversation."""
    request.pop(_AGENT, None)
    return await load_agent(request) is not None


def _wants_page(request: web.Request) -> bool:
    return (
        request.method in ("GET", "HEAD")
        and "/stream/" not in request.path
        and "/api/" not in request.path
        and "text/event-stream" not in request.headers.get("Accept", "")
    )


def login_required(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        if await load_agent(request) is None:
            if _wants_page(request):
                raise web.HTTPSeeOther(f"/console/login?next={quote(request.path)}")
            raise web.HTTPUnauthorized(text=_("Please sign in."))
        return await handler(request)

    return wrapper


def admin_required(handler: Handler) -> Handler:
    @login_required
    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        agent = request_agent(request)
        if agent is None or agent.role != "admin":
            raise web.HTTPForbidden(text=_("This page is for admins only."))
        return await handler(request)

    return wrapper


@web.middleware
async def language_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Console texts in the agent's language; before log-in, the browser's."""
    from handoff.security import is_console

    if not is_console(request) or request.path.startswith("/console/static/"):
        return await handler(request)  # stylesheets and scripts need no agent
    agent = await load_agent(request)
    language = agent.language if agent else choose_language(
        None, request.headers.get("Accept-Language", ""),
        request.config_dict[SETTINGS].default_language,
    )
    with use_language(language):
        return await handler(request)


def _safe_next(value: str | None) -> str:
    # only our own pages: never an absolute URL someone slipped into the link
    if value and value.startswith("/console/") and not value.startswith("//"):
        return value
    return "/console/queue"


async def login_page(request: web.Request) -> web.StreamResponse:
    from handoff.render import render

    if await load_agent(request) is not None:
        raise web.HTTPSeeOther("/console/queue")
    return render(request, "login.html", {"next": _safe_next(request.query.get("next"))})


async def login_submit(request: web.Request) -> web.StreamResponse:
    from handoff.render import render

    form = await request.post()
    email, password = str(form.get("email", ""))[:320], str(form.get("password", ""))[:1024]
    target = _safe_next(str(form.get("next", "")))
    now = request.config_dict[CLOCK].now()
    if not request.app[LOGIN_LIMITER].allow(request.remote or "", agents.normalise_email(email),
                                            now):
        return render(request, "login.html", {
            "error": _("Too many sign-in attempts. Please wait a few minutes and try again."),
            "email": email, "next": target}, status=429)
    agent_id = await check_login(request, email, password)
    if agent_id is None:
        return render(request, "login.html", {
            "error": _("E-mail address or password is wrong."), "email": email,
            "next": target}, status=401)
    await _start_session(request, agent_id)
    raise web.HTTPSeeOther(target)


async def check_login(request: web.Request, email: str, password: str) -> int | None:
    """The agent's id when the password is right and the account may sign in, else None."""
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        attempt = await agents.charge_login_attempt(db, email, now)
    # committed before the slow check, so parallel guesses see each other's tries
    right = await agents.password_matches_async(
        attempt.password_hash if attempt else None, password)
    if attempt is None or not right:
        return None
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        await agents.login_succeeded(db, attempt.agent_id)
    return attempt.agent_id


async def _start_session(request: web.Request, agent_id: int, *, keep_csrf: str = "") -> None:
    from handoff.csrf import SESSION_FIELD

    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        token = await sessions.start(db, agent_id, request.config_dict[CLOCK].now(),
                                     request.config_dict[SETTINGS])
    cookie = await new_session(request)  # a fresh cookie: no session fixation
    cookie[SESSION_ID_FIELD] = token
    if keep_csrf:
        cookie[SESSION_FIELD] = keep_csrf
    request.pop(_AGENT, None)


async def logout(request: web.Request) -> web.StreamResponse:
    cookie = await get_session(request)
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        await sessions.end(db, cookie.get(SESSION_ID_FIELD))
    cookie.invalidate()
    raise web.HTTPSeeOther("/console/login")


@login_required
async def sign_out_everywhere(request: web.Request) -> web.StreamResponse:
    agent = request_agent(request)
    assert agent is not None  # noqa: S101 - login_required ran
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        await sessions.end_all(db, agent.id)
    (await get_session(request)).invalidate()
    raise web.HTTPSeeOther("/console/login")


@login_required
async def password_page(request: web.Request) -> web.StreamResponse:
    from handoff.render import render

    return render(request, "password.html", {})


@login_required
async def telegram_link(request: web.Request) -> web.StreamResponse:
    """A one-time link that ties the agent's Telegram account to this console account, so
    they can claim and answer in the team group (`payrescue.teamgroup`)."""
    from handoff.render import render
    from payrescue.members import deep_link
    from payrescue.teamgroup import agent_link_payload

    agent = request_agent(request)
    assert agent is not None  # noqa: S101 - login_required ran
    settings = request.config_dict[SETTINGS]
    payload = agent_link_payload(settings, agent, request.config_dict[CLOCK].now())
    return render(request, "password.html", {
        "telegram_command": f"/start {payload}",
        "telegram_url": deep_link(settings.bot_username, payload) if settings.bot_username
        else None,
        "telegram_minutes": settings.team_code_minutes,
    })


@login_required
async def password_submit(request: web.Request) -> web.StreamResponse:
    from handoff.csrf import csrf_token
    from handoff.render import render

    form = await request.post()
    current, new, again = (str(form.get(k, ""))[:1024] for k in ("current", "new", "again"))
    agent = request_agent(request)
    assert agent is not None  # noqa: S101 - login_required ran
    error = None
    if not await agents.password_matches_async(agent.password_hash, current):
        error = _("The current password is wrong.")
    elif new != again:
        error = _("The two new passwords differ.")
    elif agents.password_problem(new):
        error = _("The new password needs at least 10 characters.")
    if error:
        return render(request, "password.html", {"error": error}, status=400)
    new_hash = await agents.hash_password_async(new)
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        stored = await db.get(Agent, agent.id)
        assert stored is not None  # noqa: S101 - the session's agent exists
        stored.password_hash = new_hash
        await sessions.end_all(db, agent.id)  # every other browser signs in again
    await _start_session(request, agent.id, keep_csrf=csrf_token(request))
    return render(request, "password.html", {"done": True})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console/login", login_page),
        web.post("/console/login", login_submit),
        web.post("/console/logout", logout),
        web.post("/console/sign-out-everywhere", sign_out_everywhere),
        web.get("/console/password", password_page),
        web.post("/console/password", password_submit),
        web.post("/console/telegram-link", telegram_link),
    ]
