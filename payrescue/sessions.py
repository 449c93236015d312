"""Server-side sessions of the agent console.

The browser's cookie carries a random token; the database keeps only its SHA-256, the
agent, and three moments. A session is valid while its row exists, its agent is enabled,
it was used within the idle timeout and its absolute lifetime has not run out
(`PAYRESCUE_SESSION_IDLE_MINUTES`, `PAYRESCUE_SESSION_HOURS`). So deleting rows ends
sessions at once in every process sharing the database: log-out (one row), a password
change and "sign out everywhere" (all of the agent's rows), `payrescue agents disable`.
A copied cookie is worth nothing afterwards.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.config import Settings
from payrescue.db.models import Agent, ConsoleSession

TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often
MAX_TOKEN_LENGTH = 100


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


async def start(db: AsyncSession, agent_id: int, now: datetime, settings: Settings) -> str:
    """A new session for the agent; returns the token for the cookie."""
    token = secrets.token_urlsafe(32)
    db.add(ConsoleSession(token_hash=_digest(token), agent_id=agent_id, created_at=now,
                          last_seen_at=now,
                          expires_at=now + timedelta(hours=settings.session_hours)))
    await db.flush()
    return token


async def agent_of(db: AsyncSession, token: object, now: datetime, settings: Settings
                   ) -> Agent | None:
    """The agent a cookie's token signs in, or None (and the stale row gone)."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        return None
    row = await db.get(ConsoleSession, _digest(token))
    if row is None:
        return None
    idle_end = row.last_seen_at + timedelta(minutes=settings.session_idle_minutes)
    agent = await db.get(Agent, row.agent_id)
    if now >= row.expires_at or now >= idle_end or agent is None or agent.disabled_at:
        await db.delete(row)
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
    return agent


async def end(db: AsyncSession, token: object) -> None:
    if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LENGTH:
        await db.execute(delete(ConsoleSession).where(
            ConsoleSession.token_hash == _digest(token)))


async def end_all(db: AsyncSession, agent_id: int) -> int:
    """End every session of the agent; returns how many there were."""
    result = await db.execute(delete(ConsoleSession).where(ConsoleSession.agent_id == agent_id))
    return result.rowcount or 0


async def counts(db: AsyncSession) -> dict[int, int]:
    """Open sessions per agent id (expired rows count until their next use)."""
    return dict((await db.execute(
        select(ConsoleSession.agent_id, func.count()).group_by(ConsoleSession.agent_id)
    )).all())
