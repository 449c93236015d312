"""Log-in for agents and admins: encrypted-cookie sessions, lock-out, log-out, password change.

Reuse in other console pages:

    from handoff.auth import login_required, admin_required, request_agent

    @login_required          # or @admin_required: an agent gets 403
    async def page(request): agent = request_agent(request); ...

Pages without a session are redirected to the log-in page; streams, APIs and every
non-GET request get 401 instead.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from urllib.parse import quote

from aiohttp import web
from aiohttp_session import get_session, new_session
from aiohttp_session import setup as setup_sessions
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from payrescue.agents import hash_password, password_matches, password_problem
from payrescue.config import Settings
from payrescue.db.models import Agent
from payrescue.i18n import _, choose_language, use_language
from payrescue.keys import CLOCK, SESSIONMAKER, SETTINGS

MAX_FAILED_LOGINS = 5
LOCK_MINUTES = 15
SESSION_HOURS = 12
COOKIE_NAME = "payrescue_console"
_AGENT = web.RequestKey("console_agent", object)
# verified when an e-mail is unknown, so a wrong address takes as long as a wrong password
_DUMMY_HASH = hash_password("not-a-real-password-only-for-timing")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_auth(app: web.Application, settings: Settings) -> None:
    # A key of its own, derived from the service secret, so a session cookie can never be
    # confused with any other signed value.
    key = hashlib.sha256(b"payrescue-console-session:" + settings.secret).digest()
    setup_sessions(app, EncryptedCookieStorage(
        key,  # 32 raw bytes; the storage makes the Fernet key of them
        cookie_name=COOKIE_NAME,
        max_age=SESSION_HOURS * 3600,
        secure=str(settings.public_base_url).startswith("https"),
        httponly=True,
        samesite="Strict",
        path="/console",
    ))


def password_fingerprint(agent: Agent) -> str:
    """Changes with the password, so a password change ends every other session."""
    return hashlib.sha256(agent.password_hash.encode()).hexdigest()[:24]


def request_agent(request: web.Request) -> Agent | None:
    """The signed-in agent of this request (set by `load_agent`), or None."""
    return request.get(_AGENT)


async def load_agent(request: web.Request) -> Agent | None:
    if _AGENT in request:
        return request[_AGENT]
    session = await get_session(request)
    agent = None
    agent_id = session.get("agent_id")
    if isinstance(agent_id, int):
        async with request.config_dict[SESSIONMAKER]() as db:
            agent = await db.get(Agent, agent_id)
        if agent is None or not hmac.compare_digest(
            str(session.get("pw", "")), password_fingerprint(agent)
        ):
            session.pop("agent_id", None)
            agent = None
    request[_AGENT] = agent
    return agent


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
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")))
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        agent, problem = await check_login(db, email, password, now)
        if agent is not None:
            fingerprint = password_fingerprint(agent)
            agent_id = agent.id
    if problem:
        return render(request, "login.html", {"error": problem, "email": email,
                                              "next": target}, status=401)
    session = await new_session(request)  # a fresh session id: no session fixation
    session["agent_id"] = agent_id
    session["pw"] = fingerprint
    request.pop(_AGENT, None)
    raise web.HTTPSeeOther(target)


async def check_login(db, email: str, password: str, now: datetime):  # noqa: ANN001, ANN201
    """(agent, None) when the password is right, else (None, a message for the person)."""
    from payrescue.agents import find_agent

    agent = await find_agent(db, email)
    if agent is None:
        password_matches(_DUMMY_HASH, password)
        return None, _("E-mail address or password is wrong.")
    if agent.locked_until is not None and agent.locked_until > now:
        minutes = max(1, int((agent.locked_until - now).total_seconds() // 60) + 1)
        return None, _("Too many failed attempts. This account is locked for "
                       "%(minutes)s more minutes.") % {"minutes": minutes}
    if not password_matches(agent.password_hash, password):
        agent.failed_logins += 1
        if agent.failed_logins >= MAX_FAILED_LOGINS:
            agent.failed_logins = 0
            agent.locked_until = now + timedelta(minutes=LOCK_MINUTES)
            return None, _("Too many failed attempts. This account is locked for "
                           "%(minutes)s more minutes.") % {"minutes": LOCK_MINUTES}
        return None, _("E-mail address or password is wrong.")
    agent.failed_logins = 0
    agent.locked_until = None
    return agent, None


async def logout(request: web.Request) -> web.StreamResponse:
    session = await get_session(request)
    session.invalidate()
    raise web.HTTPSeeOther("/console/login")


@login_required
async def password_page(request: web.Request) -> web.StreamResponse:
    from handoff.render import render

    return render(request, "password.html", {})


@login_required
async def password_submit(request: web.Request) -> web.StreamResponse:
    from handoff.csrf import csrf_token
    from handoff.render import render

    form = await request.post()
    current, new, again = (str(form.get(k, "")) for k in ("current", "new", "again"))
    agent = request_agent(request)
    assert agent is not None  # noqa: S101 - login_required ran
    error = None
    if not password_matches(agent.password_hash, current):
        error = _("The current password is wrong.")
    elif new != again:
        error = _("The two new passwords differ.")
    elif password_problem(new):
        error = _("The new password needs at least 10 characters.")
    if error:
        return render(request, "password.html", {"error": error}, status=400)
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        stored = await db.get(Agent, agent.id)
        assert stored is not None  # noqa: S101 - the session's agent exists
        stored.password_hash = hash_password(new)
        fingerprint = password_fingerprint(stored)
    session = await new_session(request)  # other sessions end: their fingerprint is stale
    session["agent_id"] = agent.id
    session["pw"] = fingerprint
    session["csrf"] = csrf_token(request)  # this page's forms stay valid
    return render(request, "password.html", {"done": True})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console/login", login_page),
        web.post("/console/login", login_submit),
        web.post("/console/logout", logout),
        web.get("/console/password", password_page),
        web.post("/console/password", password_submit),
    ]
