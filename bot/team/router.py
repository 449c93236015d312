"""The team group's face: binding the group, linking agents, and what agents do in topics.

- `/start agent-<token>` in a private chat links the agent's Telegram account (the deep link
  comes from the console);
- `/connect_team <code>` in a supergroup, sent by one of its administrators, binds it as the
  team group once topics are on and the bot may manage them (else it says what is missing);
- in a topic, a linked agent's message answers the member through the same domain function
  as a console reply (`payrescue.agent_replies`), claiming the conversation first if it
  waits; one starting with the note prefix is an internal note; the first post's buttons
  claim, send a fresh update link, resolve, or hand the member back to the bot.

Messages from group members who are not linked agents are ignored: they never reach a
member. Every change is committed, then announced on the bus like the console's own, so the
console follows live and `payrescue.teamgroup.reconcile` updates the topic.
"""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.enums import ChatMemberStatus, ChatType
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import CallbackQuery, ChatMemberAdministrator
from aiogram.types import Message as TelegramMessage
from sqlalchemy.ext.asyncio import AsyncSession

from bot.filters import PRIVATE_CHAT, InLoop
from bot.team import texts
from payrescue import assignment, teamgroup
from payrescue.agent_replies import (
    ReplyError,
    add_note,
    published_events,
    queue_agent_message,
    queue_update_link,
)
from payrescue.assignment import AssignmentError
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.conversations import ASSIGNED, HUMAN_OWNED, WAITING
from payrescue.db.models import Agent, Conversation
from payrescue.events import Bus, Event
from payrescue.i18n import _, use_language

log = logging.getLogger(__name__)
ADMINS = (ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR)


def build_router() -> Router:
    router = Router(name="team")
    # each magic filter wrapped in one InLoop (bot/filters.py): resolved in the event loop
    in_group = InLoop((F.chat.type == ChatType.SUPERGROUP) & F.from_user)
    router.message.register(
        link_agent, PRIVATE_CHAT, InLoop(F.from_user),
        CommandStart(deep_link=True, magic=F.args.startswith(teamgroup.AGENT_PAYLOAD_PREFIX)))
    router.message.register(connect_team, in_group, Command("connect_team"))
    router.message.register(topic_message, in_group,
                            InLoop(F.message_thread_id & F.is_topic_message))
    router.callback_query.register(
        topic_button,
        InLoop(F.data.startswith("team:") & (F.message.chat.type == ChatType.SUPERGROUP)))
    return router


# --- binding ------------------------------------------------------------------------------


async def link_agent(message: TelegramMessage, command: CommandObject, session: AsyncSession,
                     settings: Settings, clock: Clock) -> None:
    user = message.from_user
    assert user is not None  # noqa: S101 - the F.from_user filter
    try:
        agent = await teamgroup.link_agent(session, settings, command.args or "", user.id,
                                           clock.now())
    except teamgroup.TeamLinkError as exc:
        log.info("agent link refused (%s)", exc.reason)
        await message.answer(_link_failure(exc.reason))
        return
    await session.commit()
    log.info("agent %s linked a Telegram account", agent.id)
    with use_language(agent.language):
        await message.answer(_("Hello %(name)s, your Telegram account is linked. In the team "
                               "group you can now claim and answer conversations.")
                             % {"name": agent.name})


def _link_failure(reason: str) -> str:
    if reason == "expired":
        return _("This link has expired. Please open a new one in the console.")
    if reason == "used":
        return _("This link has already been used. Please open a new one in the console.")
    return _("This link is not valid. Please open a new one in the console.")


async def connect_team(message: TelegramMessage, command: CommandObject, bot: Bot,
                       session: AsyncSession, settings: Settings, clock: Clock,
                       bus: Bus) -> None:
    """Bind this group, once everything the team group needs is in place."""
    user = message.from_user
    assert user is not None  # noqa: S101 - the F.from_user filter
    missing = await _what_is_missing(message, bot, user.id)
    if not missing:
        problem = teamgroup.check_connect_code(settings, command.args or "", clock.now())
        if problem is None:
            try:
                await teamgroup.connect_group(session, settings, command.args or "",
                                              message.chat.id, user.id, clock.now())
            except teamgroup.TeamLinkError as exc:
                problem = exc.reason
        if problem is not None:
            missing.append(_code_problem(problem))
    if missing:
        log.info("team group not connected: %d thing(s) missing", len(missing))
        await message.answer("\n".join(
            [_("This group cannot become the team group yet:"), *(f"• {m}" for m in missing)]))
        return
    await session.commit()
    await bus.publish(Event(teamgroup.CONNECTED, {}))  # followers start keeping topics
    log.info("team group connected")
    await message.answer(_("Connected. Every conversation that needs a person gets its own "
                           "topic here. Agents link their Telegram account in the console "
                           "first; messages from anyone else are ignored."))


