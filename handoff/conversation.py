"""The conversation view and what an agent does in it.

Replies and fresh update links become an agent `Message` linked to an `Outbox` row; the
notifier delivers the row and publishes `outbox.updated`, which the live view shows as the
delivery state. Notes are `Message(sender="note")` and never leave the console.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.auth import login_required, request_agent
from handoff.render import render
from payrescue import assignment, timeline
from payrescue.agent_replies import (
    ReplyError,
    add_note,
    published_events,
    queue_agent_message,
    queue_update_link,
)
from payrescue.assignment import AssignmentError
from payrescue.conversations import ASSIGNED
from payrescue.db.models import Agent, Conversation, Member, Message
from payrescue.edge import bounded_id
from payrescue.events import Event
from payrescue.i18n import _
from payrescue.keys import BUS, CLOCK, SESSIONMAKER, SETTINGS
from payrescue.member_context import member_context

# Where a canned answer asks for the update link; replaced by a fresh signed /u/ link (its
# openings are counted) when the reply is sent
UPDATE_LINK = "{{ update_link }}"
TYPING_EVERY = timedelta(seconds=4)  # Telegram shows "typing…" for about five seconds
TYPING_SENT = web.AppKey("console_typing_sent", dict)
MAX_SNOOZE = timedelta(days=366)


async def transcript(
    db: AsyncSession, conversation: Conversation, after_id: int = 0
) -> list[timeline.Line]:
    """The member's timeline (everything they saw, and what happened around them) after
    `after_id`, with delivery rows, oldest first: a conversation is read in its context."""
    return await timeline.member_timeline(db, conversation.member_id, after_id=after_id)


async def publish_message(request: web.Request, message: Message) -> None:
    for event in published_events(message):
        await request.config_dict[BUS].publish(event)


def _conversation_id(request: web.Request) -> int:
    conversation_id = bounded_id(request.match_info["conversation_id"])
    if conversation_id is None:  # the edge refuses it already; this keeps the type honest
        raise web.HTTPNotFound()
    return conversation_id


def _agent(request: web.Request) -> Agent:
    agent = request_agent(request)
    assert agent is not None  # noqa: S101 - login_required ran
    return agent


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


async def _page(request: web.Request, conversation_id: int, *, error: str | None = None,
                status: int = 200) -> web.Response:
    async with request.config_dict[SESSIONMAKER]() as db:
        conversation = await db.get(Conversation, conversation_id)
        if conversation is None:
            raise web.HTTPNotFound()
        lines = await transcript(db, conversation)
        context = await member_context(db, conversation, request.config_dict[SETTINGS])
        owner = (await db.get(Agent, conversation.assigned_agent_id)
                 if conversation.assigned_agent_id else None)
        agents = (await db.scalars(select(Agent).order_by(Agent.name))).all()
    mine = owner is not None and owner.id == _agent(request).id
    if mine and lines:
        async with request.config_dict[SESSIONMAKER]() as db, db.begin():
            await timeline.mark_seen(db, conversation_id, owner.id, lines[-1].message.id)
    from payrescue.billing.actions import can_retry
    from payrescue.billing.http import STRIPE_API

    return render(request, "conversation.html", {
        "can_retry": context.case is not None
        and can_retry(context.case, request.config_dict.get(STRIPE_API)),
        "conversation": conversation, "lines": lines, "ctx": context, "owner": owner,
        "agents": agents, "error": error, "mine": mine,
        "last_id": lines[-1][0].id if lines else 0,  # the live stream continues from here
        "earlier": lines[0].message.id if len(lines) >= timeline.PAGE else None,
    }, status=status)


async def _respond(request: web.Request, conversation_id: int, error: str | None = None,
                   status: int = 200) -> web.StreamResponse:
    """JSON for the page's scripts; for plain forms, the page again (errors) or a redirect."""
    if _wants_json(request):
        return web.json_response({"ok": error is None, "error": error},
                                 status=status if error else 200)
    if error:
        return await _page(request, conversation_id, error=error, status=status)
    raise web.HTTPSeeOther(f"/console/conversations/{conversation_id}")


@login_required
async def conversation_page(request: web.Request) -> web.StreamResponse:
    return await _page(request, _conversation_id(request))


