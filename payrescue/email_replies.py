"""A member wrote to us by e-mail: their line in the conversation, and a person to answer.

Every e-mail from a member goes to the human queue with the reason "wrote by e-mail" (the bot
does not answer e-mails). Which member it is comes from the sender's address; a reply
naming one of our e-mails (In-Reply-To / References, see
`payrescue.email_message.message_id`) must name one sent to that same member, or nothing is
stored: a forged reference to another member's thread never lands near that member's
conversation.
"""

from __future__ import annotations

import enum
import html
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import handoff_rules
from payrescue.config import Settings
from payrescue.conversations import current_conversation
from payrescue.db.models import Conversation, Member, Message, Outbox
from payrescue.events import Event
from payrescue.i18n import current_language
from payrescue.members import find_by_email

# a member's e-mail attachments: files in DATA_DIR/mail-files, named by a random key; the
# timeline line's file_id is "mail:<key>" (Telegram's files stay at Telegram, by file_id)
FILES_DIR = "mail-files"
MAIL_FILE = "mail:"


def attachment_path(data_dir: Path, file_id: str | None) -> Path | None:
    """Where an e-mail attachment's bytes are kept; None for anything else (a Telegram
    file, a malformed id)."""
    key = (file_id or "").removeprefix(MAIL_FILE)
    if not (file_id or "").startswith(MAIL_FILE) or not key.isalnum():
        return None
    return data_dir / FILES_DIR / key



class Refused(enum.Enum):
    UNKNOWN_SENDER = "unknown_sender"
    FOREIGN_THREAD = "foreign_thread"  # names an e-mail we sent to someone else
    EMPTY = "empty"


@dataclass
class Received:
    conversation: Conversation | None = None
    message: Message | None = None
    refused: Refused | None = None
    events: list[Event] = field(default_factory=list)


async def known_sender(session: AsyncSession, sender: str) -> bool:
    member = await find_by_email(session, sender)
    return member is not None and member.erased_at is None


async def member_wrote(
    session: AsyncSession,
    settings: Settings,
    *,
    sender: str,
    text: str,
    message_id: str | None,
    our_row_ids: list[int],
    now: datetime,
    attachments: list[tuple[str, str, str]] | None = None,  # (stored file id, name, MIME)
) -> Received:
    """Store the member's e-mail and queue the conversation for a person; the caller
    commits, then publishes `Received.events`. `our_row_ids`: the outbox rows of ours the
    e-mail names as its thread (already checked to be genuinely ours)."""
    member = await find_by_email(session, sender)
    if member is None or member.erased_at is not None:
        return Received(refused=Refused.UNKNOWN_SENDER)
    if our_row_ids:
        owners = set(await session.scalars(
            select(Outbox.member_id).where(Outbox.id.in_(our_row_ids))))
        if owners - {member.id}:
            return Received(refused=Refused.FOREIGN_THREAD)
    attachments = attachments or []
    if not text.strip() and not attachments:
        return Received(refused=Refused.EMPTY)
    conversation = await current_conversation(session, member.id, now)
    message = Message(member_id=member.id, channel="email", conversation_id=conversation.id,
                      sender="member", kind="email", text=text.strip() or None,
                      email_message_id=message_id, created_at=now)
    session.add(message)
    for file_id, name, mime in attachments:  # each file a line, as from Telegram
        session.add(Message(member_id=member.id, channel="email",
                            conversation_id=conversation.id, sender="member", kind="document",
                            file_id=file_id, file_name=name, mime_type=mime, created_at=now))
    case = await handoff_rules.open_case(session, member.id)
    await handoff_rules.request_handoff(session, conversation, [handoff_rules.BY_EMAIL], now,
                                        case)
    await session.flush()
    events = [Event("message.created", {"conversation_id": conversation.id,
                                        "message_id": message.id, "sender": "member"}),
              *handoff_rules.handoff_events(conversation)]
    return Received(conversation, message, events=events)


async def thread_of(session: AsyncSession, member: Member) -> tuple[str | None, str | None]:
    """The member's latest e-mail to us (its Message-ID and References chain), so an
    answer by e-mail is threaded under it."""
    latest = await session.scalar(
        select(Message.email_message_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.member_id == member.id, Message.sender == "member",
               Message.email_message_id.is_not(None))
        .order_by(Message.id.desc()).limit(1))
    return latest, latest


def reply_email(text: str, in_reply_to: str | None, references: str | None) -> dict[str, Any]:
    """An agent's answer to a member by e-mail, in the current language: their words as they
    typed them (escaped, as a Telegram text would be), threaded under the member's e-mail."""
    from payrescue.dunning import email_subject

    return {"subject": email_subject("agent_reply"), "body": html.escape(text),
            "language": current_language(), "in_reply_to": in_reply_to,
            "references": references}
