"""The outbox: everything sent to a member is a row first, then delivered by `bot.notifier`.

Life of a row: queued → sending (claimed by one worker) → sent | failed, or cancelled while
still queued. A worker that dies leaves its rows in "sending"; once their lease runs out they
are queued again, so a crash loses nothing and re-sends at most what was in flight. A worker
renews the lease of exactly the rows it still holds, and each run of a worker has its own
name, so rows a crashed run left behind are never kept alive by the run that follows it.

Per-chat order is a guarantee: a chat's rows are claimable only while none of its rows is in
flight under any worker, in any process — "sending", or queued again to wait for a retry
after a temporary failure. So a member never sees "your payment arrived" before the "your
payment failed" that a dead worker was still holding. Within a chat the queued rows go out by
priority, then in the order they were queued (an agent's reply may overtake reminders that
wait, never a message already under way). A lease that runs out returns the chat's rows to
the queue together, so they are claimed again in the same order.

Each row names its channel (`telegram` or `email`, see `payrescue.reach`) and each channel
has its own worker loop (`bot.notifier`, `mail.sender`) claiming only its channel's rows
with the functions below; the order and in-flight rules hold per channel and "chat" (for
e-mail the chat is the member), so the rules live here once for every channel.

A member who blocked the bot (Telegram's 403) is marked unreachable: their queued rows are
cancelled at once, and nothing more is claimed or queued for them until they write again.

A row's content is fixed when it is queued: a Telegram row's text, an e-mail row's whole
message (`payrescue.email_message`, stored in `email_raw`), so a sender only sends. A member
whose address is no address at all is marked (`email_problem = "invalid"`, the member is
kept) and the row is kept as not delivered, never tried.

Claiming differs per database because SQLite silently ignores `FOR UPDATE SKIP LOCKED`:
PostgreSQL serialises claims with a transaction-scoped advisory lock (held for one short
statement pair, so several processes still claim hundreds of rows a second) and then flips
the rows with `UPDATE … RETURNING`; SQLite (one writer at a time) flips them with a single
atomic `UPDATE … WHERE status = 'queued' … RETURNING`. Either way, the check "no row of this
chat is in flight" and the claim happen as one step, which a per-row lock alone cannot give.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, inspect, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue import email_message, timeline
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db.models import Member, Outbox

QUEUED, SENDING, SENT, FAILED, CANCELLED = "queued", "sending", "sent", "failed", "cancelled"
STATUSES = (QUEUED, SENDING, SENT, FAILED, CANCELLED)

# Lower goes first: an agent typing to a waiting member beats a batch of reminders.
PRIORITY_AGENT = 0
PRIORITY_BOT = 2
PRIORITY_EDIT = 4
PRIORITY_REMINDER = 5


# one key for "claiming outbox rows" among PostgreSQL advisory locks (any fixed 64-bit number)
CLAIM_LOCK_KEY = 0x5041_5952_4553_4355  # "PAYRESCU"
BLOCKED_REASON = "blocked by the member"


TELEGRAM, EMAIL = "telegram", "email"
TEAM = "team"  # posts into the agents' Telegram group (payrescue.teamgroup, bot.team.poster)
CHANNELS = (TELEGRAM, EMAIL, TEAM)
EMAIL_PROBLEM_REASON = "e-mail address undeliverable"
REJECTED, INVALID = "rejected", "invalid"  # Member.email_problem: refused by the server, no address


class NotReachable(Exception):
    """The member cannot be reached on this channel (no linked Telegram chat, no e-mail
    address, or erased data): nothing can be queued."""


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
    channel: str = TELEGRAM,
    conversation_id: int | None = None,
    settings: Settings | None = None,
) -> Outbox | None:
    """Add one row; with a `dedupe_key` already used, add nothing and return None.

    For Telegram `payload` holds the Bot API parameters except `chat_id` (e.g. text,
    parse_mode, reply_markup); for e-mail what `payrescue.email_message` needs to build the
    message (subject, body, language, update_url …), built here with `settings`.
    The caller commits and then publishes `outbox.queued`.
    """
    if member.erased_at is not None:
        raise NotReachable(f"member {member.id} erased their data")
    if channel == EMAIL:
        if not member.email:
            raise NotReachable(f"member {member.id} has no e-mail address")
        if settings is None:
            raise TypeError("an e-mail row is built when queued: pass the settings")
        if member.email_problem is None and not email_message.usable(member.email):
            member.email_problem = INVALID
        chat_id, stopped, reason = member.id, member.email_problem is not None, \
            EMAIL_PROBLEM_REASON
    else:
        if member.telegram is None:
            raise NotReachable(f"member {member.id} has no Telegram chat")
        chat_id, stopped, reason = member.telegram.chat_id, member.unreachable, BLOCKED_REASON
    if dedupe_key is not None and await _dedupe_key_used(session, dedupe_key):
        return None
    if channel == EMAIL and not stopped:  # the envelope's recipient, as in the To header
        payload = {**payload, "to": email_message.recipient(member).addr_spec}
    row = Outbox(
        member_id=member.id,
        channel=channel,
        chat_id=chat_id,
        kind=kind,
        priority=priority,
        method=method,
        payload=payload,
        # blocked the bot (or a dead address): kept as not delivered (the console shows
        # why), never tried
        status=CANCELLED if stopped else QUEUED,
        error=reason if stopped else None,
        attempts=0,
        not_before=not_before or now,
        case_id=case_id,
        dunning_step=dunning_step,
        dedupe_key=dedupe_key,
        created_at=now,
    )
    if dedupe_key is None:
        # no savepoint: on SQLite one that opens the transaction would also commit it when
        # released, and the caller's other rows would go out before its commit
        session.add(row)
        await session.flush()  # the caller may need its id before committing
        session.add(timeline.outbox_line(row, conversation_id))
    else:
        try:
            # a savepoint, so a concurrent reconciler winning the race costs only this row
            async with session.begin_nested():
                session.add(row)
                await session.flush()
                session.add(timeline.outbox_line(row, conversation_id))
        except IntegrityError:
            return None
    if channel == EMAIL and not stopped:
        assert settings is not None  # noqa: S101 - checked above
        if "telegram" in inspect(member).unloaded:  # a member added in this session
            await session.refresh(member, ["telegram"])
        # the Message-ID names the row: made once it has its id, written with the commit
        row.email_raw = email_message.render(row, member, settings, now)
        row.email_message_id = email_message.message_id(settings, row.id)
    return row


async def _dedupe_key_used(session: AsyncSession, key: str) -> bool:
    return await session.scalar(select(Outbox.id).where(Outbox.dedupe_key == key)) is not None


def _in_flight_chats(now: datetime, channel: str) -> Any:
    """Chats with a row under way: being sent by any worker, or waiting for its retry."""
    return select(Outbox.chat_id).where(Outbox.channel == channel, or_(
        Outbox.status == SENDING,
        and_(Outbox.status == QUEUED, Outbox.attempts > 0, Outbox.not_before > now),
    ))


def _unreachable_members(channel: str) -> Any:
    if channel == EMAIL:
        return select(Member.id).where(Member.email_problem.is_not(None))
    return select(Member.id).where(Member.unreachable.is_(True))


def _claimable(now: datetime, per_chat: int, channel: str) -> Any:
    """Ids of due queued rows, at most `per_chat` per chat, most urgent first, of chats with
    nothing in flight and members who have not blocked the bot.

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
        .where(Outbox.status == QUEUED, Outbox.not_before <= now, Outbox.channel == channel,
               Outbox.chat_id.not_in(_in_flight_chats(now, channel)),
               or_(Outbox.member_id.is_(None),
                   Outbox.member_id.not_in(_unreachable_members(channel))))
    ).subquery()
    return (
        select(ranked.c.id)
        .where(ranked.c.rank <= per_chat)
        .order_by(ranked.c.priority, ranked.c.not_before, ranked.c.id)
    )


