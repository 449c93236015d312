"""Console accounts: agents and admins, argon2 password hashes, the log-in lock-out.

Password hashing costs about 0.2 s of CPU on purpose; the `…_async` functions run it in
worker threads so that log-ins never stall the event loop (and every other request). At most
one thread fewer than the machine has cores hashes at a time: twenty parallel log-ins then
wait for each other, instead of taking every core from the requests that need little.

The lock-out is counted in the database in one statement (`charge_login_attempt`), before
the password is checked: parallel guesses each take one of the five tries, and the sixth
finds the account locked, however many arrive at once and on however many processes.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import tokens
from payrescue.db.models import Agent, ConsoleSession, UsedToken

ROLES = ("agent", "admin")
MIN_PASSWORD_LENGTH = 10
MAX_FAILED_LOGINS = 5
LOCK_MINUTES = 15
_hasher = PasswordHasher()
_dummy: dict[int, str] = {}  # per hasher: tests swap in a cheap one
_hashing = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1),
                              thread_name_prefix="argon2")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def dummy_hash() -> str:
    """A hash no password matches, verified when there is no account to check, so an
    unknown, locked or disabled address costs as much time as a wrong password."""
    key = id(_hasher)
    if key not in _dummy:
        _dummy[key] = _hasher.hash("not-a-real-password-only-for-timing")
    return _dummy[key]


async def hash_password_async(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_hashing, hash_password, password)


async def password_matches_async(password_hash: str | None, password: str) -> bool:
    """None checks against `dummy_hash()`, made in the thread too on its first use."""
    return await asyncio.get_running_loop().run_in_executor(
        _hashing, lambda: password_matches(password_hash or dummy_hash(), password))


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"at least {MIN_PASSWORD_LENGTH} characters, please"
    return None


def normalise_email(email: str) -> str:
    return email.strip().lower()


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
        email=normalise_email(email),
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
    return await session.scalar(select(Agent).where(Agent.email == normalise_email(email)))


@dataclass(frozen=True)
class Attempt:
    """A log-in try counted against an account that may still try."""

    agent_id: int
    password_hash: str


async def charge_login_attempt(session: AsyncSession, email: str, now: datetime
                               ) -> Attempt | None:
    """Count one try against the account as failed until the password proves right.

    None when no enabled, unlocked account has this address; the caller answers exactly
    as for a wrong password. The fifth try locks the account for LOCK_MINUTES; the first
    try after a lock ran out starts counting again at one.
    """
    tries = case((Agent.locked_until.is_not(None), 1), else_=Agent.failed_logins + 1)
    lock = now + timedelta(minutes=LOCK_MINUTES)
    row = (await session.execute(
        update(Agent)
        .where(Agent.email == normalise_email(email), Agent.disabled_at.is_(None),
               (Agent.locked_until.is_(None)) | (Agent.locked_until <= now))
        .values(failed_logins=tries,
                locked_until=case((tries >= MAX_FAILED_LOGINS, lock), else_=None))
        .returning(Agent.id, Agent.password_hash)
        .execution_options(synchronize_session=False)
    )).first()
    return Attempt(row[0], row[1]) if row else None


async def login_succeeded(session: AsyncSession, agent_id: int) -> None:
    await session.execute(update(Agent).where(Agent.id == agent_id)
                          .values(failed_logins=0, locked_until=None)
                          .execution_options(synchronize_session=False))


async def set_disabled(session: AsyncSession, email: str, now: datetime | None) -> Agent | None:
    """Disable (now) or enable (None) an account; disabling ends all its sessions."""
    agent = await find_agent(session, email)
    if agent is None:
        return None
    agent.disabled_at = now
    if now is not None:
        await session.execute(delete(ConsoleSession).where(ConsoleSession.agent_id == agent.id))
    await session.flush()
    return agent


# --- invitations and password resets ---------------------------------------------------
# An admin invites a person or resets a password; the person sets their own password through
# a signed link that works once (its id goes to `used_tokens`) and for PASSWORD_LINK_TTL.

PASSWORD_PURPOSE = "set-password"  # noqa: S105 - a token purpose, not a password
# not an argon2 hash, so no password ever matches it (`password_matches` says False)
NO_PASSWORD = "!"  # noqa: S105 - the mark of an account without one
PASSWORD_LINK_TTL = timedelta(days=3)
MAX_OPEN_LIMIT = 50


class PasswordLinkError(Exception):
    """The link is invalid, expired, used, or its account is gone or disabled."""


async def invite(session: AsyncSession, *, email: str, name: str, role: str, language: str,
                 now: datetime) -> Agent:
    """A new account that cannot sign in until its password is set through the link."""
    if role not in ROLES:
        raise ValueError("role")
    agent = Agent(email=normalise_email(email), name=name.strip(), role=role,
                  password_hash=NO_PASSWORD, language=language, created_at=now)
    session.add(agent)
    await session.flush()
    return agent


def password_link(secret: bytes, agent_id: int, now: datetime) -> str:
    """The path of a one-time set-password link (the token names no person)."""
    return "/console/set-password/" + tokens.issue(secret, PASSWORD_PURPOSE, agent_id,
                                                   PASSWORD_LINK_TTL, now)


async def agent_for_link(session: AsyncSession, secret: bytes, token: str,
                         now: datetime) -> tuple[Agent, str]:
    """The account the link sets a password for, and the link's id."""
    try:
        parsed = tokens.verify(secret, PASSWORD_PURPOSE, token, now)
    except tokens.TokenError as exc:
        raise PasswordLinkError(type(exc).__name__) from None
    if await session.get(UsedToken, parsed.token_id) is not None:
        raise PasswordLinkError("used")
    agent = await session.get(Agent, parsed.subject_id)
    if agent is None or agent.disabled_at is not None:
        raise PasswordLinkError("no account")
    return agent, parsed.token_id


async def set_password_by_link(session: AsyncSession, secret: bytes, token: str,
                               password: str, now: datetime) -> Agent:
    """Spend the link: the new password, no lock-out, every old session ended."""
    agent, token_id = await agent_for_link(session, secret, token, now)
    session.add(UsedToken(token_id=token_id, purpose=PASSWORD_PURPOSE[:20], used_at=now))
    await session.flush()  # a second use of the same link fails here (primary key)
    agent.password_hash = await hash_password_async(password)
    agent.failed_logins, agent.locked_until = 0, None
    await session.execute(delete(ConsoleSession).where(ConsoleSession.agent_id == agent.id))
    return agent


async def reset_password(session: AsyncSession, agent: Agent) -> None:
    """The old password stops working at once; the person sets a new one by link."""
    agent.password_hash = NO_PASSWORD
    await session.execute(delete(ConsoleSession).where(ConsoleSession.agent_id == agent.id))