async def _what_is_missing(message: TelegramMessage, bot: Bot, user_id: int) -> list[str]:
    missing = []
    sender = await bot.get_chat_member(message.chat.id, user_id)
    if sender.status not in ADMINS:
        missing.append(_("Only an administrator of the group can connect it."))
    if not message.chat.is_forum:
        missing.append(_("Topics are off: turn on “Topics” in the group's settings."))
    me = await bot.get_chat_member(message.chat.id, bot.id)
    if not (me.status == ChatMemberStatus.CREATOR or (
            isinstance(me, ChatMemberAdministrator) and me.can_manage_topics)):
        missing.append(_("The bot must be an administrator with the right “Manage topics”."))
    return missing


def _code_problem(reason: str) -> str:
    if reason == "expired":
        return _("The code has expired: run “payrescue team-group link” for a new one.")
    if reason == "used":
        return _("The code has already been used: run “payrescue team-group link” for a "
                 "new one.")
    return _("The code is not valid: send /connect_team followed by the code that "
             "“payrescue team-group link” printed.")


# --- in a topic ---------------------------------------------------------------------------


async def _context(session: AsyncSession, chat_id: int, thread_id: int | None,
                   telegram_user_id: int) -> tuple[Agent, Conversation] | None:
    """The linked agent and the conversation behind a topic of the team group, or None:
    another group, an unknown topic, or someone who is not a linked agent (ignored)."""
    group = await teamgroup.current_group(session)
    if group is None or group.chat_id != chat_id or thread_id is None:
        return None
    agent = await teamgroup.agent_for_telegram(session, telegram_user_id)
    if agent is None:
        return None
    topic = await teamgroup.topic_at(session, chat_id, thread_id)
    if topic is None:
        return None
    conversation = await session.get(Conversation, topic.conversation_id)
    return (agent, conversation) if conversation is not None else None


async def _take(session: AsyncSession, conversation: Conversation, agent: Agent,
                clock: Clock) -> tuple[bool, str | None]:
    """Make sure the agent holds the conversation, claiming it if it waits: (claimed just
    now, why the agent may not act on it)."""
    if conversation.status == WAITING:
        result = await assignment.claim(session, conversation.id, agent.id, clock.now())
        await session.refresh(conversation)
        if result.won:
            return True, None
    if conversation.status not in HUMAN_OWNED:
        return False, _("This conversation is no longer with the team.")
    if conversation.status == ASSIGNED and conversation.assigned_agent_id != agent.id \
            and agent.role != "admin":
        holder = await session.get(Agent, conversation.assigned_agent_id)
        return False, _("%(name)s holds this conversation.") % {
            "name": holder.name if holder else "?"}
    return False, None


async def topic_message(message: TelegramMessage, session: AsyncSession, settings: Settings,
                        clock: Clock, bus: Bus) -> None:
    user = message.from_user
    assert user is not None  # noqa: S101 - the F.from_user filter
    found = await _context(session, message.chat.id, message.message_thread_id, user.id)
    if found is None:
        log.info("group message ignored", extra={"telegram_message_id": message.message_id})
        return
    agent, conversation = found
    text = message.text or message.caption or ""
    media = _media(message)
    if not text and media is None:
        return  # a service message (a topic closed by hand, a member joined)
    events: list[Event] = []
    try:
        if text.startswith(settings.team_note_prefix):
            line = await add_note(session, conversation, agent,
                                  text[len(settings.team_note_prefix):], clock.now(),
                                  via=teamgroup.VIA_TEAM)
        else:
            claimed, refusal = await _take(session, conversation, agent, clock)
            if refusal is not None:
                await _say_in_topic(session, conversation, refusal, clock, bus)
                return
            if claimed:
                events.append(assignment.updated_event(conversation))
            line = await queue_agent_message(session, conversation, agent, text, clock.now(),
                                             settings, media=media, via=teamgroup.VIA_TEAM)
    except ReplyError as exc:  # e.g. a file for a member reached by e-mail
        await _say_in_topic(session, conversation, str(exc), clock, bus, events)
        return
    await session.commit()
    for event in [*events, *published_events(line)]:
        await bus.publish(event)


