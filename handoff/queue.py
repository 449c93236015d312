"""The queue: waiting conversations by priority, then waiting time; plus mine, open, resolved."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import Select, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.auth import login_required, request_agent
from handoff.render import render
from payrescue import handoff_rules, timeline
from payrescue.conversations import ASSIGNED, BOT, RESOLVED, WAITING
from payrescue.db.models import Agent, Conversation, Member, RecoveryCase
from payrescue.i18n import _
from payrescue.keys import CLOCK, SESSIONMAKER, SETTINGS

VIEWS = ("waiting", "mine", "open", "resolved", "bot", "all")  # "bot": handed back, cancelled
PAGE_SIZE = 100


@dataclass(frozen=True)
class QueueRow:
    conversation_id: int
    status: str
    member_name: str
    language: str
    reasons: list[str]
    priority: int
    amount_minor: int | None
    currency: str | None
    waited_seconds: float
    overdue: bool
    agent_name: str | None
    snoozed: bool
    unread: bool = False  # member lines its assigned agent has not had on screen


def _filtered(query: Select, view: str, agent_id: int, search: str) -> Select:
    if view == "waiting":
        query = query.where(Conversation.status == WAITING)
    elif view == "mine":
        query = query.where(
            Conversation.status == ASSIGNED, Conversation.assigned_agent_id == agent_id
        )
    elif view == "open":
        query = query.where(Conversation.status.in_((WAITING, ASSIGNED)))
    elif view == "resolved":
        query = query.where(Conversation.status == RESOLVED)
    elif view == "bot":
        query = query.where(Conversation.status == BOT)
    if search:  # % and _ typed by the agent are plain characters, not wildcards
        needle = search.lower()
        query = query.where(or_(func.lower(Member.name).contains(needle, autoescape=True),
                                func.lower(Member.email).contains(needle, autoescape=True)))
    return query


async def load_queue(
    db: AsyncSession, view: str, agent_id: int, search: str, now: datetime,
    first_response: timedelta,
) -> tuple[list[QueueRow], int]:
    """One page of the view and the number of conversations in it."""
    base = select(Conversation.id).join(Member, Member.id == Conversation.member_id)
    total = await db.scalar(
        select(func.count()).select_from(_filtered(base, view, agent_id, search).subquery())
    ) or 0
    query = _filtered(
        select(Conversation, Member.name, Member.language, RecoveryCase.amount_minor,
               RecoveryCase.currency, Agent.name.label("agent_name"),
               timeline.newest_member_line())
        .join(Member, Member.id == Conversation.member_id)
        .outerjoin(RecoveryCase, RecoveryCase.id == Conversation.case_id)
        .outerjoin(Agent, Agent.id == Conversation.assigned_agent_id),
        view, agent_id, search,
    )
    if view == "resolved":
        query = query.order_by(Conversation.resolved_at.desc(), Conversation.id.desc())
    elif view in ("bot", "all"):
        query = query.order_by(Conversation.updated_at.desc(), Conversation.id.desc())
    else:
        # a snoozed conversation waits at the bottom until its time comes, then takes its
        # place again by priority and waiting time
        snoozed_now = case((Conversation.snoozed_until > now, 1), else_=0)
        query = query.order_by(snoozed_now, Conversation.priority.desc(),
                               Conversation.waiting_since.asc(), Conversation.id)
    rows = []
    for conversation, name, language, amount, currency, agent_name, newest in (
        await db.execute(query.limit(PAGE_SIZE))
    ).all():
        since = conversation.waiting_since or conversation.updated_at
        waited = (now - since).total_seconds()
        rows.append(QueueRow(
            conversation_id=conversation.id, status=conversation.status,
            member_name=name or "—", language=language or "",
            reasons=list(conversation.handoff_reasons or []), priority=conversation.priority,
            amount_minor=amount, currency=currency, waited_seconds=max(0.0, waited),
            overdue=conversation.status == WAITING and waited > first_response.total_seconds(),
            agent_name=agent_name,
            snoozed=bool(conversation.snoozed_until and conversation.snoozed_until > now),
            unread=conversation.status == ASSIGNED and newest is not None
            and newest > (conversation.seen_message_id or 0),
        ))
    return rows, total


async def _queue_context(request: web.Request) -> dict:
    view = request.query.get("view", "waiting")
    if view not in VIEWS:
        raise web.HTTPBadRequest(text=_("There is no such list of conversations."))
    search = request.query.get("q", "").strip()[:100]
    agent = request_agent(request)
    assert agent is not None  # noqa: S101 - login_required ran
    settings = request.config_dict[SETTINGS]
    async with request.config_dict[SESSIONMAKER]() as db:
        rows, total = await load_queue(
            db, view, agent.id, search, request.config_dict[CLOCK].now(),
            timedelta(minutes=settings.first_response_minutes),
        )
    return {"rows": rows, "total": total, "view": view, "q": search, "views": VIEWS,
            "sla_seconds": settings.first_response_minutes * 60}


@login_required
async def queue_page(request: web.Request) -> web.StreamResponse:
    return render(request, "queue.html", await _queue_context(request))


@login_required
async def queue_rows(request: web.Request) -> web.StreamResponse:
    """The table body alone, fetched again by the page when the live stream says so."""
    return render(request, "_queue_rows.html", await _queue_context(request))


@login_required
async def waiting_summary(request: web.Request) -> web.StreamResponse:
    """What every console page shows of the queue: how many wait, how many too long, and
    the newest ones (for a desktop notification naming the member and the reason)."""
    agent = request_agent(request)
    assert agent is not None  # noqa: S101 - login_required ran
    settings = request.config_dict[SETTINGS]
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[SESSIONMAKER]() as db:
        rows, total = await load_queue(db, "waiting", agent.id, "", now,
                                       timedelta(minutes=settings.first_response_minutes))
    return web.json_response({
        "waiting": total,
        "overdue": sum(row.overdue for row in rows),
        "sla_seconds": settings.first_response_minutes * 60,
        "conversations": [{
            "id": row.conversation_id, "member": row.member_name,
            "reasons": [str(handoff_rules.label(reason)) for reason in row.reasons],
            "waited_seconds": row.waited_seconds, "overdue": row.overdue,
        } for row in rows[:20]],
    })


@login_required
async def next_waiting(request: web.Request) -> web.StreamResponse:
    """The conversation to take next (the queue's first waiting row), else the queue."""
    agent = request_agent(request)
    assert agent is not None  # noqa: S101 - login_required ran
    settings = request.config_dict[SETTINGS]
    async with request.config_dict[SESSIONMAKER]() as db:
        rows, _total = await load_queue(db, "waiting", agent.id, "",
                                        request.config_dict[CLOCK].now(),
                                        timedelta(minutes=settings.first_response_minutes))
    raise web.HTTPSeeOther(f"/console/conversations/{rows[0].conversation_id}" if rows
                           else "/console/queue")


@login_required
async def set_availability(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    agent = request_agent(request)
    assert agent is not None  # noqa: S101 - login_required ran
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        stored = await db.get(Agent, agent.id)
        assert stored is not None  # noqa: S101 - the session's agent exists
        stored.available = form.get("available") == "1"
    raise web.HTTPSeeOther("/console/queue")


async def home(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/console/queue")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console", home),
        web.get("/console/", home),
        web.get("/console/queue", queue_page),
        web.get("/console/queue/rows", queue_rows),
        web.get("/console/api/waiting", waiting_summary),
        web.get("/console/next", next_waiting),
        web.post("/console/availability", set_availability),
    ]
