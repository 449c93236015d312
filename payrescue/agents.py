"""Console accounts: agents and admins, with argon2 password hashes."""

from __future__ import annotations

from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import Agent

ROLES = ("agent", "admin")
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"at least {MIN_PASSWORD_LENGTH} characters, please"
    return None


async def add_agent(
    session: AsyncSession,
    *,
    email: str,
    name: str,
    role: str,
    password: str,
    now: datetime,
    language: str = "en",
) -> Agent:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    problem = password_problem(password)
    if problem:
        raise ValueError(f"password: {problem}")
    agent = Agent(
        email=email.strip().lower(),
        name=name.strip(),
        role=role,
        password_hash=hash_password(password),
        language=language,
        created_at=now,
    )
    session.add(agent)
    await session.flush()
    return agent


async def find_agent(session: AsyncSession, email: str) -> Agent | None:
    return await session.scalar(select(Agent).where(Agent.email == email.strip().lower()))
