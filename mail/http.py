"""One-click unsubscribe (RFC 8058): `POST /mail/unsubscribe/<token>` is the same opt-out as
/stop in the bot (`Member.opted_out`); the GET shows a button first, because link scanners
of mail providers open every link in an e-mail."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import segno
from aiohttp import web
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from payrescue import tokens
from payrescue.db.models import Member
from payrescue.email_message import CONNECT_PURPOSE, UNSUBSCRIBE_PURPOSE, telegram_deep_link
from payrescue.i18n import _, choose_language, template_environment, use_language
from payrescue.keys import CLOCK, SESSIONMAKER, SETTINGS

log = logging.getLogger(__name__)


@cache
def _environment() -> Environment:
    return template_environment(FileSystemLoader(Path(__file__).parent / "templates"))


def _page(language: str, status: int, title: str, text: str, *, confirm: bool) -> web.Response:
    html = _environment().get_template("mail/unsubscribe.html").render(
        language=language, title=title, text=text, confirm=confirm)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


async def _member(request: web.Request) -> Member | None:
    settings, now = request.app[SETTINGS], request.app[CLOCK].now()
    try:
        parsed = tokens.verify(settings.secret, UNSUBSCRIBE_PURPOSE,
                               request.match_info["token"], now)
    except tokens.TokenError:
        return None
    async with request.app[SESSIONMAKER]() as session:
        member = await session.get(Member, parsed.subject_id)
    return member if member is not None and member.erased_at is None else None


def _language(request: web.Request, member: Member | None) -> str:
    settings = request.app[SETTINGS]
    return choose_language(member.language if member else None, None, settings.default_language)


async def unsubscribe_page(request: web.Request) -> web.Response:
    member = await _member(request)
    with use_language(language := _language(request, member)):
        if member is None:
            return _page(language, 404, _("This link is not valid"),
                         _("Please use the link in our most recent e-mail."), confirm=False)
        return _page(language, 200, _("Stop payment reminders?"),
                     _("We will send you no more reminders about this payment. You can still "
                       "write to us at any time."), confirm=True)


async def unsubscribe(request: web.Request) -> web.Response:
    member = await _member(request)
    with use_language(language := _language(request, member)):
        if member is None:
            return _page(language, 404, _("This link is not valid"),
                         _("Please use the link in our most recent e-mail."), confirm=False)
        async with request.app[SESSIONMAKER]() as session:
            stored = await session.get(Member, member.id)
            if stored is not None:
                stored.opted_out = True
                await session.commit()
        log.info("member opted out by e-mail", extra={"member_id": member.id})
        return _page(language, 200, _("Done"),
                     _("You will receive no more payment reminders. Writing /start to our "
                       "Telegram bot turns them back on."), confirm=False)


async def connect_page(request: web.Request) -> web.Response:
    """`/connect/<token>`: the way into the Telegram chat, for one member (signed, expiring)."""
    settings, now = request.app[SETTINGS], request.app[CLOCK].now()
    member = None
    try:
        parsed = tokens.verify(settings.secret, CONNECT_PURPOSE, request.match_info["token"],
                               now)
    except tokens.TokenError:
        parsed = None
    if parsed is not None:
        async with request.app[SESSIONMAKER]() as session:
            member = await session.get(Member, parsed.subject_id)
        if member is not None and member.erased_at is not None:
            member = None
    language = _language(request, member)
    with use_language(language):
        if member is None:
            return _connect(language, 404, _("This link is not valid"),
                            [_("Please use the link in our most recent e-mail.")])
        if member.telegram is not None:
            return _connect(language, 200, _("Telegram is connected"),
                            [_("This chat is already connected to your membership.")])
        deep_link = telegram_deep_link(settings, member, now)
        if deep_link is None:  # the bot's name is not configured
            return _connect(language, 503, _("Telegram is not available right now"),
                            [_("Please write to us and we will sort it out.")])
        qr = Markup(segno.make(deep_link, error="m").svg_inline(scale=6))  # noqa: S704
        return _connect(language, 200, _("Connect Telegram"),
                        [_("Reminders and help right in the chat."),
                         _("One tap connects the chat with your membership; /stop switches "
                           "the reminders off there at any time.")],
                        deep_link=deep_link, qr_svg=qr)


def _connect(language: str, status: int, title: str, lines: list[str], *,
             deep_link: str | None = None, qr_svg: Markup | None = None) -> web.Response:
    html = _environment().get_template("mail/connect.html").render(
        language=language, title=title, lines=lines, deep_link=deep_link, qr_svg=qr_svg)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def setup_mail_http(app: web.Application) -> None:
    app.add_routes([
        web.get("/connect/{token:[A-Za-z0-9_-]{1,200}}", connect_page),
        web.get("/mail/unsubscribe/{token:[A-Za-z0-9_-]{1,200}}", unsubscribe_page),
        web.post("/mail/unsubscribe/{token:[A-Za-z0-9_-]{1,200}}", unsubscribe),
    ])
