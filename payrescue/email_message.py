"""One outbox e-mail row → one e-mail: plain text + HTML from the same text the member would
get on Telegram, in their language.

Made when the row is queued (`outbox.queue_message`), like a Telegram row's text: the
content is fixed then, and the sender (`mail.sender`) only adds the `Date` and sends the
stored bytes. The bytes are 7-bit clean (quoted-printable text, base64 image), so any
server takes them without 8BITMIME.

The HTML is made for mail clients: inline styles, no scripts, no remote images. The QR code
of the member's Telegram deep link is drawn here (segno) and attached inline (`cid:`), so
nothing is loaded from elsewhere. Headers: a Message-ID derived from the row (a re-send after
a crash carries the same one), Reply-To the inbound address, RFC 8058 one-click
List-Unsubscribe leading to the same opt-out as /stop, Auto-Submitted; `Date` when it goes
out (`date_header`).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from datetime import datetime, timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import cache
from pathlib import Path
from typing import Any

import segno
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from payrescue import members, tokens
from payrescue.config import Settings
from payrescue.db.models import Member, Outbox
from payrescue.i18n import plain_text, template_environment, use_language, voice_context

TEMPLATES = Path(__file__).parent / "templates"
UNSUBSCRIBE_PURPOSE = "unsubscribe"
UNSUBSCRIBE_DAYS = 365
QR_CID = "telegram-qr"


class BadAddress(ValueError):
    """The member's e-mail address cannot be used (not an address at all)."""


@cache
def _environment() -> Environment:
    return template_environment(FileSystemLoader(TEMPLATES))


def _parts(address: str | None) -> tuple[str, str]:
    address = (address or "").strip()
    _name, parsed = parseaddr(address)
    if not parsed or parsed != address or parsed.count("@") != 1:
        raise BadAddress("not an address")
    user, domain = parsed.split("@")
    if not user or "." not in domain.strip(".") or any(c.isspace() for c in parsed):
        raise BadAddress("not an address")
    return user, domain


def usable(address: str | None) -> bool:
    """Whether an e-mail can be addressed to it: one `@`, a dotted domain, no spaces. The
    one check for every way an address comes in (events, imports, the sender)."""
    try:
        _parts(address)
    except BadAddress:
        return False
    return True


def recipient(member: Member) -> Address:
    user, domain = _parts(member.email)
    return Address(display_name=member.name or "", username=user, domain=domain)


def sender_domain(settings: Settings) -> str:
    return parseaddr(settings.smtp_from or "")[1].rpartition("@")[2] or "localhost"


def message_id(settings: Settings, row_id: int) -> str:
    """`<pr.<row>.<mac>@domain>`: the same for every try of a row, and a reply's
    In-Reply-To can be checked to be one of ours (the mac) without a look-up."""
    mac = hmac.new(settings.secret, f"mail:{row_id}".encode(), hashlib.sha256).hexdigest()[:16]
    return f"<pr.{row_id}.{mac}@{sender_domain(settings)}>"


_OURS = re.compile(r"<pr\.(\d{1,18})\.([0-9a-f]{16})@[^>]+>")


def our_row_ids(settings: Settings, references: str) -> list[int]:
    """The outbox rows named in an In-Reply-To / References header whose Message-ID we
    really made (the mac checks out); forged or foreign ids are left out."""
    rows = []
    for row_id, _mac in _OURS.findall(references or ""):
        if hmac.compare_digest(message_id(settings, int(row_id)).encode(),
                               f"<pr.{row_id}.{_mac}@{sender_domain(settings)}>".encode()):
            rows.append(int(row_id))
    return rows


def unsubscribe_url(settings: Settings, member: Member, now: datetime) -> str:
    token = tokens.issue(settings.secret, UNSUBSCRIBE_PURPOSE, member.id,
                         timedelta(days=UNSUBSCRIBE_DAYS), now)
    return settings.public_url(f"/mail/unsubscribe/{token}")


CONNECT_PURPOSE = "connect"


