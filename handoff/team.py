"""Admin pages: the agents (end their sessions, disable, enable), the provider events
that were signed but could not be read (`payrescue.billing.rejected`) and the gateway alarm.

While rejected events nobody has looked at exist, every console page shows admins a banner
linking to their list; opening the list marks them seen. While an alarm holds reminders
(`payrescue.billing.alerts`), a banner says so, with the button that releases them.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from handoff.auth import admin_required, request_agent
from handoff.render import render
from payrescue import agents, sessions
from payrescue.billing import alerts, rejected
from payrescue.db.models import Agent, Alert
from payrescue.i18n import _
from payrescue.keys import BUS, CLOCK, SESSIONMAKER

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
                     status: int = 200) -> web.Response:
    async with request.config_dict[SESSIONMAKER]() as db:
        team = (await db.scalars(select(Agent).order_by(Agent.name, Agent.id))).all()
        open_sessions = await sessions.counts(db)
    return render(request, "team.html", {"team": team, "open_sessions": open_sessions,
                                         "error": error}, status=status)


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
        web.get("/console/rejected-events", rejected_page),
        web.post("/console/alerts/{alert_id}/release", release_alert),
    ]
