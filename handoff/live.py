"""Live updates by Server-Sent Events, fed by the event bus.

The bus only wakes a stream up; what the stream sends it reads from the database. Transcript
lines carry their message id as the SSE event id, so a browser that reconnects sends
`Last-Event-ID` and gets exactly the lines it has not seen: nothing lost, nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response
from sqlalchemy import select

from handoff.auth import login_required, request_agent, still_signed_in
from handoff.conversation import transcript
from handoff.render import render_string
from payrescue import timeline
from payrescue.db.models import Agent, Conversation, Message, Outbox
from payrescue.edge import bounded_id
from payrescue.events import Event
from payrescue.i18n import _
from payrescue.keys import BUS, SESSIONMAKER

QUEUE_TOPICS = {"conversation.waiting", "conversation.updated", "message.created"}
CHECK_CONNECTION_EVERY = 15.0  # seconds; a closed tab is noticed at the latest then
# set when the service stops: the open streams end at once, instead of aiohttp waiting its
# whole shutdown timeout for them (an open console tab held a stop up a minute); the
# browser's EventSource reconnects by itself to whichever process serves it next
STOPPING = web.AppKey("live_streams_stopping", asyncio.Event)


def setup_live(app: web.Application) -> None:
    app[STOPPING] = asyncio.Event()

    async def end_streams(app: web.Application) -> None:
        app[STOPPING].set()

    app.on_shutdown.append(end_streams)


def _last_seen(request: web.Request) -> int:
    raw = (request.headers.get("Last-Event-ID") or request.query.get("after") or "0").strip()
    if raw == "0":
        return 0
    seen = bounded_id(raw)
    if seen is None:
        raise web.HTTPBadRequest(text="Last-Event-ID must be a message id")
    return seen


async def _next_event(request: web.Request, events: asyncio.Queue[Event]) -> Event | None:
    """The next event, or None after a quiet while; ends the stream (ConnectionResetError)
    when its session has ended meanwhile."""
    stopping = request.config_dict[STOPPING]
    if stopping.is_set():
        raise ConnectionResetError("the service is stopping")
    next_event = asyncio.ensure_future(events.get())
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait([next_event, stop], timeout=CHECK_CONNECTION_EVERY,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not next_event.done():
            next_event.cancel()
    if next_event.done() and not next_event.cancelled():
        return next_event.result()
    if stopping.is_set():
        raise ConnectionResetError("the service is stopping")
    if not await still_signed_in(request):
        raise ConnectionResetError("the session ended")
    return None


@login_required
async def conversation_stream(request: web.Request) -> web.StreamResponse:
    try:
        conversation_id = int(request.match_info["conversation_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    last_id = _last_seen(request)
    async with request.config_dict[SESSIONMAKER]() as db:
        conversation = await db.get(Conversation, conversation_id)
        if conversation is None:
            raise web.HTTPNotFound()
    viewer = request_agent(request)
    assert viewer is not None  # noqa: S101 - login_required ran
    bus = request.config_dict[BUS]
    presence = {"conversation_id": conversation_id, "agent_id": viewer.id}
    # subscribe before catching up, so an event between the two is not missed
    async with bus.subscribe() as events, sse_response(request) as sse:
        # a closed tab shows up as a failed write: the stream ends, the browser (if it
        # comes back) reconnects with Last-Event-ID
        try:
            with contextlib.suppress(ConnectionResetError):
                last_id = await _send_lines(request, sse, conversation, last_id)
                await bus.publish(Event("agent.viewing", {**presence, "hello": True}))
                while sse.is_connected():
                    event = await _next_event(request, events)
                    if event is None:  # a quiet while: still here
                        await bus.publish(Event("agent.viewing", presence))
                        continue
                    if await _presence(request, sse, viewer.id, presence, event):
                        continue
                    last_id = await _relay(request, sse, conversation, last_id, event)
        finally:
            await bus.publish(Event("agent.left", presence))
    return sse


async def _presence(request: web.Request, sse: EventSourceResponse, viewer_id: int,
                    presence: dict, event: Event) -> bool:
    """Another agent opened, keeps open, left or types in this conversation: say who.
    A newcomer's hello is answered, so they learn who was here first."""
    data = event.data
    if event.topic not in ("agent.viewing", "agent.left", "agent.typing") \
            or data.get("conversation_id") != presence["conversation_id"]:
        return False
    other = data.get("agent_id")
    if not isinstance(other, int) or other == viewer_id:
        return event.topic != "agent.typing"
    async with request.config_dict[SESSIONMAKER]() as db:
        agent = await db.get(Agent, other)
    if agent is None:
        return True
    if event.topic == "agent.left":
        text, state = "", "left"
    elif event.topic == "agent.typing":
        text, state = _("%(name)s is typing…") % {"name": agent.name}, "typing"
    else:
        text, state = _("%(name)s is viewing this conversation") % {"name": agent.name}, \
            "viewing"
        if data.get("hello"):
            await request.config_dict[BUS].publish(Event("agent.viewing", presence))
    await sse.send(json.dumps({"agent_id": other, "state": state, "text": text}),
                   event="presence")
    return True