@login_required
async def claim_view(request: web.Request) -> web.StreamResponse:
    conversation_id = _conversation_id(request)
    agent = _agent(request)
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        try:
            result = await assignment.claim(db, conversation_id, agent.id,
                                            request.config_dict[CLOCK].now())
        except AssignmentError:
            raise web.HTTPNotFound() from None
        owner = await db.get(Agent, result.owner_id) if result.owner_id else None
    if not result.won:
        if owner is not None and owner.id == agent.id:
            return await _respond(request, conversation_id)
        error = (_("%(name)s has already claimed this conversation.") % {"name": owner.name}
                 if owner else _("This conversation is no longer waiting."))
        return await _respond(request, conversation_id, error, 409)
    await request.config_dict[BUS].publish(Event("conversation.updated", {
        "conversation_id": conversation_id, "status": ASSIGNED, "assigned_agent_id": agent.id,
    }))
    return await _respond(request, conversation_id)


async def _owned(db: AsyncSession, conversation_id: int, agent: Agent) -> Conversation:
    conversation = await assignment.load_for_change(db, conversation_id)
    if conversation.status != ASSIGNED:
        raise AssignmentError(_("Claim the conversation first."))
    assignment.ensure_owner(conversation, agent)
    return conversation


def _explain(exc: AssignmentError) -> str:
    known = {
        "not yours": _("Another agent holds this conversation."),
        "claim it first": _("Claim the conversation first."),
        "no such agent": _("That agent does not exist."),
        "pick a time in the future": _("Pick a time in the future."),
        "no such conversation": _("This conversation doesn't exist (any more)."),
    }
    text = str(exc)
    if text in known:
        return known[text]
    if text.startswith("not possible while"):
        return _("That is not possible in the conversation's current state.")
    return text  # raised here, already in the agent's language


@login_required
async def reply_view(request: web.Request) -> web.StreamResponse:
    return await _add_line(request, note=False)


@login_required
async def note_view(request: web.Request) -> web.StreamResponse:
    return await _add_line(request, note=True)


async def _add_line(request: web.Request, *, note: bool) -> web.StreamResponse:
    conversation_id = _conversation_id(request)
    agent = _agent(request)
    form = await request.post()
    text = str(form.get("text", ""))
    quote_id = bounded_id(str(form.get("quote", ""))) if form.get("quote") else None
    now = request.config_dict[CLOCK].now()
    try:
        async with request.config_dict[SESSIONMAKER]() as db, db.begin():
            conversation = await _owned(db, conversation_id, agent)
            if note:
                message = await add_note(db, conversation, agent, text, now)
            else:
                if UPDATE_LINK in text:
                    text = await _with_update_link(request, db, conversation, text, now)
                quote = await _quoted(db, conversation, quote_id)
                message = await queue_agent_message(db, conversation, agent, text, now,
                                                     request.config_dict[SETTINGS], quote)
    except (AssignmentError, ReplyError) as exc:
        error = _explain(exc) if isinstance(exc, AssignmentError) else str(exc)
        return await _respond(request, conversation_id, error, 409)
    await publish_message(request, message)
    if _wants_json(request):
        return web.json_response({"ok": True, "message_id": message.id})
    return await _respond(request, conversation_id)


async def _quoted(db: AsyncSession, conversation: Conversation,
                  quote_id: int | None) -> Message | None:
    """The member's message a reply quotes; only one of this member's own."""
    if quote_id is None:
        return None
    quote = await db.get(Message, quote_id)
    if quote is None or quote.member_id != conversation.member_id or quote.sender != "member":
        raise ReplyError(_("That message cannot be quoted."))
    return quote


async def _with_update_link(request: web.Request, db: AsyncSession,
                            conversation: Conversation, text: str, now: datetime) -> str:
    from payrescue.billing.links import create_update_link

    ctx = await member_context(db, conversation)
    if ctx.case is None:
        raise ReplyError(_("This member has no open payment case."))
    url = await create_update_link(db, ctx.case, request.config_dict[SETTINGS], now)
    return text.replace(UPDATE_LINK, url)


