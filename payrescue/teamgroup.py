"""The team group: the agents' Telegram supergroup, one forum topic per conversation that
needs a person, in step with the web console.

Binding. `payrescue team-group link` prints a one-time code (a signed token, spent in
`used_tokens`); an administrator sends `/connect_team <code>` in the group, and the newest
bound group is the one in use. Agents link their own Telegram account from the console with
a one-time deep link (`/start agent-<token>`); only linked agents act in the group.

Topics. A conversation that waits for a person gets a `TeamTopic` (or the member's topic
closed less than `team_topic_reopen_hours` ago, reopened). What the topic shows is derived
from the conversation's timeline: `reconcile()` looks at the conversation and at its
timeline entries newer than the topic's `mirrored_message_id`, and queues outbox rows of
the `team` channel for what the topic still lacks — open it, post a member's message or a
console reply, edit its first post (claimed, back in the queue), close it. It runs on every
bus event about the conversation, so a missed event costs latency, never a line; the rows
are delivered in order by `bot.team.poster` under the group's own limit.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import outbox, timeline, tokens
from payrescue.config import Settings
from payrescue.conversations import HUMAN_OWNED
from payrescue.db.models import (
    Agent,
    Conversation,
    Message,
    Outbox,
    TeamGroup,
    TeamTopic,
    UsedToken,
)

CONNECT_PURPOSE = "team-connect"
AGENT_PURPOSE = "team-agent"
AGENT_PAYLOAD_PREFIX = "agent-"  # /start agent-<token>: 6 + 46 characters, within 64
VIA_TEAM = "team"  # timeline `data.via` of what an agent did in the group (shown there already)
OPEN, CLOSED = "open", "closed"

# what a row of the `team` channel asks the poster to do (payload "op")
OP_OPEN = "open"  # create (or reopen, or recreate) the topic and post its first post
OP_POST = "post"  # a timeline line (payload "message_ids": several when batched)
OP_EDIT = "edit"  # the first post again, as the conversation is now (claimed, waiting)
OP_CLOSE = "close"  # the first post as it ends, then close the topic
OP_NOTICE = "notice"  # a short word to the agents in the topic (payload "text")

# timeline entries that change the first post, or end the topic
_EDITS = {timeline.CLAIMED, timeline.TRANSFERRED, timeline.TO_QUEUE, timeline.SNOOZED}
_ENDS = {timeline.RESOLVED, timeline.HANDED_BACK, timeline.CANCELLED}
CONNECTED = "team.connected"  # the bus topic once a group is connected (in any process)


class TeamLinkError(Exception):
    """A code or deep link that binds nothing: `reason` is invalid, expired or used."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- binding the group and the agents --------------------------------------------------


def connect_code(settings: Settings, now: datetime) -> str:
    """The one-time code for `/connect_team <code>`."""
    return tokens.issue(settings.secret, CONNECT_PURPOSE, 0,
                        timedelta(minutes=settings.team_code_minutes), now)


async def _spend(session: AsyncSession, settings: Settings, purpose: str, token: str,
                 now: datetime) -> tokens.Token:
    try:
        parsed = tokens.verify(settings.secret, purpose, token, now)
    except tokens.TokenExpired:
        raise TeamLinkError("expired") from None
    except tokens.TokenError:
        raise TeamLinkError("invalid") from None
    if await session.get(UsedToken, parsed.token_id) is not None:
        raise TeamLinkError("used")
    session.add(UsedToken(token_id=parsed.token_id, purpose=purpose[:20], used_at=now))
    return parsed


async def connect_group(session: AsyncSession, settings: Settings, code: str, chat_id: int,
                        by_telegram_user_id: int, now: datetime) -> TeamGroup:
    """Spend the code and make `chat_id` the team group (the caller checked the group)."""
    await _spend(session, settings, CONNECT_PURPOSE, code.strip(), now)
    group = await session.scalar(select(TeamGroup).where(TeamGroup.chat_id == chat_id))
    if group is None:
        group = TeamGroup(chat_id=chat_id, linked_at=now,
                          linked_by_telegram_user_id=by_telegram_user_id)
        session.add(group)
    else:
        group.linked_at = now
        group.linked_by_telegram_user_id = by_telegram_user_id
    await session.flush()
    return group