async def _relay(request: web.Request, sse: EventSourceResponse, conversation: Conversation,
                 last_id: int, event: Event) -> int:
    data, conversation_id = event.data, conversation.id
    if event.topic == "message.created" and (data.get("member_id") == conversation.member_id
                                             or data.get("conversation_id") == conversation_id):
        return await _send_lines(request, sse, conversation, last_id)
    if event.topic == "outbox.updated":
        await _send_delivery(request, sse, conversation, data)
    elif event.topic == "conversation.updated" and data.get("conversation_id") == conversation_id:
        last_id = await _send_lines(request, sse, conversation, last_id)  # claim, transfer…
        await _send_status(request, sse, conversation_id)
    elif event.topic == "agent.typing" and data.get("conversation_id") == conversation_id:
        await sse.send("{}", event="typing")
    return last_id


async def _send_lines(request: web.Request, sse: EventSourceResponse,
                      conversation: Conversation, after_id: int) -> int:
    async with request.config_dict[SESSIONMAKER]() as db:
        lines = await transcript(db, conversation, after_id)
    for message, outbox, agent_name in lines:
        html = render_string(request, "_line.html", {"message": message, "outbox": outbox,
                                                     "agent_name": agent_name})
        await sse.send(json.dumps({"id": message.id, "html": html}), id=str(message.id),
                       event="line")
        after_id = message.id
    viewer = request_agent(request)
    if lines and viewer is not None:  # on the owner's screen now: no longer unread
        async with request.config_dict[SESSIONMAKER]() as db, db.begin():
            await timeline.mark_seen(db, conversation.id, viewer.id, after_id)
    return after_id


async def _send_delivery(request: web.Request, sse: EventSourceResponse,
                         conversation: Conversation, data: dict) -> None:
    outbox_id = data.get("outbox_id")
    if not isinstance(outbox_id, int):
        return
    async with request.config_dict[SESSIONMAKER]() as db:
        row = (await db.execute(
            select(Message, Outbox, Agent.name).join(Outbox, Outbox.id == Message.outbox_id)
            .outerjoin(Agent, Agent.id == Message.agent_id)
            .where(Message.outbox_id == outbox_id, Message.member_id == conversation.member_id)
        )).first()
    if row is None:  # another conversation's message
        return
    html = render_string(request, "_line.html", {"message": row[0], "outbox": row[1],
                                                 "agent_name": row[2]})
    await sse.send(json.dumps({"id": row[0].id, "html": html}), event="line-update")


async def _send_status(request: web.Request, sse: EventSourceResponse,
                       conversation_id: int) -> None:
    async with request.config_dict[SESSIONMAKER]() as db:
        conversation = await db.get(Conversation, conversation_id)
        owner = (await db.get(Agent, conversation.assigned_agent_id)
                 if conversation and conversation.assigned_agent_id else None)
    if conversation is None:
        return
    await sse.send(json.dumps({
        "status": conversation.status,
        "owner_id": owner.id if owner else None,
        "owner": owner.name if owner else None,
        # for an agent who was about to answer: who has it now (in their language)
        "taken": _("%(name)s has already claimed this conversation.") % {"name": owner.name}
        if owner else None,
    }), event="status")


@login_required
async def queue_stream(request: web.Request) -> web.StreamResponse:
    """Tells the queue page to fetch its rows again; `waiting` marks a new handoff."""
    async with request.config_dict[BUS].subscribe() as events, sse_response(request) as sse:
        with contextlib.suppress(ConnectionResetError):  # the tab closed
            while sse.is_connected():
                event = await _next_event(request, events)
                if event is not None and _concerns_queue(event):
                    await sse.send(json.dumps({
                        "conversation_id": event.data.get("conversation_id"),
                        "new": event.topic == "conversation.waiting",
                    }), event="queue")
    return sse


def _concerns_queue(event: Event) -> bool:
    if event.topic == "message.created":
        return event.data.get("sender") == "member"
    return event.topic in QUEUE_TOPICS


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console/stream/queue", queue_stream),
        web.get("/console/stream/conversations/{conversation_id}", conversation_stream),
    ]

