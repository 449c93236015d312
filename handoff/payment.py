"""Buttons beside the case: retry the charge now, pause the reminders, settle it outside the
system. The domain steps are `payrescue.billing.actions`; this is the thin console part."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from handoff.auth import login_required
from handoff.conversation import _agent, _conversation_id, _explain, _owned, _respond
from payrescue.assignment import AssignmentError
from payrescue.billing import actions
from payrescue.billing.http import STRIPE_API
from payrescue.billing.stripe_api import StripeUnavailable
from payrescue.db.models import Agent, RecoveryCase
from payrescue.events import Event
from payrescue.i18n import _
from payrescue.keys import BUS, CLOCK, SESSIONMAKER
from payrescue.member_context import member_context

Step = Callable[[AsyncSession, RecoveryCase, Agent, dict], Awaitable[str | None]]


def _explain_action(exc: actions.ActionError) -> str:
    return {
        "not open": _("This payment case is closed already."),
        "retry unavailable": _("A retry needs a Stripe invoice and a Stripe API key."),
        "days out of range": _("Pause the reminders for 1 to 60 days."),
        "reason required": _("Please write down how the member paid."),
    }.get(str(exc), str(exc))


async def _act(request: web.Request, step: Step) -> web.StreamResponse:
    conversation_id = _conversation_id(request)
    agent = _agent(request)
    form = {key: str(value) for key, value in (await request.post()).items()}
    try:
        async with request.config_dict[SESSIONMAKER]() as db, db.begin():
            conversation = await _owned(db, conversation_id, agent)
            case = (await member_context(db, conversation)).case
            if case is None:
                raise actions.ActionError(_("This member has no open payment case."))
            change = await step(db, case, agent, form)
            member_id, case_id = conversation.member_id, case.id
    except AssignmentError as exc:
        return await _respond(request, conversation_id, _explain(exc), 409)
    except actions.ActionError as exc:
        return await _respond(request, conversation_id, _explain_action(exc), 409)
    except StripeUnavailable:
        return await _respond(request, conversation_id,
                              _("Stripe could not be reached. Please try again shortly."), 502)
    bus = request.config_dict[BUS]
    await bus.publish(Event("message.created", {"conversation_id": conversation_id,
                                                "member_id": member_id, "sender": "system"}))
    if change is not None:
        await bus.publish(Event("case.changed", {"case_id": case_id, "change": change}))
    return await _respond(request, conversation_id)


@login_required
async def retry_view(request: web.Request) -> web.StreamResponse:
    async def step(db, case, agent, _form):  # noqa: ANN001, ANN202
        await actions.retry_charge(db, request.config_dict.get(STRIPE_API), case, agent.id,
                                   request.config_dict[CLOCK].now())

    return await _act(request, step)


@login_required
async def pause_view(request: web.Request) -> web.StreamResponse:
    async def step(db, case, agent, form):  # noqa: ANN001, ANN202
        days = form.get("days", "")
        if not days.isdigit() or len(days) > 3:
            raise actions.ActionError("days out of range")
        actions.pause_reminders(db, case, int(days), agent.id, request.config_dict[CLOCK].now())

    return await _act(request, step)


@login_required
async def settle_view(request: web.Request) -> web.StreamResponse:
    async def step(db, case, agent, form):  # noqa: ANN001, ANN202
        return actions.settle_outside(db, case, form.get("reason", ""), agent.id,
                                      request.config_dict[CLOCK].now())

    return await _act(request, step)


def routes() -> list[web.RouteDef]:
    base = "/console/conversations/{conversation_id}/case"
    return [
        web.post(base + "/retry", retry_view),
        web.post(base + "/pause", pause_view),
        web.post(base + "/settle", settle_view),
    ]