def check_connect_code(settings: Settings, code: str, now: datetime) -> str | None:
    """Why a code cannot bind (None: it may), without spending it."""
    try:
        tokens.verify(settings.secret, CONNECT_PURPOSE, code.strip(), now)
    except tokens.TokenExpired:
        return "expired"
    except tokens.TokenError:
        return "invalid"
    return None


async def current_group(session: AsyncSession) -> TeamGroup | None:
    return await session.scalar(
        select(TeamGroup).order_by(TeamGroup.linked_at.desc(), TeamGroup.id.desc()).limit(1))


def agent_link_payload(settings: Settings, agent: Agent, now: datetime) -> str:
    """The /start payload that links the agent's Telegram account (one use)."""
    return AGENT_PAYLOAD_PREFIX + tokens.issue(
        settings.secret, AGENT_PURPOSE, agent.id,
        timedelta(minutes=settings.team_code_minutes), now)


async def link_agent(session: AsyncSession, settings: Settings, payload: str,
                     telegram_user_id: int, now: datetime) -> Agent:
    """Spend the deep link and note the agent's Telegram account (taken from whichever
    agent had it before: one account speaks for one agent)."""
    parsed = await _spend(session, settings, AGENT_PURPOSE,
                          payload.removeprefix(AGENT_PAYLOAD_PREFIX), now)
    agent = await session.get(Agent, parsed.subject_id)
    if agent is None or agent.disabled_at is not None:
        raise TeamLinkError("invalid")
    await session.execute(
        update(Agent).where(Agent.telegram_user_id == telegram_user_id, Agent.id != agent.id)
        .values(telegram_user_id=None).execution_options(synchronize_session=False))
    await session.flush()
    agent.telegram_user_id = telegram_user_id
    await session.flush()
    return agent


async def agent_for_telegram(session: AsyncSession, telegram_user_id: int) -> Agent | None:
    """The linked, enabled agent behind a Telegram account, or None (ignored in the group)."""
    return await session.scalar(select(Agent).where(
        Agent.telegram_user_id == telegram_user_id, Agent.disabled_at.is_(None)))


# --- topics ------------------------------------------------------------------------------


async def topic_of(session: AsyncSession, conversation_id: int) -> TeamTopic | None:
    return await session.scalar(
        select(TeamTopic).where(TeamTopic.conversation_id == conversation_id))


async def topic_at(session: AsyncSession, chat_id: int, thread_id: int) -> TeamTopic | None:
    """The topic behind a thread of the group (the newest, should Telegram reuse ids)."""
    return await session.scalar(
        select(TeamTopic).where(TeamTopic.group_chat_id == chat_id,
                                TeamTopic.thread_id == thread_id)
        .order_by(TeamTopic.id.desc()).limit(1))


def queue_row(session: AsyncSession, topic: TeamTopic, op: str, now: datetime,
              line_id: int | None = None, **data: Any) -> Outbox:
    """A row of the `team` channel for the poster: one chat (the group), first in, first
    out — every row has the same priority, so the topic sees things in the order they
    happened. A row made of timeline line `line_id` has a dedupe key, so two reconcilers
    (two processes) racing for the same line never post it twice: the loser's commit fails
    and it starts again from the winner's `mirrored_message_id`."""
    row = Outbox(
        dedupe_key=f"team:{topic.id}:{line_id}" if line_id is not None else None,
        member_id=None, channel=outbox.TEAM, chat_id=topic.group_chat_id, kind="team",
        priority=outbox.PRIORITY_BOT, method=op,
        payload={"op": op, "topic_id": topic.id, **data},
        status=outbox.QUEUED, attempts=0, not_before=now, created_at=now,
    )
    session.add(row)
    return row


async def _latest_line_id(session: AsyncSession, member_id: int) -> int:
    return await session.scalar(
        select(func.max(Message.id)).where(Message.member_id == member_id)) or 0


