"""Members' replies by e-mail, in by two paths that end in `receive()`:

- PayRescue's own SMTP receiver (aiosmtpd, `PAYRESCUE_SMTP_INBOUND_PORT`): it accepts mail
  only for the reply address (`PAYRESCUE_SMTP_REPLY_TO`), at most
  `PAYRESCUE_SMTP_INBOUND_MAX_BYTES`;
- `POST /mail/inbound` for inbound-parse services: the raw message as the body, signed with
  `X-PayRescue-Signature: <hex HMAC-SHA256 of the body with PAYRESCUE_MAIL_INBOUND_SECRET>`.

`receive()` takes the plain text (from a multipart mail, or the HTML stripped), cuts the
quoted history, keeps attachments as files in the data directory, and hands the rest to
`payrescue.email_replies.member_wrote`. A mail that is malformed, from an unknown sender or
naming another member's thread is stored nowhere and answered with nothing; the log says
which, never the address, subject or text.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import re
import secrets
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue import email_replies
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.edge import same_secret
from payrescue.email_message import our_row_ids
from payrescue.events import Bus
from payrescue.keys import BUS, CLOCK, SESSIONMAKER, SETTINGS

log = logging.getLogger(__name__)
# aiosmtpd logs every envelope (addresses included) under this name at INFO: not in our logs
logging.getLogger("mail.log").setLevel(logging.WARNING)

MAX_TEXT_CHARS = 20_000
MAX_ATTACHMENTS = 10
# where the quoted history of a reply starts, in the mail clients members use
_QUOTE_START = re.compile(
    r"^(On .{1,200} wrote:|Am .{1,200} schrieb .{0,200}:|-{2,} ?(Original Message|"
    r"Ursprüngliche Nachricht) ?-{2,}|From: .*|Von: .*)\s*$", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def reply_text(message: EmailMessage) -> str:
    """The member's own words: the plain-text part (else the HTML's text), without the
    quoted history below it."""
    body = message.get_body(("plain",))
    if body is not None:
        text = body.get_content()
    else:
        html_body = message.get_body(("html",))
        raw = html_body.get_content() if html_body is not None else ""
        raw = re.sub(r"(?is)<(script|style).*?</\1>", "", raw)
        text = html.unescape(_TAG.sub("", re.sub(r"(?i)<br\s*/?>|</p>", "\n", raw)))
    lines = []
    all_lines = text.splitlines()
    for position, line in enumerate(all_lines):
        if _QUOTE_START.match(line.strip()) or line.startswith(">"):
            break
        # "<anyone, any language> wrote:" right before the quoted lines
        following = next((n for n in all_lines[position + 1:] if n.strip()), "")
        if line.rstrip().endswith(":") and following.startswith(">"):
            break
        lines.append(line.rstrip())
    return "\n".join(lines).strip()[:MAX_TEXT_CHARS]


def _store_attachments(message: EmailMessage, settings: Settings) -> list[tuple[str, str, str]]:
    stored = []
    directory = settings.data_dir / email_replies.FILES_DIR
    for part in list(message.iter_attachments())[:MAX_ATTACHMENTS]:
        content = part.get_payload(decode=True)
        if not isinstance(content, bytes) or not content:
            continue
        name = Path(part.get_filename() or "attachment").name[:200]
        directory.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(16)
        (directory / key).write_bytes(content)
        stored.append((f"{email_replies.MAIL_FILE}{key}", name, part.get_content_type()[:100]))
    return stored


async def receive(raw: bytes, settings: Settings,
                  sessionmaker: async_sessionmaker[AsyncSession], bus: Bus,
                  clock: Clock) -> email_replies.Received | None:
    """Take one raw e-mail; None if it could not be read at all."""
    try:
        message = message_from_bytes(raw, policy=policy.default)
        sender = parseaddr(str(message.get("From", "")))[1]
        references = " ".join(str(message.get(h, "")) for h in ("In-Reply-To", "References"))
        text = reply_text(message) if isinstance(message, EmailMessage) else ""
        message_id = str(message.get("Message-ID", "")).strip()[:250] or None
    except (ValueError, TypeError, LookupError, IndexError, AttributeError) as exc:
        log.info("inbound e-mail unreadable", extra={"error": type(exc).__name__})
        return None
    if not sender or "@" not in sender:
        log.info("inbound e-mail without a sender")
        return None
    row_ids = our_row_ids(settings, references)
    async with sessionmaker() as session:
        # files only once the sender is known: a stranger's mail leaves nothing on disk
        files = _store_attachments(message, settings) if await email_replies.known_sender(
            session, sender) and isinstance(message, EmailMessage) else []
        received = await email_replies.member_wrote(
            session, settings, sender=sender, text=text, message_id=message_id,
            our_row_ids=row_ids, now=clock.now(), attachments=files)
        if received.refused is not None:
            for file_id, _name, _mime in files:
                path = email_replies.attachment_path(settings.data_dir, file_id)
                if path is not None:
                    path.unlink()
            log.info("inbound e-mail dropped", extra={"reason": received.refused.value})
            return received
        await session.commit()
    log.info("member wrote by e-mail",
             extra={"conversation_id": received.conversation.id if received.conversation
                    else None})
    for event in received.events:
        await bus.publish(event)
    return received


# --- the SMTP receiver --------------------------------------------------------------------


class ReplyHandler:
    """aiosmtpd handler: mail for the reply address only, each message to `receive()`."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.address = parseaddr(app[SETTINGS].smtp_reply_to or "")[1].lower()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,  # noqa: N802
                          address: str, rcpt_options: list[str]) -> str:
        if address.lower() != self.address:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session,  # noqa: N802
                          envelope: Envelope) -> str:
        app = self.app
        content = envelope.original_content or b""
        try:
            await receive(content, app[SETTINGS], app[SESSIONMAKER], app[BUS], app[CLOCK])
        except Exception as exc:  # the database may be away: the sender's server retries
            log.warning("inbound e-mail not stored", extra={"error": type(exc).__name__})
            return "451 4.3.0 Please try again later"
        # unknown senders and forged threads get the same answer: nothing to learn from it
        return "250 OK"


def setup_mail_inbound(app: web.Application) -> None:
    settings = app[SETTINGS]
    if settings.mail_inbound_secret is not None:
        app.router.add_post("/mail/inbound", inbound_endpoint)
    if settings.smtp_inbound_port is not None and settings.smtp_reply_to:
        app.cleanup_ctx.append(_smtp_receiver)


async def _smtp_receiver(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    handler = ReplyHandler(app)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=settings.smtp_inbound_max_bytes,
                     hostname="payrescue", ident="PayRescue"),
        host=settings.smtp_inbound_host, port=settings.smtp_inbound_port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


# --- the signed HTTP endpoint ---------------------------------------------------------------


def signature(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


async def inbound_endpoint(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    secret = settings.mail_inbound_secret
    assert secret is not None  # the route exists only with a secret
    body = await request.read()
    if len(body) > settings.smtp_inbound_max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=settings.smtp_inbound_max_bytes,
                                            actual_size=len(body))
    given = request.headers.get("X-PayRescue-Signature", "")
    if not same_secret(given, signature(secret.get_secret_value().encode(), body)):
        raise web.HTTPUnauthorized(text="bad signature")
    received = await receive(body, settings, request.app[SESSIONMAKER], request.app[BUS],
                             request.app[CLOCK])
    if received is None:
        raise web.HTTPBadRequest(text="not an e-mail")
    # unknown senders and forged threads: accepted and dropped, like the SMTP receiver
    return web.json_response({"ok": True})

