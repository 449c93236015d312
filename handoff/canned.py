"""Canned answers: admins write them (a Jinja2 body with member variables), agents insert one
by typing `/shortcut`; the answer in the member's language is offered first."""

from __future__ import annotations

import re

from aiohttp import web
from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import case, select
from sqlalchemy.exc import IntegrityError

from handoff.auth import admin_required, login_required
from handoff.conversation import UPDATE_LINK
from handoff.render import render
from payrescue.db.models import CannedAnswer, Conversation
from payrescue.edge import bounded_id
from payrescue.i18n import LANGUAGES, _, format_money
from payrescue.keys import CLOCK, SESSIONMAKER, SETTINGS
from payrescue.member_context import member_context

SHORTCUT = re.compile(r"^[a-z0-9_-]{1,40}$")
# Sandboxed: a template can read the variables it is given and nothing else. Plain text,
# because replies go to Telegram without a parse mode.
_bodies = SandboxedEnvironment(autoescape=False)  # noqa: S701 - plain text, never HTML


def check_body(body: str) -> str | None:
    try:
        _bodies.from_string(body)
    except TemplateError as exc:
        return _("The text has a template error: %(error)s") % {"error": exc.message or ""}
    return None


def fill(body: str, variables: dict[str, str]) -> str:
    try:
        return _bodies.from_string(body).render(variables)
    except TemplateError:
        return body  # a broken answer is shown raw rather than hidden from the agent


@admin_required
async def canned_page(request: web.Request) -> web.StreamResponse:
    """The list and the form; `?edit=<id>` fills the form with that answer."""
    form = None
    answer_id = bounded_id(request.query.get("edit", ""))
    if answer_id is not None:
        async with request.config_dict[SESSIONMAKER]() as db:
            answer = await db.get(CannedAnswer, answer_id)
        if answer is not None:
            form = {"id": str(answer.id), "shortcut": answer.shortcut,
                    "language": answer.language, "title": answer.title, "body": answer.body}
    return await _page(request, form=form)


async def _page(request: web.Request, error: str | None = None, form: dict | None = None,
                status: int = 200) -> web.Response:
    async with request.config_dict[SESSIONMAKER]() as db:
        answers = (await db.scalars(
            select(CannedAnswer).order_by(CannedAnswer.shortcut, CannedAnswer.language)
        )).all()
    return render(request, "canned.html", {"answers": answers, "error": error,
                                           "form": form or {}, "languages": LANGUAGES},
                  status=status)


@admin_required
async def canned_save(request: web.Request) -> web.StreamResponse:
    form = {k: str(v).strip() for k, v in (await request.post()).items()}
    shortcut = form.get("shortcut", "").lstrip("/").lower()
    error = None
    if not SHORTCUT.match(shortcut):
        error = _("A shortcut is 1 to 40 small letters, digits, - or _.")
    elif form.get("language") not in LANGUAGES:
        error = _("Choose German or English.")
    elif not form.get("title") or not form.get("body"):
        error = _("Title and text are required.")
    else:
        error = check_body(form["body"])
    if error:
        return await _page(request, error, form, 400)
    now = request.config_dict[CLOCK].now()
    try:
        async with request.config_dict[SESSIONMAKER]() as db, db.begin():
            await _store(db, form, shortcut, now)
    except IntegrityError:
        return await _page(request, _("This shortcut exists in that language already."),
                           form, 409)
    raise web.HTTPSeeOther("/console/canned")


async def _store(db, form: dict, shortcut: str, now) -> None:  # noqa: ANN001
    answer = None
    answer_id = bounded_id(form.get("id", ""))
    if answer_id is not None:
        answer = await db.get(CannedAnswer, answer_id)
    if answer is None:
        answer = CannedAnswer(created_at=now)
        db.add(answer)
    answer.shortcut, answer.language = shortcut, form["language"]
    answer.title, answer.body, answer.updated_at = form["title"], form["body"], now
    await db.flush()


@admin_required
async def canned_delete(request: web.Request) -> web.StreamResponse:
    async with request.config_dict[SESSIONMAKER]() as db, db.begin():
        answer = await db.get(CannedAnswer, int(request.match_info["answer_id"]))
        if answer is not None:
            await db.delete(answer)
    raise web.HTTPSeeOther("/console/canned")


@login_required
async def canned_for_conversation(request: web.Request) -> web.StreamResponse:
    """The answers filled in for this member, their language first (used by the reply box)."""
    settings = request.config_dict[SETTINGS]
    async with request.config_dict[SESSIONMAKER]() as db:
        conversation = await db.get(Conversation, int(request.match_info["conversation_id"]))
        if conversation is None:
            raise web.HTTPNotFound()
        ctx = await member_context(db, conversation)
        language = ctx.member.language or settings.default_language
        answers = (await db.scalars(
            select(CannedAnswer).order_by(
                CannedAnswer.shortcut, case((CannedAnswer.language == language, 0), else_=1)
            )
        )).all()
    case_ = ctx.case
    variables = {
        "first_name": ctx.member.first_name,
        "amount": format_money(case_.amount_minor, case_.currency, language) if case_ else "",
        "plan": ctx.plan or "",
        # stays a placeholder until the reply is sent: then a fresh signed, tracked /u/ link
        # replaces it (`conversation.UPDATE_LINK`), so a preview creates no link
        "update_link": UPDATE_LINK if case_ else "",
    }
    return web.json_response([
        {"shortcut": a.shortcut, "title": a.title, "language": a.language,
         "text": fill(a.body, variables)}
        for a in answers
    ])


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console/canned", canned_page),
        web.post("/console/canned", canned_save),
        web.post("/console/canned/{answer_id:\\d+}/delete", canned_delete),
        web.get("/console/api/conversations/{conversation_id:\\d+}/canned",
                canned_for_conversation),
    ]