def connect_url(settings: Settings, member: Member, now: datetime) -> str:
    """The member's `/connect/<token>` page: the deep link's button and QR code in a
    browser (handy when the e-mail is read on a computer)."""
    token = tokens.issue(settings.secret, CONNECT_PURPOSE, member.id,
                         timedelta(days=settings.link_token_days), now)
    return settings.public_url(f"/connect/{token}")


def telegram_deep_link(settings: Settings, member: Member, now: datetime) -> str | None:
    """The member's personal way into the chat, when the bot's name is known."""
    if not settings.bot_username or member.telegram is not None:
        return None
    token = members.link_token(settings.secret, member, now, settings.link_token_days)
    return members.deep_link(settings.bot_username, token)


def qr_png(url: str) -> bytes:
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="png", scale=5, border=2)
    return buffer.getvalue()


def html_paragraphs(body: str) -> Markup:
    """The Telegram text (already escaped HTML with <b>/<i>/<a>) as e-mail paragraphs."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    style = "margin:0 0 16px 0;font-size:16px;line-height:1.5;color:#1f2933"
    return Markup("\n".join(  # noqa: S704 - built from our own escaped template output
        f'<p style="{style}">{p.replace(chr(10), "<br>")}</p>' for p in paragraphs))


def compose(row: Outbox, member: Member, settings: Settings, now: datetime) -> EmailMessage:
    """The e-mail for one row, without its `Date`; raises `BadAddress` when the member's
    address is unusable."""
    to = recipient(member)
    payload: dict[str, Any] = row.payload
    deep_link = telegram_deep_link(settings, member, now)
    unsubscribe = unsubscribe_url(settings, member, now)
    button_url = payload.get("update_url")
    if payload.get("button") == "connect" and deep_link:
        button_url = connect_url(settings, member, now)
    context = {
        "subject": payload["subject"],
        "button": payload.get("button") or "update",
        "button_text": payload.get("button_text"),
        "body_html": html_paragraphs(payload["body"]),
        "body_text": plain_text(payload["body"]),
        "update_url": button_url,
        "deep_link": deep_link,
        "qr_cid": QR_CID,
        "unsubscribe_url": unsubscribe,
        "language": payload.get("language", settings.default_language),
        **voice_context(),
    }
    with use_language(context["language"]):
        text = _environment().get_template("mail/message.txt.j2").render(**context).strip()
        markup = _environment().get_template("mail/message.html.j2").render(**context)
    message = EmailMessage()
    message["Subject"] = payload["subject"]
    message["From"] = settings.smtp_from or ""
    message["To"] = to
    message["Message-ID"] = message_id(settings, row.id)
    if settings.smtp_reply_to:
        message["Reply-To"] = settings.smtp_reply_to
    if payload.get("in_reply_to"):
        message["In-Reply-To"] = payload["in_reply_to"]
        message["References"] = payload.get("references") or payload["in_reply_to"]
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # notices and reminders are sent by a machine: no vacation replies, please (RFC 3834)
    message["Auto-Submitted"] = "auto-generated" if row.kind != "agent_reply" else "no"
    message.set_content(text + "\n", cte="quoted-printable")
    message.add_alternative(markup, subtype="html", cte="quoted-printable")
    if deep_link:
        html_part = message.get_payload()[1]
        html_part.add_related(qr_png(deep_link), maintype="image", subtype="png",
                              cid=f"<{QR_CID}>", filename="telegram-qr.png")
    return message


def render(row: Outbox, member: Member, settings: Settings, now: datetime) -> bytes:
    """`compose`'s message as the bytes that go over SMTP (CRLF lines)."""
    address = str(recipient(member).addr_spec)
    smtp = policy.SMTP if address.isascii() else policy.SMTPUTF8
    return compose(row, member, settings, now).as_bytes(policy=smtp)


def date_header(now: datetime) -> bytes:
    """The `Date` line put before the stored message when it is sent."""
    return f"Date: {format_datetime(now)}\r\n".encode()
