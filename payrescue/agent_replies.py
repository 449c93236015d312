"""What an agent says to a member, whichever face they use (the web console or the team's
Telegram group): a reply becomes an agent timeline line linked to an outbox row, a note a
line that never leaves the team.

The notifier (or the mail sender) delivers the row and publishes `outbox.updated`, which
the console shows as the delivery state. Callers commit, then publish `outbox.queued` and
`message.created` (see `published_events`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import assignment, email_replies, reach, timeline
from payrescue import outbox as outbox_rules
from payrescue.config import Settings
from payrescue.db.models import Agent, Conversation, Member, Message, Outbox
from payrescue.dunning import language_of
from payrescue.dunning import render as member_text
from payrescue.events import Event
from payrescue.i18n import _, plain_text, use_language

MAX_REPLY_CHARS = 4096  # Telegram's limit for one message
# what Telegram sends for a media file (Bot API method per kind); a caption is its text
MEDIA_METHODS = {"photo": "sendPhoto", "document": "sendDocument", "voice": "sendVoice",
                 "sticker": "sendSticker"}


class ReplyError(Exception):
    """The reply cannot be queued; the message is meant for the agent."""


async def _queue_email_reply(db: AsyncSession, settings: Settings, conversation: Conversation,
                             member: Member, text: str, now: datetime) -> Outbox:
    """The answer to a member who is not on Telegram, threaded under their last e-mail."""
    in_reply_to, references = await email_replies.thread_of(db, member)
    with use_language(language_of(member, settings)):
        payload = email_replies.reply_email(text, in_reply_to, references)
    row = await outbox_rules.queue_message(
        db, member, "agent_reply", payload, now, priority=outbox_rules.PRIORITY_AGENT,
        case_id=conversation.case_id, channel=outbox_rules.EMAIL, settings=settings)
    assert row is not None  # no dedupe key: always queued
    return row


async def queue_agent_message(
    db: AsyncSession, conversation: Conversation, agent: Agent, text: str, now: datetime,
    settings: Settings, quote: Message | None = None, *,
    media: dict[str, Any] | None = None, via: str | None = None,
) -> Message:
    """Store the reply as a timeline line and queue it as plain text: by Telegram (with
    `quote`, Telegram shows the member's message it answers above it), or by e-mail for a
    member not (or no longer) on Telegram (`payrescue.reach`).

    `media` ({"kind", "file_id", "file_name"?, "mime_type"?}) sends a Telegram file with
    `text` as its caption; `via` names the face it came from when that is not the console
    (`"team"`: the team group, which shows it already).
    """
    text = text.strip()
    if not text and media is None:
        raise ReplyError(_("The message is empty."))
    if len(text) > MAX_REPLY_CHARS:
        raise ReplyError(_("Telegram takes at most 4096 characters per message."))
    member = await db.get(Member, conversation.member_id)
    channel = reach.channel_for(member, settings) if member is not None else None
    if member is None or channel is None:
        raise ReplyError(_("This member has no Telegram chat linked and no usable e-mail "
                           "address."))
    if media is not None and channel == reach.EMAIL:
        raise ReplyError(_("This member is reached by e-mail, which takes text only."))
    if channel == reach.EMAIL:
        outbox = await _queue_email_reply(db, settings, conversation, member, text, now)
    else:
        payload: dict = {"text": text}  # chat_id: the column
        method = "sendMessage"
        if media is not None:
            method = MEDIA_METHODS[media["kind"]]
            payload = {media["kind"]: media["file_id"]}
            if text and media["kind"] != "sticker":
                payload["caption"] = text
        if quote is not None and quote.telegram_message_id is not None:
            payload["reply_parameters"] = {"message_id": quote.telegram_message_id,
                                           "allow_sending_without_reply": True}
        outbox = Outbox(
            member_id=member.id, chat_id=member.telegram.chat_id, kind="agent_reply",
            priority=outbox_rules.PRIORITY_AGENT, method=method, payload=payload,
            status="queued", not_before=now, created_at=now, case_id=conversation.case_id,
        )
        db.add(outbox)
        await db.flush()
    data: dict[str, Any] = {}
    if quote is not None:
        data["quote"] = {"id": quote.id, "text": (quote.text or "")[:200]}
    if via is not None:
        data["via"] = via
    message = timeline.entry(member.id, timeline.AGENT, media["kind"] if media else "text",
                             now, text=text or None,
                             conversation_id=conversation.id, case_id=conversation.case_id,
                             agent_id=agent.id, outbox_id=outbox.id, data=data or None,
                             channel=timeline.EMAIL if channel == reach.EMAIL
                             else timeline.TELEGRAM)
    if media is not None:
        message.file_id = media["file_id"]
        message.file_name = media.get("file_name")
        message.mime_type = media.get("mime_type")
    db.add(message)
    await assignment.record_first_response(db, conversation, now)
    await db.flush()
    return message


async def add_note(db: AsyncSession, conversation: Conversation, agent: Agent, text: str,
                   now: datetime, *, via: str | None = None) -> Message:
    """An internal note: a timeline line for the team only."""
    text = text.strip()
    if not text:
        raise ReplyError(_("The message is empty."))
    message = timeline.entry(conversation.member_id, timeline.NOTE, "text", now, text=text,
                             channel=timeline.CONSOLE, conversation_id=conversation.id,
                             case_id=conversation.case_id, agent_id=agent.id,
                             data={"via": via} if via else None)
    db.add(message)
    await db.flush()
    return message


async def queue_update_link(db: AsyncSession, conversation: Conversation, agent: Agent,
                            settings: Settings, now: datetime, *,
                            via: str | None = None) -> Message:
    """A fresh signed update link for the member's open case, sent as the agent's message
    in the member's language."""
    from payrescue.billing.links import create_update_link  # billing is optional
    from payrescue.member_context import member_context

    ctx = await member_context(db, conversation)
    if ctx.case is None:
        raise ReplyError(_("This member has no open payment case."))
    url = await create_update_link(db, ctx.case, settings, now)
    with use_language(language_of(ctx.member, settings)):
        text = plain_text(member_text("agent/fresh_link.j2", url=url))
    return await queue_agent_message(db, conversation, agent, text, now, settings, via=via)


def published_events(message: Message) -> list[Event]:
    """What to publish once the reply or note is committed."""
    events = []
    if message.outbox_id is not None:
        events.append(Event("outbox.queued", {"outbox_id": message.outbox_id}))
    events.append(timeline.created_event(message))
    return events
