"""Everything the emulated Telegram knows: bots, members, conversations and updates.

Shapes returned by `*_api()` methods are exactly the Bot API's, so aiogram's pydantic
types parse them; `*_view()` shapes are for tests and the control API and carry extras
(the text as the bot sent it, the edit history).
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import EmulatorError, NotFoundError
from .markup import inline_keyboard

TOKEN_RE = re.compile(r"^(\d+):[A-Za-z0-9_-]+$")
FIRST_USER_ID = 700_000_001  # well away from typical bot ids taken from tokens


class Notifier:
    """Wakes every waiter whenever anything changes; waiters re-check their own condition.

    Futures are created on the waiting coroutine's loop, so one emulator can serve tests
    that each run their own event loop.
    """

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()
        self.closed = False

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def close(self) -> None:
        """Release every waiter for good (server shutdown: long polls must not linger)."""
        self.closed = True
        self.notify()

    async def wait_for(self, predicate: Callable[[], bool], within: float | None) -> bool:
        """Wait up to `within` seconds until `predicate()` holds; False on timeout or close."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while not predicate():
            if self.closed:
                return False
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                return predicate()
            finally:
                self._waiters.discard(waiter)
        return True


@dataclass
class User:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None

    def to_api(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key):
                user[key] = getattr(self, key)
        return user

    def chat_api(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.last_name:
            chat["last_name"] = self.last_name
        if self.username:
            chat["username"] = self.username
        return chat


@dataclass
class Webhook:
    url: str
    secret_token: str | None = None
    max_connections: int = 40
    last_error_date: int | None = None
    last_error_message: str | None = None


@dataclass
class BotAccount:
    id: int
    token: str
    username: str
    first_name: str
    webhook: Webhook | None = None
    allowed_updates: list[str] | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)
    next_update_id: int = 1
    poll_generation: int = 0  # bumps on each getUpdates, to end older concurrent polls
    commands: list[dict[str, Any]] = field(default_factory=list)
    # per language_code ("" = for everyone else), as Telegram keeps them
    localized_commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    short_descriptions: dict[str, str] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def webhook_info(self) -> dict[str, Any]:
        """Bot API `WebhookInfo`."""
        info: dict[str, Any] = {
            "url": self.webhook.url if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self.pending),
        }
        if self.webhook:
            info["max_connections"] = self.webhook.max_connections
            info["ip_address"] = "127.0.0.1"
            if self.webhook.last_error_date:
                info["last_error_date"] = self.webhook.last_error_date
                info["last_error_message"] = self.webhook.last_error_message
        if self.allowed_updates:
            info["allowed_updates"] = self.allowed_updates
        return info

    def summary(self) -> dict[str, Any]:
        return {
            **self.to_api(),
            "webhook_url": self.webhook.url if self.webhook else "",
            "pending_update_count": len(self.pending),
        }


@dataclass
class Message:
    """One message in a bot-member conversation, sent by either side."""

    message_id: int
    date: int
    chat: User | Group  # a private chat is its member; a group is its own chat
    sender: dict[str, Any]  # Bot API User of the sender
    from_bot: bool
    text: str | None = None  # as sent, markup included
    parse_mode: str | None = None
    plain_text: str | None = None  # what the member sees
    entities: list[dict[str, Any]] = field(default_factory=list)
    caption: str | None = None
    caption_plain: str | None = None
    caption_entities: list[dict[str, Any]] = field(default_factory=list)
    media: tuple[str, Any] | None = None  # ("photo", [...]) etc., Bot API shape
    media_file_id: str | None = None
    reply_markup: dict[str, Any] | None = None
    edit_date: int | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False
    reply_to: dict[str, Any] | None = None  # the quoted message (reply_parameters), API shape
    thread_id: int | None = None  # the forum topic (message_thread_id) in a group
    service: dict[str, Any] | None = None  # e.g. {"forum_topic_created": {...}}

    def to_api(self) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "message_id": self.message_id,
            "from": self.sender,
            "chat": self.chat.chat_api(),
            "date": self.date,
        }
        if self.thread_id is not None:
            msg["message_thread_id"] = self.thread_id
            msg["is_topic_message"] = True
        if self.service:
            msg.update(self.service)
        if self.edit_date is not None:
            msg["edit_date"] = self.edit_date
        if self.plain_text is not None:
            msg["text"] = self.plain_text
            if self.entities:
                msg["entities"] = self.entities
        if self.media is not None:
            msg[self.media[0]] = self.media[1]
        if self.caption_plain:
            msg["caption"] = self.caption_plain
            if self.caption_entities:
                msg["caption_entities"] = self.caption_entities
        keyboard = inline_keyboard(self.reply_markup)
        if keyboard:
            msg["reply_markup"] = keyboard
        if self.reply_to is not None:
            msg["reply_to_message"] = self.reply_to
        return copy.deepcopy(msg)

    def snapshot(self) -> dict[str, Any]:
        """The editable part, kept in `edits` before each edit."""
        return copy.deepcopy(
            {
                "text": self.text,
                "parse_mode": self.parse_mode,
                "plain_text": self.plain_text,
                "entities": self.entities,
                "caption": self.caption,
                "reply_markup": self.reply_markup,
                "date": self.edit_date or self.date,
            }
        )

    def to_view(self) -> dict[str, Any]:
        view = {
            "message_id": self.message_id,
            "date": self.date,
            "from_bot": self.from_bot,
            "from": self.sender,
            "chat_id": self.chat.id,
            "text": self.text,
            "parse_mode": self.parse_mode,
            "plain_text": self.plain_text,
            "entities": self.entities,
            "caption": self.caption,
            "caption_plain": self.caption_plain,
            "caption_entities": self.caption_entities,
            "reply_markup": self.reply_markup,
            "edit_date": self.edit_date,
            "edits": self.edits,
            "deleted": self.deleted,
            "media": None,
            "reply_to_message_id": self.reply_to["message_id"] if self.reply_to else None,
            "message_thread_id": self.thread_id,
            "service": self.service,
        }
        if self.media is not None:
            view[self.media[0]] = self.media[1]
            view["media"] = {"kind": self.media[0], "file_id": self.media_file_id}
        return copy.deepcopy(view)


