"""The demo's control page: play the billing system for the demo members.

`/demo` fires signed provider events through the real webhook path (as `payrescue simulate`
and `stripe trigger` do); `/demo/account/` stands in for the billing system's "update your
card" page, so a member who taps the bot's link can "pay" and see the reminders stop.
Mounted only by `payrescue demo`.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from aiohttp import web
from jinja2 import FileSystemLoader
from sqlalchemy import select
from yarl import URL

from payrescue.billing import simulate
from payrescue.db.models import Member, RecoveryCase, TelegramLink
from payrescue.edge import bounded_id, same_secret
from payrescue.i18n import choose_language, template_environment, use_language
from payrescue.keys import CLOCK, SESSIONMAKER, SETTINGS

PROVIDER = "generic"  # carries decline codes and our own update URL
REASONS = ("expired_card", "insufficient_funds", "incorrect_number",
           "authentication_required", "do_not_honor", "processing_error", "stolen_card")
ACTIONS = {"failed-payment", "recovered", "canceled", "card-expiring"}
_templates = template_environment(FileSystemLoader(Path(__file__).parent / "templates" / "demo"))
_FORM_TOKEN = web.AppKey("demo_form_token", str)
routes = web.RouteTableDef()


def setup_demo_page(app: web.Application) -> None:
    app[_FORM_TOKEN] = secrets.token_urlsafe(24)
    app.add_routes(routes)


def _render(name: str, **context: object) -> web.Response:
    return web.Response(text=_templates.get_template(name).render(**context),
                        content_type="text/html")


def _check_form(request: web.Request, form: dict) -> None:
    if not same_secret(str(form.get("token", "")), request.app[_FORM_TOKEN]):
        raise web.HTTPForbidden(text="This form has expired; reload the page.")


@routes.get("/demo")
async def control_page(request: web.Request) -> web.Response:
    async with request.app[SESSIONMAKER]() as session:
        rows = (await session.execute(
            select(Member, TelegramLink.chat_id, RecoveryCase.status, RecoveryCase.decline_category)
            .outerjoin(TelegramLink, TelegramLink.member_id == Member.id)
            .outerjoin(RecoveryCase, (RecoveryCase.member_id == Member.id)
                       & (RecoveryCase.status == "open"))
            .where(Member.erased_at.is_(None)).order_by(Member.id)
        )).all()
    members = [{"id": m.id, "name": m.name, "email": m.email, "language": m.language,
                "linked": chat is not None, "case": status, "category": category}
               for m, chat, status, category in rows]
    with use_language(request.app[SETTINGS].default_language):
        return _render("control.html", members=members, reasons=REASONS,
                       token=request.app[_FORM_TOKEN], note=request.query.get("note", ""))


@routes.post("/demo/simulate")
async def simulate_event(request: web.Request) -> web.Response:
    form = await request.post()
    _check_form(request, form)
    action, reason = str(form.get("action", "")), str(form.get("reason", "insufficient_funds"))
    if action not in ACTIONS or reason not in REASONS:
        raise web.HTTPBadRequest(text="Unknown action or reason.")
    member_id = bounded_id(str(form.get("member_id", "")))
    async with request.app[SESSIONMAKER]() as session:
        member = await session.get(Member, member_id) if member_id is not None else None
        if member is None or member.email is None:
            raise web.HTTPNotFound(text="No such demo member.")
        note = await _fire(request, session, member, action, reason)
    raise web.HTTPSeeOther(URL("/demo").with_query(note=note))


async def _fire(request: web.Request, session, member: Member, action: str,  # noqa: ANN001
                reason: str) -> str:
    settings = request.app[SETTINGS]
    try:
        results = await simulate.trigger(
            session, settings, action=action, email=member.email, base_url=settings.public_url(""),
            now=request.app[CLOCK].now(), reason=reason, provider=PROVIDER,
            update_url=account_url(settings.public_url(""), member.id))
    except simulate.SimulationError as exc:
        return str(exc).split(";")[0]
    failed = [status for _name, status, _body in results if status >= 300]
    return f"{action}: HTTP {failed[0]}" if failed else f"{action} sent for member {member.id}"


def account_url(base_url: str, member_id: int) -> str:
    """The stand-in account page where a demo member "updates the card" and pays."""
    return f"{base_url.rstrip('/')}/demo/account/?member={member_id}"


@routes.get("/demo/account/")
async def account_page(request: web.Request) -> web.Response:
    member = await _member_from_query(request)
    async with request.app[SESSIONMAKER]() as session:
        case = await session.scalar(select(RecoveryCase).where(
            RecoveryCase.member_id == member.id, RecoveryCase.status == "open"))
    language = choose_language(member.language, None, request.app[SETTINGS].default_language)
    with use_language(language):
        return _render("account.html", member=member, case=case, language=language,
                       token=request.app[_FORM_TOKEN], paid=request.query.get("paid") == "1")


@routes.post("/demo/account/pay")
async def pay(request: web.Request) -> web.Response:
    form = await request.post()
    _check_form(request, form)
    member = await _member_from_query(request, form.get("member"))
    async with request.app[SESSIONMAKER]() as session:
        await _fire(request, session, member, "recovered", "insufficient_funds")
    raise web.HTTPSeeOther(f"/demo/account/?member={member.id}&paid=1")


async def _member_from_query(request: web.Request, given: object = None) -> Member:
    member_id = bounded_id(str(given if given is not None else request.query.get("member", "")))
    if member_id is None:
        raise web.HTTPNotFound(text="No such demo member.")
    async with request.app[SESSIONMAKER]() as session:
        member = await session.get(Member, member_id)
    if member is None or member.erased_at is not None:
        raise web.HTTPNotFound(text="No such demo member.")
    return member
