"""The member page (everything about one member: profile, subscriptions, cases, channels,
every conversation, the whole timeline) and the console's search."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from handoff.auth import login_required
from handoff.render import render
from payrescue import timeline
from payrescue.db.models import Agent, Conversation, Member, RecoveryCase, Subscription
from payrescue.edge import bounded_id
from payrescue.keys import SESSIONMAKER
from payrescue.search import MAX_QUERY, search


def _optional_id(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    value = bounded_id(raw)
    if value is None:
        raise web.HTTPBadRequest(text=f"{name} must be an id")
    return value


@login_required
async def member_page(request: web.Request) -> web.StreamResponse:
    member_id = bounded_id(request.match_info["member_id"])
    before = _optional_id(request, "before")
    around = _optional_id(request, "around")
    if around is not None:  # a search result: the page that holds the line, centred
        before = around + timeline.PAGE // 2
    async with request.config_dict[SESSIONMAKER]() as db:
        member = await db.get(Member, member_id) if member_id else None
        if member is None:
            raise web.HTTPNotFound()
        lines = await timeline.member_timeline(db, member.id, before_id=before)
        subscriptions = (await db.scalars(select(Subscription).where(
            Subscription.member_id == member.id).order_by(Subscription.id.desc()))).all()
        cases = (await db.scalars(select(RecoveryCase).where(
            RecoveryCase.member_id == member.id).order_by(RecoveryCase.opened_at.desc()))).all()
        conversations = (await db.execute(
            select(Conversation, Agent.name).outerjoin(
                Agent, Agent.id == Conversation.assigned_agent_id)
            .where(Conversation.member_id == member.id)
            .order_by(Conversation.id.desc()))).all()
    return render(request, "member.html", {
        "member": member, "lines": lines, "subscriptions": subscriptions, "cases": cases,
        "conversations": conversations, "around": around,
        "earlier": lines[0].message.id if len(lines) >= timeline.PAGE else None,
        "last_id": lines[-1].message.id if lines else 0,
    })


@login_required
async def search_page(request: web.Request) -> web.StreamResponse:
    query = request.query.get("q", "").strip()[:MAX_QUERY]
    async with request.config_dict[SESSIONMAKER]() as db:
        found = await search(db, query)
    return render(request, "search.html", {"q": query, "found": found})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console/members/{member_id}", member_page),
        web.get("/console/search", search_page),
    ]