async def _open_topic(session: AsyncSession, group: TeamGroup, conversation: Conversation,
                      settings: Settings, now: datetime, rows: list[Outbox]) -> TeamTopic:
    """The conversation's topic: its own or the member's one closed lately (reopened), or a
    new one. Only what happens from now on is mirrored; the first post carries the context."""
    window = timedelta(hours=settings.team_topic_reopen_hours)
    topic = await session.scalar(
        select(TeamTopic).where(TeamTopic.member_id == conversation.member_id,
                                TeamTopic.group_chat_id == group.chat_id,
                                TeamTopic.status == CLOSED,
                                or_(TeamTopic.conversation_id == conversation.id,
                                    TeamTopic.closed_at >= now - window))
        .order_by(TeamTopic.closed_at.desc()).limit(1))
    if topic is None:
        topic = TeamTopic(member_id=conversation.member_id, group_chat_id=group.chat_id,
                          created_at=now)
        session.add(topic)
    else:
        # the old conversation gives its topic up (one topic per conversation)
        await session.execute(
            delete(TeamTopic).where(TeamTopic.conversation_id == conversation.id,
                                    TeamTopic.id != topic.id))
    topic.conversation_id = conversation.id
    topic.status = OPEN
    topic.closed_at = None
    topic.updated_at = now
    topic.mirrored_message_id = await _latest_line_id(session, conversation.member_id)
    await session.flush()
    rows.append(queue_row(session, topic, OP_OPEN, now))
    return topic


def _wanted(line: Message) -> str | None:
    """What the topic makes of a timeline line: a post, the first post edited, the end."""
    via = (line.data or {}).get("via")
    if line.sender == timeline.MEMBER:
        return OP_POST
    if line.sender in (timeline.AGENT, timeline.NOTE):
        return None if via == VIA_TEAM else OP_POST
    if line.sender == timeline.SYSTEM and line.kind in _EDITS:
        return OP_EDIT
    if line.sender == timeline.SYSTEM and line.kind in _ENDS:
        return OP_CLOSE
    return None


async def reconcile(session: AsyncSession, conversation_id: int, settings: Settings,
                    now: datetime, group: TeamGroup | None = None) -> list[Outbox]:
    """Queue what the conversation's topic still lacks; returns the rows (the caller
    commits and publishes `outbox.queued`). Nothing without a bound group (`group`, when
    the caller looked it up already)."""
    group = group or await current_group(session)
    conversation = await session.get(Conversation, conversation_id)
    if group is None or conversation is None:
        return []
    rows: list[Outbox] = []
    topic = await session.scalar(
        select(TeamTopic).where(TeamTopic.conversation_id == conversation_id,
                                TeamTopic.group_chat_id == group.chat_id)
        .with_for_update())  # PostgreSQL: two reconcilers never queue the same line twice
    if topic is not None and topic.status == OPEN:
        lines = (await session.scalars(
            select(Message).where(Message.conversation_id == conversation_id,
                                  Message.id > topic.mirrored_message_id)
            .order_by(Message.id))).all()
        for line in lines:
            topic.mirrored_message_id = line.id
            op = _wanted(line)
            if op == OP_POST:
                rows.append(queue_row(session, topic, OP_POST, now, line.id,
                                      message_ids=[line.id]))
            elif op == OP_EDIT:
                rows.append(queue_row(session, topic, OP_EDIT, now, line.id))
            elif op == OP_CLOSE:
                rows.append(queue_row(session, topic, OP_CLOSE, now, line.id,
                                      outcome=line.kind))
                topic.status = CLOSED
                topic.closed_at = now
                # what follows belongs to the member's next time with a person, if any
                topic.mirrored_message_id = lines[-1].id
                break
        topic.updated_at = now
    if conversation.status in HUMAN_OWNED and (topic is None or topic.status == CLOSED):
        topic = await _open_topic(session, group, conversation, settings, now, rows)
    await session.flush()
    return rows


async def lagging(session: AsyncSession) -> list[int]:
    """Conversations whose topic misses something: waiting for a person without an open
    topic in the current group, or with timeline lines the topic has not taken yet (what
    a missed bus event leaves behind)."""
    group = await current_group(session)
    if group is None:
        return []
    open_topic = select(TeamTopic.conversation_id).where(
        TeamTopic.group_chat_id == group.chat_id, TeamTopic.status == OPEN)
    without = select(Conversation.id).where(Conversation.status.in_(HUMAN_OWNED),
                                            Conversation.id.not_in(open_topic))
    newest = (select(func.max(Message.id))
              .where(Message.conversation_id == TeamTopic.conversation_id)
              .correlate(TeamTopic).scalar_subquery())
    behind = select(TeamTopic.conversation_id).where(
        TeamTopic.group_chat_id == group.chat_id, TeamTopic.status == OPEN,
        TeamTopic.mirrored_message_id < newest)
    return sorted(set(await session.scalars(without)) | set(await session.scalars(behind)))