@dataclass
class Conversation:
    """The private chat between one bot and one member."""

    bot_id: int
    user: User
    messages: list[Message] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0
    blocked: bool = False
    next_message_id: int = 1

    @property
    def chat(self) -> User:
        """What the Bot API calls the chat: for a private chat, the member."""
        return self.user

    def find(self, message_id: int) -> Message | None:
        for message in self.messages:
            if message.message_id == message_id and not message.deleted:
                return message
        return None


@dataclass
class Topic:
    """A forum topic; its id is the id of the service message that opened it."""

    thread_id: int
    name: str
    icon_color: int
    icon_custom_emoji_id: str | None = None
    closed: bool = False
    deleted: bool = False

    def to_api(self) -> dict[str, Any]:
        topic: dict[str, Any] = {
            "message_thread_id": self.thread_id,
            "name": self.name,
            "icon_color": self.icon_color,
        }
        if self.icon_custom_emoji_id:
            topic["icon_custom_emoji_id"] = self.icon_custom_emoji_id
        return topic

    def to_view(self) -> dict[str, Any]:
        return {**self.to_api(), "closed": self.closed, "deleted": self.deleted}


@dataclass
class GroupMember:
    """A user's or bot's place in a group: creator, administrator or member."""

    status: str
    can_manage_topics: bool = False

    @property
    def is_admin(self) -> bool:
        return self.status in ("creator", "administrator")

    def to_api(self, user: dict[str, Any]) -> dict[str, Any]:
        """Bot API `ChatMember` (Owner, Administrator or Member)."""
        if self.status == "creator":
            return {"status": "creator", "user": user, "is_anonymous": False}
        if self.status == "member":
            return {"status": "member", "user": user}
        if self.status == "left":
            return {"status": "left", "user": user}
        rights = dict.fromkeys(ADMIN_RIGHTS, False)
        rights["can_manage_topics"] = self.can_manage_topics
        return {"status": "administrator", "user": user, "can_be_edited": False,
                "is_anonymous": False, **rights}


# What a `ChatMemberAdministrator` carries besides `can_manage_topics`; the emulator gives
# bots only the topic right, which is the one the team group needs.
ADMIN_RIGHTS = (
    "can_manage_chat", "can_delete_messages", "can_manage_video_chats", "can_restrict_members",
    "can_promote_members", "can_change_info", "can_invite_users", "can_post_stories",
    "can_edit_stories", "can_delete_stories", "can_send_welcome_messages", "can_pin_messages",
    "can_manage_topics",
)


