"""Admin pages: the agents (end their sessions, disable, enable), the provider events
that were signed but could not be read (`payrescue.billing.rejected`) and the gateway alarm.

While rejected events nobody has looked at exist, every console page shows admins a banner
linking to their list; opening the list marks them seen. While an alarm holds reminders
(`payrescue.billing.alerts`), a banner says so, with the button that releases them.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from handoff.auth import admin_required, request_agent
from handoff.render import render
from payrescue import agents, sessions
from payrescue.billing import alerts, rejected
from payrescue.db.models import Agent, Alert
from payrescue.i18n import LANGUAGES, _
from payrescue.keys import BUS, CLOCK, SESSIONMAKER, SETTINGS

UNSEEN_REJECTED = web.RequestKey("console_unseen_rejected", int)
ACTIVE_ALERTS = web.RequestKey("console_active_alerts", list)


@web.middleware
async def rejected_banner(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    """Counts the unseen rejected events for an admin's pages (shown by layout.html)."""
    from handoff.auth import load_agent
    from handoff.security import is_console

    if request.method == "GET" and is_console(request) and "/static/" not in request.path:
        agent = await load_agent(request)
        if agent is not None and agent.role == "admin":
            async with request.config_dict[SESSIONMAKER]() as db:
                request[UNSEEN_REJECTED] = await rejected.unseen_count(db)
                request[ACTIVE_ALERTS] = list(await db.scalars(
                    select(Alert).where(Alert.released_at.is_(None)).order_by(Alert.id)))
    return await handler(request)


async def _team_page(request: web.Request, error: str | None = None,
                     status: int = 200, link: tuple[str, str] | None = None) -> web.Response:
    async with request.config_dict[SESSIONMAKER]() as db:
        team = (await db.scalars(select(Agent).order_by(Agent.name, Agent.id))).all()
        open_sessions = await sessions.counts(db)
    return render(request, "team.html", {"team": team, "open_sessions": open_sessions,
                                         "error": error, "link": link, "roles": agents.ROLES,
                                         "languages": LANGUAGES}, status=status)


def _link_for(request: web.Request, agent: Agent) -> tuple[str, str]:
    """Who gets it and the full set-password link, shown once to the admin to pass on."""
    settings = request.config_dict[SETTINGS]
    path = agents.password_link(settings.secret, agent.id, request.config_dict[CLOCK].now())
    return agent.name, settings.public_url(path)


@admin_required
async def invite_agent(request: web.Request) -> web.StreamResponse:
    form = {key: str(value).strip() for key, value in (await request.post()).items()}
    if not form.get("name") or "@" not in form.get("email", "") \
            or form.get("role") not in agents.ROLES or form.get("language") not in LANGUAGES:
        return await _team_page(request, _("Name, a valid e-mail address, role and language "
                                           "are required."), 400)
    try:
        async with request.config_dict[SESSIONMAKER]() as db, db.begin():
            agent = await agents.invite(db, email=form["email"][:320], name=form["name"][:200],
                                        role=form["role"], language=form["language"],
                                        now=request.config_dict[CLOCK].now())
    except IntegrityError:
        return await _team_page(request, _("An account with this e-mail address exists."), 409)
    return await _team_page(request, link=_link_for(request, agent))


@admin_required
async def edit_agent(request: web.Request) -> web.StreamResponse:
    form = {key: str(value).strip() for key, value in (await request.post()).items()}
    limit = form.get("max_open", "")
    if form.get("role") not in agents.ROLES or form.get("language") not in LANGUAGES \
            or not limit.isdigit() or not 1 <= int(limit) <= agents.MAX_OPEN_LIMIT:
        return await _team_page(request, _("Choose a role, a language and a limit of 1 to "
                                           "50 open conversations."), 400)
    admin = request_agent(request)
    assert admin is not None  # noqa: S101 - admin_required ran
    agent_id = int(request.match_info["agent_id"])  # bounded by the edge
    if agent_id == admin.id and form["role"] != "admin":
        return await _team_page(request, _("You cannot take away your own admin role."), 409)
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        agent = await db.get(Agent, agent_id)
        if agent is None:
            raise web.HTTPNotFound()
        agent.role, agent.language, agent.max_open = form["role"], form["language"], int(limit)
    raise web.HTTPSeeOther("/console/team")