async def _say_in_topic(session: AsyncSession, conversation: Conversation, text: str,
                        clock: Clock, bus: Bus, events: list[Event] | None = None) -> None:
    """A short word to the agents in the topic (through the outbox, like every post)."""
    topic = await teamgroup.topic_of(session, conversation.id)
    row = teamgroup.queue_row(session, topic, teamgroup.OP_NOTICE, clock.now(), text=text) \
        if topic is not None else None
    await session.commit()  # with a claim made on the way, if any
    for event in events or []:
        await bus.publish(event)
    if row is not None:
        await bus.publish(Event("outbox.queued", {"outbox_id": row.id}))


def _media(message: TelegramMessage) -> dict[str, str | None] | None:
    if message.photo:
        return {"kind": "photo", "file_id": message.photo[-1].file_id, "mime_type": "image/jpeg"}
    if message.document:
        return {"kind": "document", "file_id": message.document.file_id,
                "file_name": message.document.file_name,
                "mime_type": message.document.mime_type}
    if message.voice:
        return {"kind": "voice", "file_id": message.voice.file_id,
                "mime_type": message.voice.mime_type}
    if message.sticker:
        return {"kind": "sticker", "file_id": message.sticker.file_id}
    return None


async def topic_button(query: CallbackQuery, session: AsyncSession, settings: Settings,
                       clock: Clock, bus: Bus) -> None:
    """Claim, fresh link, resolve, back to bot: the console's steps, from the first post."""
    data = query.data or ""
    action = next((a for a in texts.ACTIONS if data.startswith(a)), None)
    message = query.message
    thread_id = getattr(message, "message_thread_id", None)
    found = await _context(session, message.chat.id, thread_id, query.from_user.id) \
        if message is not None and action is not None else None
    if found is None:
        await _answer(query, _("Link your Telegram account in the console first."), alert=True)
        return
    agent, conversation = found
    with use_language(agent.language):
        try:
            answer, events = await _act(action, session, conversation, agent, settings, clock)
        except (AssignmentError, ReplyError) as exc:
            await session.rollback()
            await _answer(query, _explain(exc), alert=True)
            return
        await session.commit()
        for event in events:
            await bus.publish(event)
        await _answer(query, answer)


async def _act(action: str, session: AsyncSession, conversation: Conversation, agent: Agent,
               settings: Settings, clock: Clock) -> tuple[str, list[Event]]:
    now = clock.now()
    claimed, refusal = await _take(session, conversation, agent, clock)
    if action == texts.CLAIM:
        if claimed:
            return _("It's yours."), [assignment.updated_event(conversation)]
        raise AssignmentError(refusal or _("You hold this conversation already."))
    if refusal is not None:
        raise AssignmentError(refusal)
    events = [assignment.updated_event(conversation)] if claimed else []
    if action == texts.LINK:
        line = await queue_update_link(session, conversation, agent, settings, now)
        return _("Fresh link sent."), [*events, *published_events(line)]
    step = assignment.resolve if action == texts.RESOLVE else assignment.hand_back
    changed = await step(session, conversation.id, agent, now)
    answer = _("Resolved.") if action == texts.RESOLVE else _("Back with the bot.")
    return answer, [assignment.updated_event(changed)]


def _explain(exc: Exception) -> str:
    text = str(exc)
    if text == "not yours":
        return _("Another agent holds this conversation.")
    if text.startswith("not possible while"):
        return _("That is not possible in the conversation's current state.")
    return text


async def _answer(query: CallbackQuery, text: str, *, alert: bool = False) -> None:
    try:
        await query.answer(text, show_alert=alert)
    except TelegramAPIError as exc:  # an old button: the answer is cosmetic
        log.info("callback answer not shown: %s", exc.__class__.__name__)
