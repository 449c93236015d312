"""One timeline per member: every line the console shows, stored as it happens.

A timeline entry is a `Message` row with the member's id. It is either something said on a
channel (the member wrote, the bot or an agent answered, a reminder went out — `channel`
names Telegram, e-mail or the console), or something that happened around the member
(`sender="system"`: the case failed, a link was opened, the member was handed to a human,
an agent claimed, a rating came in). The console reads one table in id order and never
pieces a conversation together from several tables.

Writers add the entry in the same transaction as the change it records, and publish
`message.created` (see `created_event`) after the commit.
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import Agent, Conversation, Message, Outbox
from payrescue.events import Event

MEMBER, BOT, AGENT, NOTE, SYSTEM = "member", "bot", "agent", "note", "system"
TELEGRAM, EMAIL, CONSOLE, BILLING = "telegram", "email", "console", "billing"
PAGE = 200  # entries per page of a timeline; older ones are a link away

# system entries (`kind`); case events carry the `change` of `case.changed`
HANDOFF, CANCELLED, CLAIMED, TRANSFERRED = "handoff", "cancelled", "claimed", "transferred"
TO_QUEUE, RESOLVED, HANDED_BACK, SNOOZED = "to_queue", "resolved", "handed_back", "snoozed"
RATED = "rated"
LINK_OPENED, LINK_COMPLETED = "link.opened", "link.completed"
CASE_PREFIX = "case."


def entry(member_id: int, sender: str, kind: str, now: datetime, *,
          text: str | None = None, channel: str = TELEGRAM,
          conversation_id: int | None = None, case_id: int | None = None,
          agent_id: int | None = None, data: dict[str, Any] | None = None,
          outbox_id: int | None = None, telegram_message_id: int | None = None) -> Message:
    return Message(member_id=member_id, sender=sender, kind=kind, created_at=now, text=text,
                   channel=channel, conversation_id=conversation_id, case_id=case_id,
                   agent_id=agent_id, data=data, outbox_id=outbox_id,
                   telegram_message_id=telegram_message_id)


_TAG = re.compile(r"<[^>]*>")


def as_seen(text: str | None, is_html: bool) -> str | None:
    """What the member reads of a text sent in Telegram's HTML mode: the words without the
    markup (the console shows every line as text, so `<b>29,00 €</b>` would show its tags).
    Our HTML texts are our own templates, autoescaped, so unescaping gives the words back."""
    if text is None or not is_html:
        return text
    return html.unescape(_TAG.sub("", text))


def outbox_line(row: Outbox, conversation_id: int | None = None) -> Message:
    """What the bot sends a member through the outbox (a reminder, a notice), stored when it
    is queued, so the timeline keeps the order things happened in; its delivery state is
    the outbox row's."""
    payload = row.payload
    markup = payload.get("reply_markup")
    buttons = [button.get("text") for line in markup.get("inline_keyboard", [])
               for button in line] if isinstance(markup, dict) else None
    assert row.member_id is not None  # noqa: S101 - queue_message names the member
    text = as_seen(payload.get("text") or payload.get("caption"),
                   payload.get("parse_mode") == "HTML")
    return entry(row.member_id, BOT, row.kind, row.created_at, text=text, case_id=row.case_id,
                 outbox_id=row.id, data={"buttons": buttons} if buttons else None,
                 conversation_id=conversation_id)


def event(session: AsyncSession, conversation: Conversation, kind: str, now: datetime, *,
          agent_id: int | None = None, data: dict[str, Any] | None = None) -> Message:
    """A system entry about a conversation (handoff, claim, transfer, resolve…)."""
    row = entry(conversation.member_id, SYSTEM, kind, now, channel=CONSOLE,
                conversation_id=conversation.id, case_id=conversation.case_id,
                agent_id=agent_id, data=data)
    session.add(row)
    return row


def case_event(session: AsyncSession, member_id: int, case_id: int | None, kind: str,
               now: datetime, data: dict[str, Any] | None = None) -> Message:
    """A system entry about a payment case (failed, recovered, lost, held, link opened…)."""
    row = entry(member_id, SYSTEM, kind, now, channel=BILLING, case_id=case_id, data=data)
    session.add(row)
    return row


async def open_conversation_id(session: AsyncSession, member_id: int,
                               changed_since: datetime | None = None) -> int | None:
    """The conversation a new line joins: the member's latest, unless it is resolved and
    was not changed since `changed_since` (a rating given just now still belongs to it)."""
    row = (await session.execute(
        select(Conversation.id, Conversation.status, Conversation.updated_at)
        .where(Conversation.member_id == member_id)
        .order_by(Conversation.id.desc()).limit(1)
    )).first()
    if row is None:
        return None
    recent = changed_since is not None and row.updated_at >= changed_since
    return row.id if row.status != "resolved" or recent else None


class Line(NamedTuple):
    message: Message
    outbox: Outbox | None  # its delivery, for what was sent through the outbox
    agent_name: str | None  # who, for an agent's line or action


async def member_timeline(session: AsyncSession, member_id: int, *, after_id: int = 0,
                          before_id: int | None = None, limit: int = PAGE) -> list[Line]:
    """Entries oldest first: the newest `limit` after `after_id` (live updates) and before
    `before_id` (a page further back)."""
    query = (select(Message, Outbox, Agent.name)
             .outerjoin(Outbox, Outbox.id == Message.outbox_id)
             .outerjoin(Agent, Agent.id == Message.agent_id)
             .where(Message.member_id == member_id, Message.id > after_id))
    if before_id is not None:
        query = query.where(Message.id < before_id)
    rows = (await session.execute(query.order_by(Message.id.desc()).limit(limit))).all()
    return [Line(*row) for row in reversed(rows)]


async def mark_seen(session: AsyncSession, conversation_id: int, agent_id: int,
                    message_id: int) -> None:
    """The assigned agent has had the timeline up to `message_id` on screen."""
    await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.assigned_agent_id == agent_id,
               func.coalesce(Conversation.seen_message_id, 0) < message_id)
        .values(seen_message_id=message_id)
        .execution_options(synchronize_session=False))


def newest_member_line() -> Any:
    """Per conversation row: the id of the member's newest line (for unread markers)."""
    return (select(func.max(Message.id))
            .where(Message.conversation_id == Conversation.id, Message.sender == MEMBER)
            .correlate(Conversation).scalar_subquery())


def created_event(message: Message) -> Event:
    return Event("message.created", {
        "conversation_id": message.conversation_id, "member_id": message.member_id,
        "message_id": message.id, "sender": message.sender,
    })
