"""Signed provider events we cannot understand: kept for an admin, answered 200.

A provider retries every answer but 2xx for days. An event that passed its signature check
(so it really comes from the provider) but does not make sense to us will not make more
sense at the next delivery, so it is stored here with the reason, answered 200 with status
`rejected`, and the console shows admins a banner until one of them has looked at the list.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import RejectedEvent

MAX_REASON = 300


def _text(text: str) -> str:
    """As text every database stores: lone surrogates and NUL replaced."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _event_ref(raw: bytes) -> str | None:
    """The event's own id or name, when the body is JSON enough to tell."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    for key in ("id", "event"):
        value = body.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return _text(str(value))[:200] or None
    return None


async def record(session: AsyncSession, provider: str, raw: bytes, reason: str,
                 now: datetime) -> RejectedEvent:
    row = RejectedEvent(provider=provider, event_ref=_event_ref(raw),
                        reason=_text(reason)[:MAX_REASON],
                        body=_text(raw.decode("utf-8", "replace")),
                        received_at=now)
    session.add(row)
    await session.flush()
    return row


async def unseen_count(session: AsyncSession) -> int:
    return await session.scalar(
        select(func.count()).select_from(RejectedEvent).where(RejectedEvent.seen_at.is_(None))
    ) or 0


async def latest(session: AsyncSession, limit: int = 200) -> list[RejectedEvent]:
    return list((await session.scalars(
        select(RejectedEvent).order_by(RejectedEvent.received_at.desc(),
                                       RejectedEvent.id.desc()).limit(limit))).all())


async def mark_seen(session: AsyncSession, now: datetime) -> None:
    await session.execute(update(RejectedEvent).where(RejectedEvent.seen_at.is_(None))
                          .values(seen_at=now))
