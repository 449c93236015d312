"""The outbox: everything sent to a member is a row first, then delivered by `bot.notifier`.

Life of a row: queued → sending (claimed by one worker) → sent | failed, or cancelled while
still queued. A worker that dies leaves its rows in "sending"; once their lease runs out they
are queued again, so a crash loses nothing and re-sends at most what was in flight.

Claiming differs per database because SQLite silently ignores `FOR UPDATE SKIP LOCKED`:
PostgreSQL locks the chosen rows and skips rows other workers hold; SQLite (one writer at a
time) flips them with a single atomic `UPDATE … WHERE status = 'queued' … RETURNING`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import Member, Outbox

QUEUED, SENDING, SENT, FAILED, CANCELLED = "queued", "sending", "sent", "failed", "cancelled"
STATUSES = (QUEUED, SENDING, SENT, FAILED, CANCELLED)

# Lower goes first: an agent typing to a waiting member beats a batch of reminders.
PRIORITY_AGENT = 0
PRIORITY_BOT = 2
PRIORITY_EDIT = 4
PRIORITY_REMINDER = 5


class NotReachable(Exception):
    """The member has no linked Telegram chat (or erased their data): nothing can be queued."""


async def queue_message(
    session: AsyncSession,
    member: Member,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
    *,
    priority: int = PRIORITY_BOT,
    not_before: datetime | None = None,
    case_id: int | None = None,
    dedupe_key: str | None = None,
    method: str = "sendMessage",
    dunning_step: int | None = None,
) -> Outbox | None:
    """Add one row; with a `dedupe_key` already used, add nothing and return None.

    `payload` holds the Bot API parameters except `chat_id` (e.g. text, parse_mode,
    reply_markup). The caller commits and then publishes `outbox.queued`.
    """
    if member.telegram is None or member.erased_at is not None:
        raise NotReachable(f"member {member.id} has no Telegram chat")
    if dedupe_key is not None and await _dedupe_key_used(session, dedupe_key):
        return None
    row = Outbox(
        member_id=member.id,
        chat_id=member.telegram.chat_id,
        kind=kind,
        priority=priority,
        method=method,
        payload=payload,
        status=QUEUED,
        attempts=0,
        not_before=not_before or now,
        case_id=case_id,
        dunning_step=dunning_step,
        dedupe_key=dedupe_key,
        created_at=now,
    )
    try:
        # a savepoint, so a concurrent reconciler winning the race costs only this row
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        if dedupe_key is None:
            raise
        return None
    return row


async def _dedupe_key_used(session: AsyncSession, key: str) -> bool:
    return await session.scalar(select(Outbox.id).where(Outbox.dedupe_key == key)) is not None


def _claimable(now: datetime, per_chat: int, exclude_chats: Iterable[int]) -> Any:
    """Ids of due queued rows, at most `per_chat` per chat, most urgent first.

    Limiting rows per chat keeps one chatty member from filling a worker's batch: a chat
    may only get about one message a second anyway, and fewer claimed rows means fewer
    re-sent after a crash.
    """
    ranked = (
        select(
            Outbox.id,
            Outbox.priority,
            Outbox.not_before,
            func.row_number()
            .over(partition_by=Outbox.chat_id, order_by=(Outbox.priority, Outbox.id))
            .label("rank"),
        )
        .where(Outbox.status == QUEUED, Outbox.not_before <= now)
    )
    excluded = list(exclude_chats)
    if excluded:
        ranked = ranked.where(Outbox.chat_id.not_in(excluded))
    ranked_sub = ranked.subquery()
    return (
        select(ranked_sub.c.id)
        .where(ranked_sub.c.rank <= per_chat)
        .order_by(ranked_sub.c.priority, ranked_sub.c.not_before, ranked_sub.c.id)
    )


async def claim(
    session: AsyncSession,
    worker: str,
    now: datetime,
    limit: int,
    *,
    per_chat: int = 1,
    exclude_chats: Iterable[int] = (),
) -> list[Outbox]:
    """Mark up to `limit` due rows as "sending" for `worker`, commit, and return them."""
    candidates = _claimable(now, per_chat, exclude_chats).limit(limit)
    if session.bind.dialect.name == "postgresql":
        locked = select(Outbox.id).where(
            Outbox.id.in_(candidates.scalar_subquery()), Outbox.status == QUEUED
        ).with_for_update(skip_locked=True)
        ids = list(await session.scalars(locked))
        if not ids:
            await session.commit()
            return []
        target = Outbox.id.in_(ids)
    else:
        target = Outbox.id.in_(candidates.scalar_subquery())
    statement = (
        update(Outbox)
        .where(target, Outbox.status == QUEUED)
        .values(status=SENDING, claimed_at=now, claimed_by=worker, attempts=Outbox.attempts + 1)
        .returning(Outbox)
        .execution_options(synchronize_session=False)
    )
    rows = list(await session.scalars(statement))
    await session.commit()
    rows.sort(key=lambda row: (row.priority, row.not_before, row.id))
    return rows


async def release_expired_leases(
    session: AsyncSession, now: datetime, lease: timedelta
) -> int:
    """Queue again the rows a dead worker left in "sending"; returns how many."""
    result = await session.execute(
        update(Outbox)
        .where(Outbox.status == SENDING, Outbox.claimed_at <= now - lease)
        .values(status=QUEUED, claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return result.rowcount or 0


async def renew_leases(session: AsyncSession, worker: str, now: datetime) -> None:
    """The worker is alive: its rows in "sending" keep their claim."""
    await session.execute(
        update(Outbox)
        .where(Outbox.status == SENDING, Outbox.claimed_by == worker)
        .values(claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()


async def mark_sent_many(
    session: AsyncSession, now: datetime, delivered: Sequence[tuple[Outbox, int | None]]
) -> None:
    """Mark many rows sent in one statement (executemany by primary key)."""
    if not delivered:
        return
    await session.execute(update(Outbox), [
        {"id": row.id, "status": SENT, "sent_at": now, "telegram_message_id": message_id,
         "error": None}
        for row, message_id in delivered
    ])


async def mark_failed(session: AsyncSession, row_id: int, error: str) -> None:
    await session.execute(
        update(Outbox)
        .where(Outbox.id == row_id)
        .values(status=FAILED, error=error[:500])
        .execution_options(synchronize_session=False)
    )


async def requeue(session: AsyncSession, row_id: int, not_before: datetime, error: str) -> None:
    """Give a row back after a temporary failure; it goes out again at `not_before`."""
    await session.execute(
        update(Outbox)
        .where(Outbox.id == row_id, Outbox.status == SENDING)
        .values(status=QUEUED, not_before=not_before, claimed_by=None, error=error[:500])
        .execution_options(synchronize_session=False)
    )


async def cancel_queued(session: AsyncSession, row_ids: Sequence[int], reason: str) -> None:
    if not row_ids:
        return
    await session.execute(
        update(Outbox)
        .where(Outbox.id.in_(row_ids), Outbox.status == QUEUED)
        .values(status=CANCELLED, error=reason)
        .execution_options(synchronize_session=False)
    )


async def next_due(session: AsyncSession) -> datetime | None:
    """When the earliest queued row becomes due (None: nothing queued)."""
    return await session.scalar(select(func.min(Outbox.not_before)).where(Outbox.status == QUEUED))


async def counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Outbox.status, func.count()).group_by(Outbox.status))
    return {status: count for status, count in rows}
