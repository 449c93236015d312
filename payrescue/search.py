"""Finding anything an agent remembers: a member by name or e-mail, or a line by its words.

One function for the console; the full-text part is the database's own
(`payrescue.db.search`: PostgreSQL's German and English configurations, SQLite's FTS5).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import Member, Message
from payrescue.db.search import matching_message_ids

MAX_QUERY = 100


@dataclass(frozen=True)
class Found:
    members: list[Member]
    lines: list[tuple[Message, str | None]]  # the line and its member's name


async def search(session: AsyncSession, query: str, limit: int = 50) -> Found:
    query = query.strip()[:MAX_QUERY]
    if not query:
        return Found([], [])
    needle = query.lower()  # % and _ typed by the agent are plain characters
    members = (await session.scalars(
        select(Member).where(or_(func.lower(Member.name).contains(needle, autoescape=True),
                                 func.lower(Member.email).contains(needle, autoescape=True)))
        .order_by(Member.name).limit(limit))).all()
    ids = await matching_message_ids(session, query, limit)
    lines = (await session.execute(
        select(Message, Member.name).join(Member, Member.id == Message.member_id)
        .where(Message.id.in_(ids)).order_by(Message.id.desc()))).all() if ids else []
    return Found(list(members), [(line, name) for line, name in lines])