async def claim(
    session: AsyncSession,
    worker: str,
    now: datetime,
    limit: int,
    *,
    per_chat: int = 1,
    channel: str = TELEGRAM,
) -> list[Outbox]:
    """Mark up to `limit` due rows of `channel` as "sending" for `worker`, commit, and
    return them."""
    if session.bind.dialect.name == "postgresql":
        # until this transaction ends no other worker claims, and it sees every claim
        # committed before it: "no row of this chat in flight" holds across processes
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                              {"key": CLAIM_LOCK_KEY})
    candidates = _claimable(now, per_chat, channel).limit(limit)
    statement = (
        update(Outbox)
        .where(Outbox.id.in_(candidates.scalar_subquery()), Outbox.status == QUEUED)
        .values(status=SENDING, claimed_at=now, claimed_by=worker, attempts=Outbox.attempts + 1)
        .returning(Outbox)
        .execution_options(synchronize_session=False)
    )
    rows = list(await session.scalars(statement))
    await session.commit()
    rows.sort(key=lambda row: (row.priority, row.not_before, row.id))
    return rows


async def release_expired_leases(
    session: AsyncSession, now: datetime, lease: timedelta, *, caller: str | None = None
) -> int:
    """Queue again the rows a dead worker left in "sending"; returns how many. The calling
    worker's own rows stay: it is alive, whatever a late renewal says."""
    expired = [Outbox.status == SENDING, Outbox.claimed_at <= now - lease]
    if caller is not None:
        expired.append(Outbox.claimed_by != caller)
    result = await session.execute(
        update(Outbox)
        .where(*expired)
        .values(status=QUEUED, claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return result.rowcount or 0


async def renew_leases(
    session: AsyncSession, worker: str, row_ids: Iterable[int], now: datetime
) -> None:
    """The worker is alive and still holds these rows: they keep their claim. Only the rows
    it names: a row it abandoned, or delivered without recording it, must run out."""
    ids = list(row_ids)
    if not ids:
        return
    await session.execute(
        update(Outbox)
        .where(Outbox.id.in_(ids), Outbox.status == SENDING, Outbox.claimed_by == worker)
        .values(claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()


async def release_worker(session: AsyncSession, workers: Sequence[str]) -> int:
    """Queue again, at once, the rows left in "sending" by runs known to have ended (an
    earlier run of this process's notifier): no need to wait for their lease."""
    if not workers:
        return 0
    result = await session.execute(
        update(Outbox)
        .where(Outbox.status == SENDING, Outbox.claimed_by.in_(list(workers)))
        .values(status=QUEUED, claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return result.rowcount or 0


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


async def mark_email_sent(session: AsyncSession, row_ids: Sequence[int], now: datetime) -> None:
    """Mark delivered e-mail rows sent, in one statement."""
    await session.execute(
        update(Outbox)
        .where(Outbox.id.in_(list(row_ids)))
        .values(status=SENT, sent_at=now, error=None)
        .execution_options(synchronize_session=False)
    )


async def cancel_for_rejected_address(session: AsyncSession, member_id: int, problem: str,
                                      worker: str) -> int:
    """The mail server refused the member's address for good (or it is no address): mark
    it and cancel the e-mails that wait for the member, as for a blocked bot."""
    return await _stop_channel(session, member_id, worker, EMAIL, {"email_problem": problem},
                               EMAIL_PROBLEM_REASON)


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


async def give_back(session: AsyncSession, row_ids: Sequence[int]) -> None:
    """Return claimed rows untried (an earlier row of their chat must go first): queued as
    they were, the claim not counted as an attempt."""
    if not row_ids:
        return
    await session.execute(
        update(Outbox)
        .where(Outbox.id.in_(list(row_ids)), Outbox.status == SENDING)
        .values(status=QUEUED, claimed_by=None, attempts=Outbox.attempts - 1)
        .execution_options(synchronize_session=False)
    )


async def cancel_for_blocked_member(session: AsyncSession, member_id: int, worker: str) -> int:
    """The member blocked the bot: mark them unreachable and cancel what waits for them,
    queued or claimed by `worker` and not tried yet."""
    return await _stop_channel(session, member_id, worker, TELEGRAM, {"unreachable": True},
                               BLOCKED_REASON)


async def _stop_channel(session: AsyncSession, member_id: int, worker: str, channel: str,
                        member_values: dict[str, Any], reason: str) -> int:
    """A channel no longer reaches the member: note it on the member and cancel the rows of
    that channel waiting for them (queued, or claimed by `worker` and not tried yet)."""
    await session.execute(
        update(Member).where(Member.id == member_id).values(**member_values)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(
        update(Outbox)
        .where(Outbox.member_id == member_id, Outbox.channel == channel,
               or_(Outbox.status == QUEUED,
                   and_(Outbox.status == SENDING, Outbox.claimed_by == worker)))
        .values(status=CANCELLED, error=reason)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


async def cancel_queued(session: AsyncSession, row_ids: Sequence[int], reason: str) -> None:
    if not row_ids:
        return
    await session.execute(
        update(Outbox)
        .where(Outbox.id.in_(row_ids), Outbox.status == QUEUED)
        .values(status=CANCELLED, error=reason)
        .execution_options(synchronize_session=False)
    )


async def cancel_claimed(session: AsyncSession, row_id: int, reason: str) -> None:
    """A claimed row that is no longer wanted (see `dunning.still_wanted`): never sent."""
    await session.execute(
        update(Outbox)
        .where(Outbox.id == row_id, Outbox.status == SENDING)
        .values(status=CANCELLED, error=reason)
        .execution_options(synchronize_session=False)
    )


async def next_due(session: AsyncSession, channel: str = TELEGRAM) -> datetime | None:
    """When the channel's earliest queued row becomes due (None: nothing queued)."""
    return await session.scalar(select(func.min(Outbox.not_before))
                                .where(Outbox.status == QUEUED, Outbox.channel == channel))


# a channel's worker looks again at the latest after this long, even when nothing woke it
# (an event lost between processes costs this much latency, never a message)
IDLE_POLL_SECONDS = 2.0


async def wait_for_work(sessionmaker: async_sessionmaker[AsyncSession], clock: Clock,
                        channel: str, *wakers: asyncio.Event) -> None:
    """What every channel's worker does with nothing to claim: wait until one of `wakers` is
    set, the channel's next row falls due, or IDLE_POLL_SECONDS have passed."""
    async with sessionmaker() as session:
        due = await next_due(session, channel)
    waits = [asyncio.create_task(waker.wait()) for waker in wakers]
    if due is not None:
        seconds = max((due - clock.now()).total_seconds(), 0)
        waits.append(asyncio.create_task(clock.sleep(seconds)))
    try:
        await asyncio.wait(waits, timeout=IDLE_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Outbox.status, func.count()).group_by(Outbox.status))
    return {status: count for status, count in rows}
