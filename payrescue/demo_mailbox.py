"""The demo's mailbox: every e-mail the demo sends, as a member would see it, with a reply box.

`payrescue demo` points the e-mail channel at a local SMTP server (aiosmtpd) that keeps each
message in `DATA_DIR/demo-mailbox/`; `/demo/mailbox` lists them and shows one with its HTML
(inline QR code included) and a "reply" box. A reply is a real e-mail sent with aiosmtplib to
PayRescue's own SMTP receiver — the same inbound path a member's reply takes in production.
Mounted only by `payrescue demo`.
"""

from __future__ import annotations

import asyncio
import re
import socket
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr
from pathlib import Path
from typing import Any

import aiosmtplib
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from jinja2 import FileSystemLoader
from markupsafe import Markup

from payrescue.edge import bounded_id, same_secret
from payrescue.i18n import template_environment, use_language
from payrescue.keys import SETTINGS

MAILBOX_DIR = "demo-mailbox"
DEMO_FROM = "PayRescue Demo <club@demo.payrescue.test>"
DEMO_REPLY_TO = "antwort@demo.payrescue.test"
_templates = template_environment(FileSystemLoader(Path(__file__).parent / "templates" / "demo"))
_BODY = re.compile(r"(?is)<body[^>]*>(.*)</body>")
_FORM_TOKEN = web.AppKey("demo_mailbox_token", str)
routes = web.RouteTableDef()


def free_port(*taken: int) -> int:
    """A free port other than `taken` (the demo's own ports, not bound yet when asked)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


class _Keep:
    """aiosmtpd handler: every message into the mailbox directory, numbered."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: Session,  # noqa: N802
                          envelope: Envelope) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        number = len(list(self.directory.glob("*.eml"))) + 1
        (self.directory / f"{number:05d}.eml").write_bytes(envelope.original_content or b"")
        return "250 Message accepted"


async def serve_mailbox(directory: Path, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SMTP(_Keep(directory), hostname="demo-mailbox"),
                                    host="127.0.0.1", port=port)


def mail_settings(smtp_port: int, inbound_port: int) -> dict[str, Any]:
    """The demo's e-mail settings: out to the mailbox, replies in to PayRescue's receiver."""
    return {"smtp_host": "127.0.0.1", "smtp_port": smtp_port, "smtp_security": "none",
            "smtp_from": DEMO_FROM, "smtp_reply_to": DEMO_REPLY_TO,
            "smtp_inbound_port": inbound_port}


def setup_demo_mailbox(app: web.Application, form_token: str) -> None:
    app[_FORM_TOKEN] = form_token
    app.add_routes(routes)


def _directory(request: web.Request) -> Path:
    return request.app[SETTINGS].data_dir / MAILBOX_DIR


def _read(path: Path) -> EmailMessage:
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _render(name: str, **context: object) -> web.Response:
    return web.Response(text=_templates.get_template(name).render(**context),
                        content_type="text/html")


@routes.get("/demo/mailbox")
async def mailbox_page(request: web.Request) -> web.Response:
    files = sorted(_directory(request).glob("*.eml"), reverse=True)
    mails = []
    for path in files:
        message = _read(path)
        mails.append({"number": int(path.stem), "to": str(message["To"]),
                      "subject": str(message["Subject"]), "date": str(message["Date"])})
    with use_language(request.app[SETTINGS].default_language):
        return _render("mailbox.html", mails=mails)


def _mail(request: web.Request) -> EmailMessage:
    number = bounded_id(request.match_info["number"])
    path = _directory(request) / f"{number or 0:05d}.eml"
    if number is None or not path.is_file():
        raise web.HTTPNotFound(text="No such e-mail.")
    return _read(path)


@routes.get(r"/demo/mailbox/{number:\d{1,6}}")
async def mail_page(request: web.Request) -> web.Response:
    message = _mail(request)
    number = request.match_info["number"]
    html_part = message.get_body(("html",))
    body = html_part.get_content() if html_part is not None else ""
    inner = _BODY.search(body)
    # our own e-mail (made by payrescue.email_message, member text escaped there): shown as
    # it is, with its inline images served from here
    shown = (inner.group(1) if inner else body).replace(
        'src="cid:', f'src="/demo/mailbox/{number}/cid/')
    with use_language(request.app[SETTINGS].default_language):
        return _render("mail.html", message=message, number=number,
                       html=Markup(shown),  # noqa: S704 - see above
                       token=request.app[_FORM_TOKEN], sent=request.query.get("sent") == "1")


@routes.get(r"/demo/mailbox/{number:\d{1,6}}/cid/{cid:[A-Za-z0-9_.@-]{1,100}}")
async def inline_image(request: web.Request) -> web.Response:
    message = _mail(request)
    for part in message.walk():
        if str(part.get("Content-ID", "")).strip("<>") == request.match_info["cid"]:
            content = part.get_payload(decode=True)
            if isinstance(content, bytes) and part.get_content_type() == "image/png":
                return web.Response(body=content, content_type="image/png")
    raise web.HTTPNotFound()


@routes.post(r"/demo/mailbox/{number:\d{1,6}}/reply")
async def reply(request: web.Request) -> web.Response:
    form = await request.post()
    if not same_secret(str(form.get("token", "")), request.app[_FORM_TOKEN]):
        raise web.HTTPForbidden(text="This form has expired; reload the page.")
    original = _mail(request)
    text = str(form.get("text", "")).strip()
    if not text:
        raise web.HTTPSeeOther(f"/demo/mailbox/{request.match_info['number']}")
    settings = request.app[SETTINGS]
    answer = EmailMessage()
    answer["From"] = str(original["To"])
    answer["To"] = str(original.get("Reply-To") or original["From"])
    answer["Subject"] = "Re: " + str(original["Subject"])
    answer["Message-ID"] = make_msgid(domain=parseaddr(str(original["To"]))[1].split("@")[-1])
    answer["In-Reply-To"] = str(original["Message-ID"])
    answer["References"] = str(original["Message-ID"])
    quoted = "\n".join("> " + line for line in
                       (original.get_body(("plain",)) or original).get_content().splitlines())
    answer.set_content(f"{text}\n\nOn {original['Date']}, {original['From']} wrote:\n{quoted}\n")
    await aiosmtplib.send(answer, hostname="127.0.0.1", port=settings.smtp_inbound_port,
                          start_tls=False, timeout=10)
    raise web.HTTPSeeOther(f"/demo/mailbox/{request.match_info['number']}?sent=1")

