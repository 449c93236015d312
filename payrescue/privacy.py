"""Erasing a member on request: personal data and messages go, anonymous figures stay.

What stays: the member row's id, language and dates, recovery cases (amounts, outcomes,
attribution) and handoff records, so the owner's recovery and response-time figures are
still right. What goes: name, e-mail, provider and external ids, the Telegram link, every
transcript line, rating comments, queued or sent message texts, raw provider payloads
(they carry names and e-mail addresses), and the files the member sent by e-mail (kept in
the data directory; what they sent on Telegram stays at Telegram, and its file ids go with
their lines, so the console can no longer fetch it).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import (
    Conversation,
    Member,
    Message,
    Outbox,
    PaymentEvent,
    TelegramLink,
)
from payrescue.email_replies import attachment_path

ERASED_PAYLOAD = {"erased": True}


async def erase_member(session: AsyncSession, member: Member, now: datetime,
                       data_dir: Path) -> None:
    files = [attachment_path(data_dir, file_id) for file_id in await session.scalars(
        select(Message.file_id).where(Message.member_id == member.id,
                                      Message.file_id.is_not(None)))]
    await session.execute(delete(Message).where(Message.member_id == member.id))  # timeline
    await session.execute(
        update(Conversation).where(Conversation.member_id == member.id)
        .values(rating_comment=None)
    )
    await session.execute(delete(Outbox).where(Outbox.member_id == member.id))
    await session.execute(
        update(PaymentEvent).where(PaymentEvent.member_id == member.id)
        .values(payload=ERASED_PAYLOAD)
    )
    await session.execute(delete(TelegramLink).where(TelegramLink.member_id == member.id))
    member.email = member.name = member.time_zone = None
    member.stripe_customer_id = member.memberpress_member_id = member.external_id = None
    member.opted_out = True
    member.erased_at = now
    await session.flush()
    for path in files:
        if path is not None:
            path.unlink(missing_ok=True)
    await session.refresh(member, ["telegram"])

