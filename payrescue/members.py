"""Members and their Telegram link: deep-link tokens, linking a chat, language choice."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager

from payrescue import tokens
from payrescue.db.models import Conversation, Member, TelegramLink, UsedToken
from payrescue.i18n import normalise

LINK_PURPOSE = "link"


async def add_member(
    session: AsyncSession,
    *,
    email: str,
    name: str,
    now: datetime,
    language: str | None = None,
    time_zone: str | None = None,
) -> Member:
    member = Member(
        email=email.strip().lower(),
        name=name.strip(),
        language=normalise(language),
        time_zone=time_zone,
        member_since=now,
        created_at=now,
    )
    session.add(member)
    await session.flush()
    return member


async def find_by_email(session: AsyncSession, email: str) -> Member | None:
    return await session.scalar(select(Member).where(Member.email == email.strip().lower()))


async def find_by_chat(session: AsyncSession, chat_id: int
                       ) -> tuple[Member | None, Conversation | None]:
    """The member linked to this chat and their latest conversation (None when there is
    none yet), or (None, None) for a chat nobody linked.

    Runs for every update, so it is one query: the join reads the link (`member.telegram`
    is filled from it), and the latest conversation, which decides where a member's message
    goes, comes with it rather than by a query of its own."""
    row = (await session.execute(_BY_CHAT, {"chat_id": chat_id})).first()
    return (row[0], row[1]) if row is not None else (None, None)


def _by_chat() -> Select[tuple[Member, Conversation]]:
    latest = (select(func.max(Conversation.id)).where(Conversation.member_id == Member.id)
              .correlate(Member).scalar_subquery())
    return (select(Member, Conversation).join(Member.telegram)
            .options(contains_eager(Member.telegram))
            .outerjoin(Conversation, Conversation.id == latest)
            .where(TelegramLink.chat_id == bindparam("chat_id")))


# built once: building this statement cost more than running it, for every update
_BY_CHAT = _by_chat()


def link_token(secret: bytes, member: Member, now: datetime, days: int) -> str:
    return tokens.issue(secret, LINK_PURPOSE, member.id, timedelta(days=days), now)


def deep_link(bot_username: str, token: str) -> str:
    return f"https://t.me/{bot_username}?start={token}"


class LinkFailure(enum.Enum):
    INVALID = "invalid"
    EXPIRED = "expired"
    USED = "used"
    UNKNOWN_MEMBER = "unknown_member"


@dataclass(frozen=True)
class LinkResult:
    member: Member | None
    failure: LinkFailure | None = None
    moved: bool = False  # the member was linked to another chat before


async def link_chat(
    session: AsyncSession,
    *,
    token: str,
    secret: bytes,
    chat_id: int,
    telegram_user_id: int,
    language_code: str | None,
    now: datetime,
) -> LinkResult:
    """Spend a deep-link token and link this chat to its member.

    A failed attempt changes nothing. The token is single-use: the insert of its id is what
    makes a second use (even a concurrent one) fail.
    """
    try:
        parsed = tokens.verify(secret, LINK_PURPOSE, token, now)
    except tokens.TokenExpired:
        return LinkResult(None, LinkFailure.EXPIRED)
    except tokens.TokenError:
        return LinkResult(None, LinkFailure.INVALID)
    member = await session.get(Member, parsed.subject_id)
    if member is None or member.erased_at is not None:
        return LinkResult(None, LinkFailure.UNKNOWN_MEMBER)
    try:
        async with session.begin_nested():
            session.add(UsedToken(token_id=parsed.token_id, purpose=LINK_PURPOSE, used_at=now))
    except IntegrityError:
        return LinkResult(None, LinkFailure.USED)

    # one chat belongs to one member: a chat re-used by another member is moved over
    other = await session.scalar(
        select(TelegramLink).where(TelegramLink.chat_id == chat_id,
                                   TelegramLink.member_id != member.id)
    )
    if other is not None:
        await session.delete(other)
        await session.flush()
    link = await session.scalar(select(TelegramLink).where(TelegramLink.member_id == member.id))
    moved = link is not None and link.chat_id != chat_id
    if link is None:
        link = TelegramLink(member_id=member.id, chat_id=chat_id)
        session.add(link)
    link.chat_id = chat_id
    link.telegram_user_id = telegram_user_id
    link.language_code = language_code
    link.linked_at = now
    member.unreachable = False
    await session.flush()
    await session.refresh(member, ["telegram"])
    return LinkResult(member, moved=moved)


async def set_language(session: AsyncSession, member: Member, language: str) -> None:
    chosen = normalise(language)
    if chosen is None:
        raise ValueError(f"unsupported language: {language!r}")
    member.language = chosen
    await session.flush()