@login_required
async def typing_view(request: web.Request) -> web.StreamResponse:
    """Shows "typing…" in the member's Telegram; at most once every few seconds."""
    conversation_id = _conversation_id(request)
    now = request.config_dict[CLOCK].now()
    sent = request.app[TYPING_SENT]
    last = sent.get(conversation_id)
    if last is not None and now - last < TYPING_EVERY:
        return web.json_response({"ok": True, "sent": False})
    async with request.config_dict[SESSIONMAKER]() as db:
        conversation = await db.get(Conversation, conversation_id)
        if conversation is None:
            raise web.HTTPNotFound()
        member = await db.get(Member, conversation.member_id)
        chat_id = member.telegram.chat_id if member and member.telegram else None
    if chat_id is None or conversation.assigned_agent_id != _agent(request).id:
        return web.json_response({"ok": True, "sent": False})
    sent[conversation_id] = now
    await request.config_dict[BUS].publish(Event("agent.typing", {
        "conversation_id": conversation_id, "chat_id": chat_id,
        "agent_id": _agent(request).id,  # colleagues viewing it see who types
    }))
    return web.json_response({"ok": True, "sent": True})


async def _transition(request: web.Request, step) -> web.StreamResponse:  # noqa: ANN001
    conversation_id = _conversation_id(request)
    agent = _agent(request)
    form = await request.post()
    now = request.config_dict[CLOCK].now()
    try:
        async with request.config_dict[SESSIONMAKER]() as db, db.begin():
            conversation = await step(db, conversation_id, agent, form, now)
            event = assignment.updated_event(conversation)
    except AssignmentError as exc:
        return await _respond(request, conversation_id, _explain(exc), 409)
    await request.config_dict[BUS].publish(event)
    return await _respond(request, conversation_id)


@login_required
async def resolve_view(request: web.Request) -> web.StreamResponse:
    return await _transition(
        request, lambda db, cid, agent, _form, now: assignment.resolve(db, cid, agent, now))


@login_required
async def hand_back_view(request: web.Request) -> web.StreamResponse:
    return await _transition(
        request, lambda db, cid, agent, _form, now: assignment.hand_back(db, cid, agent, now))


@login_required
async def to_queue_view(request: web.Request) -> web.StreamResponse:
    return await _transition(
        request, lambda db, cid, agent, _form, now: assignment.back_to_queue(db, cid, agent, now))


@login_required
async def transfer_view(request: web.Request) -> web.StreamResponse:
    async def step(db, cid, agent, form, now):  # noqa: ANN001, ANN202
        target = bounded_id(str(form.get("agent_id", "")))
        if target is None:
            raise AssignmentError("no such agent")
        return await assignment.transfer(db, cid, agent, target, now)

    return await _transition(request, step)


@login_required
async def snooze_view(request: web.Request) -> web.StreamResponse:
    zone = request.config_dict[SETTINGS].zone

    async def step(db, cid, agent, form, now):  # noqa: ANN001, ANN202
        try:
            until = datetime.fromisoformat(str(form.get("until", ""))).replace(tzinfo=zone)
            if until - now > MAX_SNOOZE:  # also refuses year 1 or 9999 (OverflowError)
                raise ValueError("too far ahead")
        except (ValueError, OverflowError):
            raise AssignmentError("pick a time in the future") from None
        return await assignment.snooze(db, cid, agent, until, now)

    return await _transition(request, step)


@login_required
async def update_link_view(request: web.Request) -> web.StreamResponse:
    """A fresh signed update link for the member's case, sent as the agent's message."""
    conversation_id = _conversation_id(request)
    agent = _agent(request)
    settings = request.config_dict[SETTINGS]
    now = request.config_dict[CLOCK].now()
    try:
        import payrescue.billing.links  # noqa: F401 - billing is optional
    except ImportError:
        return await _respond(request, conversation_id,
                              _("Update links are not available in this installation."), 503)
    try:
        async with request.config_dict[SESSIONMAKER]() as db, db.begin():
            conversation = await _owned(db, conversation_id, agent)
            message = await queue_update_link(db, conversation, agent, settings, now)
    except (AssignmentError, ReplyError) as exc:
        error = _explain(exc) if isinstance(exc, AssignmentError) else str(exc)
        return await _respond(request, conversation_id, error, 409)
    await publish_message(request, message)
    return await _respond(request, conversation_id)


def routes() -> list[web.RouteDef]:
    base = "/console/conversations/{conversation_id}"
    return [
        web.get(base, conversation_page),
        web.post(base + "/claim", claim_view),
        web.post(base + "/reply", reply_view),
        web.post(base + "/note", note_view),
        web.post(base + "/typing", typing_view),
        web.post(base + "/resolve", resolve_view),
        web.post(base + "/hand-back", hand_back_view),
        web.post(base + "/to-queue", to_queue_view),
        web.post(base + "/transfer", transfer_view),
        web.post(base + "/snooze", snooze_view),
        web.post(base + "/update-link", update_link_view),
    ]
