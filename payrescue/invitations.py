"""Inviting members without Telegram into the chat, by e-mail (`payrescue members invite`).

An invitation is an e-mail outbox row (sent by the running service at the e-mail rate
limit); `Member.invited_at` records it, so a run that stops half-way is simply run again,
and nobody is invited twice within `INVITE_AGAIN_AFTER`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import outbox, reach
from payrescue.config import Settings
from payrescue.db.models import Member, TelegramLink
from payrescue.dunning import email_subject, language_of, render
from payrescue.i18n import use_language

INVITE_AGAIN_AFTER = timedelta(days=30)


async def invitable_ids(session: AsyncSession, now: datetime,
                        emails: list[str] | None = None) -> list[int]:
    """Members to invite now: an e-mail address that works, no Telegram, not opted out, not
    invited in the last 30 days (of `emails` only, when given)."""
    query = (
        select(Member.id)
        .where(Member.email.is_not(None), Member.email_problem.is_(None),
               Member.erased_at.is_(None), Member.opted_out.is_(False),
               Member.id.not_in(select(TelegramLink.member_id)),
               or_(Member.invited_at.is_(None), Member.invited_at <= now - INVITE_AGAIN_AFTER))
        .order_by(Member.id)
    )
    if emails is not None:
        query = query.where(Member.email.in_([e.strip().lower() for e in emails]))
    return list(await session.scalars(query))


def invitation_payload(member: Member, settings: Settings) -> dict[str, Any]:
    language = language_of(member, settings)
    with use_language(language):
        return {"template": "invite", "language": language,
                "subject": email_subject("invite"),
                "body": render("email/invite.j2", first_name=member.first_name or None),
                "update_url": None, "button": "connect"}


async def invite(session: AsyncSession, settings: Settings, member: Member,
                 now: datetime) -> outbox.Outbox | None:
    """Queue the invitation and note it; the caller commits. None: not reachable by e-mail."""
    if not reach.email_reachable(member, settings) or member.telegram is not None:
        return None
    row = await outbox.queue_message(
        session, member, "invite", invitation_payload(member, settings), now,
        priority=outbox.PRIORITY_REMINDER, channel=outbox.EMAIL, settings=settings,
        dedupe_key=f"invite:{member.id}:{now:%Y-%m-%d}")
    member.invited_at = now
    return row
