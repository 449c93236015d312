"""Erasing a member on request: personal data and messages go, anonymous figures stay.

What stays: the member row's id, language and dates, recovery cases (amounts, outcomes,
attribution) and handoff records, so the owner's recovery and response-time figures are
still right. What goes: name, e-mail, provider and external ids, the Telegram link, every
transcript line, rating comments, queued or sent message texts, and raw provider payloads
(they carry names and e-mail addresses).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import (
    Conversation,
    Member,
    Message,
    Outbox,
    PaymentEvent,
    TelegramLink,
)

ERASED_PAYLOAD = {"erased": True}


async def erase_member(session: AsyncSession, member: Member, now: datetime) -> None:
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
    await session.refresh(member, ["telegram"])