@dataclass
class Group:
    """A supergroup (with topics when `is_forum`): one chat shared by its members and bots."""

    id: int
    title: str
    is_forum: bool = True
    members: dict[int, GroupMember] = field(default_factory=dict)  # users and bots by id
    topics: dict[int, Topic] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0
    blocked: bool = False  # a group never blocks a bot; kept so it reads like a private chat
    next_message_id: int = 1

    @property
    def chat(self) -> Group:
        return self

    def chat_api(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": "supergroup", "title": self.title}
        if self.is_forum:
            chat["is_forum"] = True
        return chat

    def find(self, message_id: int) -> Message | None:
        for message in self.messages:
            if message.message_id == message_id and not message.deleted:
                return message
        return None

    def member(self, member_id: int) -> GroupMember | None:
        found = self.members.get(member_id)
        return found if found is not None and found.status != "left" else None


FIRST_GROUP_ID = -1_001_000_000_001  # supergroup ids are -100 followed by the channel id


class EmulatorState:
    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self.bots: dict[int, BotAccount] = {}
        self.bots_by_token: dict[str, BotAccount] = {}
        self.users: dict[int, User] = {}
        self.conversations: dict[tuple[int, int], Conversation] = {}
        self.groups: dict[int, Group] = {}
        self.next_group_id = FIRST_GROUP_ID
        self.callback_queries: dict[str, dict[str, Any]] = {}
        self.callback_answers: list[dict[str, Any]] = []
        self.notifier = Notifier()
        self.wall_clock = wall_clock
        self._version = 0
        self._next_user_id = FIRST_USER_ID

    def now(self) -> int:
        return int(self.wall_clock())

    @property
    def version(self) -> int:
        """Grows with every change: whoever keeps a copy (bot.emulator.persist) compares it."""
        return self._version

    @property
    def next_user_id(self) -> int:
        return self._next_user_id

    @next_user_id.setter
    def next_user_id(self, value: int) -> None:
        self._next_user_id = value

    def changed(self, conversation: Conversation | Group | None = None) -> None:
        self._version += 1
        if conversation is not None:
            conversation.version = self._version
        self.notifier.notify()

    # --- bots -------------------------------------------------------------------------

    def add_bot(self, token: str, username: str, first_name: str) -> BotAccount:
        match = TOKEN_RE.match(token)
        if not match:
            raise EmulatorError("token must look like '123456:ABC-def'")
        bot_id = int(match.group(1))
        if token in self.bots_by_token or bot_id in self.bots:
            raise EmulatorError(f"a bot with id {bot_id} is already registered")
        bot = BotAccount(
            id=bot_id, token=token, username=username.lstrip("@"), first_name=first_name
        )
        self.bots[bot_id] = bot
        self.bots_by_token[token] = bot
        return bot

    def resolve_bot(self, bot: int | str | None = None) -> BotAccount:
        """A bot by id, username or token; None means the first bot registered."""
        if not self.bots:
            raise EmulatorError("no bot registered; call add_bot() first")
        if bot is None or bot == "":
            return next(iter(self.bots.values()))
        if isinstance(bot, int) or (isinstance(bot, str) and bot.isdigit()):
            found = self.bots.get(int(bot))
        else:
            name = bot.lstrip("@").lower()
            found = self.bots_by_token.get(bot) or next(
                (b for b in self.bots.values() if b.username.lower() == name), None
            )
        if found is None:
            raise NotFoundError(f"unknown bot {bot!r}")
        return found

    # --- users and conversations --------------------------------------------------------

    def create_user(
        self,
        first_name: str,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "de",
        user_id: int | None = None,
    ) -> User:
        if not first_name or not isinstance(first_name, str):
            raise EmulatorError("first_name is required")
        if user_id is None:
            while self._next_user_id in self.users or self._next_user_id in self.bots:
                self._next_user_id += 1
            user_id = self._next_user_id
            self._next_user_id += 1
        elif user_id in self.users or user_id in self.bots:
            raise EmulatorError(f"user id {user_id} is taken")
        user = User(user_id, first_name, last_name or None, username or None, language_code or None)
        self.users[user_id] = user
        self.changed()
        return user

    def user(self, user_id: int) -> User:
        try:
            return self.users[int(user_id)]
        except (KeyError, ValueError, TypeError):
            raise NotFoundError(f"unknown user {user_id!r}") from None

    def conversation(self, bot: BotAccount, user: User) -> Conversation:
        key = (bot.id, user.id)
        conv = self.conversations.get(key)
        if conv is None:
            conv = self.conversations[key] = Conversation(bot.id, user)
        return conv

    def group(self, group_id: int) -> Group:
        try:
            return self.groups[int(group_id)]
        except (KeyError, ValueError, TypeError):
            raise NotFoundError(f"unknown group {group_id!r}") from None

    def add_message(self, conv: Conversation | Group, message: Message) -> Message:
        conv.messages.append(message)
        self.changed(conv)
        return message

    def next_message_id(self, conv: Conversation | Group) -> int:
        message_id = conv.next_message_id
        conv.next_message_id += 1
        return message_id

    # --- updates ------------------------------------------------------------------------

    def enqueue_update(self, bot: BotAccount, kind: str, payload: dict[str, Any]) -> int | None:
        """Queue an update for the bot; None if the bot's allowed_updates filter drops it."""
        allowed = bot.allowed_updates
        if allowed and kind not in allowed:
            return None
        if not allowed and kind in ("chat_member", "message_reaction", "message_reaction_count"):
            return None  # Telegram leaves these out unless asked for explicitly
        update_id = bot.next_update_id
        bot.next_update_id += 1
        bot.pending.append({"update_id": update_id, kind: payload})
        self.changed()
        return update_id

    def reset(self) -> None:
        """Forget members, conversations and updates; bots and their webhooks stay."""
        self.users.clear()
        self.conversations.clear()
        self.groups.clear()
        self.next_group_id = FIRST_GROUP_ID
        self.callback_queries.clear()
        self.callback_answers.clear()
        for bot in self.bots.values():
            bot.pending.clear()
        self._next_user_id = FIRST_USER_ID
        self.changed()