@admin_required
async def reset_agent_password(request: web.Request) -> web.StreamResponse:
    admin = request_agent(request)
    assert admin is not None  # noqa: S101 - admin_required ran
    agent_id = int(request.match_info["agent_id"])  # bounded by the edge
    if agent_id == admin.id:  # knowing it, they change it on the password page instead
        return await _team_page(request, _("Change your own password on the password page."),
                                409)
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        agent = await db.get(Agent, agent_id)
        if agent is None:
            raise web.HTTPNotFound()
        await agents.reset_password(db, agent)
    return await _team_page(request, link=_link_for(request, agent))


async def set_password_page(request: web.Request) -> web.StreamResponse:
    """Public: the invited (or reset) person chooses their password, once."""
    settings, now = request.config_dict[SETTINGS], request.config_dict[CLOCK].now()
    token = request.match_info["token"]
    error = None
    if request.method == "POST":
        form = await request.post()
        password, again = str(form.get("new", "")), str(form.get("again", ""))
        problem = agents.password_problem(password)
        if problem or password != again:
            error = _("The two passwords differ.") if not problem else \
                _("Please choose a password of at least 10 characters.")
        else:
            try:
                async with request.config_dict[SESSIONMAKER]() as db, db.begin():
                    await agents.set_password_by_link(db, settings.secret, token, password, now)
            except (agents.PasswordLinkError, IntegrityError):
                return _link_refused(request)
            raise web.HTTPSeeOther("/console/login?password=set")
    async with request.config_dict[SESSIONMAKER]() as db:
        try:
            agent, _token_id = await agents.agent_for_link(db, settings.secret, token, now)
        except agents.PasswordLinkError:
            return _link_refused(request)
    return render(request, "set_password.html", {"name": agent.name, "error": error},
                  status=400 if error else 200)


def _link_refused(request: web.Request) -> web.Response:
    return render(request, "set_password.html", {"refused": True}, status=410)


@admin_required
async def team_page(request: web.Request) -> web.StreamResponse:
    return await _team_page(request)


async def _change(request: web.Request, action: str) -> web.StreamResponse:
    admin = request_agent(request)
    assert admin is not None  # noqa: S101 - admin_required ran
    agent_id = int(request.match_info["agent_id"])  # bounded by the edge
    if action == "disable" and agent_id == admin.id:
        return await _team_page(request, _("You cannot disable your own account."), 409)
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        agent = await db.get(Agent, agent_id)
        if agent is None:
            raise web.HTTPNotFound()
        if action == "sign-out":
            await sessions.end_all(db, agent.id)
        else:
            await agents.set_disabled(db, agent.email, now if action == "disable" else None)
    if agent_id == admin.id:  # signed out everywhere, this browser included
        raise web.HTTPSeeOther("/console/login")
    raise web.HTTPSeeOther("/console/team")


@admin_required
async def sign_out_agent(request: web.Request) -> web.StreamResponse:
    return await _change(request, "sign-out")


@admin_required
async def disable_agent(request: web.Request) -> web.StreamResponse:
    return await _change(request, "disable")


@admin_required
async def enable_agent(request: web.Request) -> web.StreamResponse:
    return await _change(request, "enable")


@admin_required
async def rejected_page(request: web.Request) -> web.StreamResponse:
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        rows = await rejected.latest(db)
        await rejected.mark_seen(db, now)
    request[UNSEEN_REJECTED] = 0  # seen now: no banner on this very page
    return render(request, "rejected.html", {"rows": rows})


@admin_required
async def release_alert(request: web.Request) -> web.StreamResponse:
    """The fault is fixed: the held reminders may go out again."""
    admin = request_agent(request)
    assert admin is not None  # noqa: S101 - admin_required ran
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        try:
            released = await alerts.release_alert(
                db, int(request.match_info["alert_id"]), f"agent {admin.id}", now)
        except LookupError:
            raise web.HTTPNotFound() from None
    for event in released.events:
        await request.config_dict[BUS].publish(event)
    raise web.HTTPSeeOther("/console/")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console/team", team_page),
        web.post("/console/team/{agent_id}/sign-out", sign_out_agent),
        web.post("/console/team/{agent_id}/disable", disable_agent),
        web.post("/console/team/{agent_id}/enable", enable_agent),
        web.post("/console/team/invite", invite_agent),
        web.post("/console/team/{agent_id}/edit", edit_agent),
        web.post("/console/team/{agent_id}/reset-password", reset_agent_password),
        web.get("/console/set-password/{token}", set_password_page),
        web.post("/console/set-password/{token}", set_password_page),
        web.get("/console/rejected-events", rejected_page),
        web.post("/console/alerts/{alert_id}/release", release_alert),
    ]
