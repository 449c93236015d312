"""`TelegramEmulator`: the one object tests, the demo and the benchmark hold.

It owns the state and offers, as plain Python calls, everything a Telegram member can do
(write, press a button, send a file, block the bot) plus the knobs of the emulation
(faults, latency, limits). The control API is a thin JSON layer over the same calls.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .api import BotApi
from .bans import FloodBans
from .errors import EmulatorError, NotFoundError
from .faults import FaultInjector
from .formatting import MAX_CAPTION_LENGTH, MAX_TEXT_LENGTH, command_entities, utf16_len
from .limits import Clock, EmulatorLimits, RateLimiter
from .markup import has_callback_button
from .media import FileStore, media_object
from .params import Params
from .server import make_app
from .state import BotAccount, Conversation, EmulatorState, Group, GroupMember, Message, Topic, User
from .webhook import WebhookDispatcher

BotRef = int | str | None  # bot id, username or token; None = the first bot added


class TelegramEmulator:
    def __init__(
        self,
        limits: EmulatorLimits | None = None,
        clock: Clock = time.monotonic,
        *,
        wall_clock: Clock = time.time,
        webhook_retry_initial: float = 0.05,
        webhook_retry_max: float = 2.0,
    ) -> None:
        self.state = EmulatorState(wall_clock)
        self.limiter = RateLimiter(limits or EmulatorLimits(), clock)
        self.bans = FloodBans(clock)
        self.faults = FaultInjector()
        self.latency = 0.0
        self.files = FileStore()
        self.webhooks = WebhookDispatcher(
            self.state, self._execute, webhook_retry_initial, webhook_retry_max
        )
        self.api = BotApi(self.state, self.files, self.limiter, self.webhooks)

    # --- set-up ---------------------------------------------------------------------------

    def add_bot(self, token: str, username: str, first_name: str = "Bot") -> dict[str, Any]:
        """Register a bot; its token is then accepted at /bot<token>/. Returns its User."""
        return self.state.add_bot(token, username, first_name).to_api()

    def make_app(self) -> web.Application:
        return make_app(self)

    @property
    def limits(self) -> EmulatorLimits:
        return self.limiter.limits

    def set_limits(self, limits: EmulatorLimits) -> None:
        """New limits start afresh: full buckets and no flood ban."""
        self.limiter.reconfigure(limits)
        self.bans.clear()

    def set_latency(self, seconds: float) -> None:
        """Delay every Bot API answer by `seconds` (a slow network or a busy Telegram)."""
        if seconds < 0:
            raise EmulatorError("latency must not be negative")
        self.latency = float(seconds)

    def inject_faults(
        self,
        method: str | None = None,
        count: int = 1,
        status: int = 500,
        retry_after: int | None = None,
        *,
        description: str | None = None,
        drop_connection: bool = False,
    ) -> dict[str, Any]:
        """Make the next `count` Bot API calls (of `method`, or any) fail.

        The failure is a Telegram-shaped error with `status` (429 carries `retry_after`),
        or, with `drop_connection`, the connection is closed without an answer.
        """
        if method is not None and not self.api.knows(method):
            raise EmulatorError(f"unknown Bot API method {method!r}")
        try:
            fault = self.faults.add(
                method, count, status, retry_after, description, drop_connection
            )
        except ValueError as exc:
            raise EmulatorError(str(exc)) from None
        return fault.to_json()

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        """Forget members, messages, updates, files, faults and latency; bots stay."""
        self.state.reset()
        self.files.clear()
        self.faults.clear()
        self.bans.clear()
        self.latency = 0.0
        self.limiter.reconfigure(self.limiter.limits)

    async def close(self) -> None:
        """Stop webhook deliveries and close their HTTP client (the app does it on cleanup)."""
        await self.webhooks.close()

    async def _execute(self, bot: BotAccount, method: str, params: Params) -> Any:
        return await self.api.call(bot, method, params)

    # --- lookups ---------------------------------------------------------------------------

    def bot(self, bot: BotRef = None) -> dict[str, Any]:
        return self.state.resolve_bot(bot).summary()

    def bots(self) -> list[dict[str, Any]]:
        return [b.summary() for b in self.state.bots.values()]

    def users(self) -> list[dict[str, Any]]:
        return [u.to_api() for u in self.state.users.values()]

    def get_user(self, user_id: int) -> dict[str, Any]:
        return self.state.user(user_id).to_api()

    def _conv(self, chat_id: int, bot: BotRef) -> tuple[BotAccount, Conversation]:
        account = self.state.resolve_bot(bot)
        return account, self.state.conversation(account, self.state.user(chat_id))

    def sent_messages(self, chat_id: int, *, bot: BotRef = None) -> list[dict[str, Any]]:
        """What the bot sent to this chat, in order, in its current state after edits.

        Each dict has message_id, date, text (as the bot sent it, markup included),
        parse_mode, plain_text and entities (as the member sees it), reply_markup,
        edit_date, edits (earlier versions, oldest first), deleted, and for media the Bot
        API field (photo, document, ...) plus caption.
        """
        _, conv = self._conv(chat_id, bot)
        return [m.to_view() for m in conv.messages if m.from_bot]

    def history(self, chat_id: int, *, bot: BotRef = None) -> list[dict[str, Any]]:
        """Both sides of the conversation (from_bot tells who wrote each message)."""
        _, conv = self._conv(chat_id, bot)
        return [m.to_view() for m in conv.messages]

    def chat_actions(self, chat_id: int, *, bot: BotRef = None) -> list[str]:
        _, conv = self._conv(chat_id, bot)
        return [a["action"] for a in conv.actions]

    def chat_action_log(self, chat_id: int, *, bot: BotRef = None) -> list[dict[str, Any]]:
        """Chat actions with their dates: [{"action": "typing", "date": ...}, ...]."""
        _, conv = self._conv(chat_id, bot)
        return [dict(a) for a in conv.actions]

    def chat_version(self, chat_id: int, *, bot: BotRef = None) -> int:
        return self._conv(chat_id, bot)[1].version

    @property
    def callback_answers(self) -> list[dict[str, Any]]:
        return list(self.state.callback_answers)

    def pending_updates(self, *, bot: BotRef = None) -> list[dict[str, Any]]:
        return list(self.state.resolve_bot(bot).pending)

    def webhook_info(self, *, bot: BotRef = None) -> dict[str, Any]:
        """What getWebhookInfo answers: url, pending_update_count, last_error_message..."""
        return self.state.resolve_bot(bot).webhook_info()

    async def wait_for_messages(
        self,
        chat_id: int,
        count: int,
        timeout: float = 5,  # noqa: ASYNC109 - part of the helper's agreed API
        *,
        bot: BotRef = None,
    ) -> list[dict[str, Any]]:
        """Wait until the bot has sent at least `count` messages to the chat; return them all.

        Event-driven (no polling); raises TimeoutError naming what did arrive.
        """
        _, conv = self._conv(chat_id, bot)

        def enough() -> bool:
            return sum(1 for m in conv.messages if m.from_bot) >= count

        if not await self.state.notifier.wait_for(enough, timeout):
            got = [m.plain_text or m.caption_plain for m in conv.messages if m.from_bot]
            raise TimeoutError(
                f"expected {count} bot message(s) in chat {chat_id} within {timeout}s, "
                f"got {len(got)}: {got!r}"
            )
        return self.sent_messages(chat_id, bot=bot)

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5,  # noqa: ASYNC109 - mirrors wait_for_messages
    ) -> None:
        """Wait, event-driven, until `predicate()` holds (checked after every change)."""
        if not await self.state.notifier.wait_for(predicate, timeout):
            raise TimeoutError(f"condition not met within {timeout}s")

    # --- what a member does -----------------------------------------------------------------

    def create_user(
        self,
        first_name: str,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "de",
        *,
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """A new Telegram member; its id is also the id of its private chat with each bot."""
        return self.state.create_user(
            first_name, last_name, username, language_code, user_id
        ).to_api()

    def _member(self, user_id: int, bot: BotRef) -> tuple[BotAccount, User, Conversation]:
        account, conv = self._conv(user_id, bot)
        if conv.blocked:
            raise EmulatorError("the member has blocked this bot; unblock first")
        return account, conv.user, conv

    def _member_message(self, account: BotAccount, conv: Conversation, **fields: Any) -> Message:
        message = Message(
            message_id=self.state.next_message_id(conv),
            date=self.state.now(),
            chat=conv.user,
            sender=conv.user.to_api(),
            from_bot=False,
            **fields,
        )
        self.state.add_message(conv, message)
        self.state.enqueue_update(account, "message", message.to_api())
        return message

    async def send_text(self, user_id: int, text: str, *, bot: BotRef = None) -> dict[str, Any]:
        """The member writes `text`; a leading /command gets a bot_command entity."""
        if not isinstance(text, str) or not text.strip():
            raise EmulatorError("text must not be empty")
        if utf16_len(text) > MAX_TEXT_LENGTH:
            raise EmulatorError("text is longer than 4096 characters")
        account, _, conv = self._member(user_id, bot)
        message = self._member_message(
            account, conv, text=text, plain_text=text, entities=command_entities(text)
        )
        return message.to_view()

    async def edit_text(self, user_id: int, message_id: int, text: str, *,
                        bot: BotRef = None) -> dict[str, Any]:
        """The member edits a text message they sent: the bot gets an `edited_message`."""
        if not isinstance(text, str) or not text.strip():
            raise EmulatorError("text must not be empty")
        account, _, conv = self._member(user_id, bot)
        message = conv.find(int(message_id))
        if message is None or message.from_bot or message.plain_text is None:
            raise NotFoundError(f"no text of the member's with id {message_id} in {user_id}")
        message.edits.append(message.snapshot())
        message.text = message.plain_text = text
        message.entities = command_entities(text)
        message.edit_date = self.state.now()
        self.state.enqueue_update(account, "edited_message", message.to_api())
        return message.to_view()

    async def start(
        self, user_id: int, payload: str | None = None, *, bot: BotRef = None
    ) -> dict[str, Any]:
        """What tapping https://t.me/<bot>?start=<payload> does: send "/start <payload>"."""
        if payload and not _valid_start_payload(payload):
            raise EmulatorError("a start payload is 1-64 characters of A-Z, a-z, 0-9, _ and -")
        return await self.send_text(user_id, f"/start {payload}" if payload else "/start", bot=bot)

    async def press_button(
        self, user_id: int, message_id: int, callback_data: str, *, bot: BotRef = None
    ) -> dict[str, Any]:
        """The member taps an inline button; returns the CallbackQuery sent to the bot."""
        account, user, conv = self._member(user_id, bot)
        message = conv.find(int(message_id))
        if message is None:
            raise NotFoundError(f"message {message_id} not found in chat {user_id}")
        if not message.from_bot or not has_callback_button(message.reply_markup, callback_data):
            raise EmulatorError(
                f"message {message_id} has no button with callback_data {callback_data!r}"
            )
        query_id = str(secrets.randbits(63))
        self.state.callback_queries[query_id] = {
            "bot_id": account.id,
            "user_id": user.id,
            "message_id": message.message_id,
            "data": callback_data,
            "answered": False,
        }
        query = {
            "id": query_id,
            "from": user.to_api(),
            "message": message.to_api(),
            "chat_instance": str(account.id * 1_000_003 + user.id),
            "data": callback_data,
        }
        self.state.enqueue_update(account, "callback_query", query)
        return query

    def _media_fields(
        self,
        kind: str,
        data: bytes,
        caption: str | None,
        file_name: str | None,
        mime_type: str | None,
        media_options: dict[str, Any],
    ) -> dict[str, Any]:
        if not isinstance(data, bytes | bytearray) or not data:
            raise EmulatorError("file data must be non-empty bytes")
        if caption and utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise EmulatorError("caption is longer than 1024 characters")
        stored = self.files.add(kind, bytes(data), file_name, mime_type)
        return {
            "caption": caption or None,
            "caption_plain": caption or None,
            "media": media_object(stored, **media_options),
            "media_file_id": stored.file_id,
        }

    async def _send_media(
        self,
        user_id: int,
        kind: str,
        data: bytes,
        bot: BotRef,
        *,
        caption: str | None = None,
        file_name: str | None = None,
        mime_type: str | None = None,
        **media_options: Any,
    ) -> dict[str, Any]:
        account, _, conv = self._member(user_id, bot)
        fields = self._media_fields(kind, data, caption, file_name, mime_type, media_options)
        return self._member_message(account, conv, **fields).to_view()

    async def send_photo(
        self, user_id: int, data: bytes, caption: str | None = None, *, bot: BotRef = None
    ) -> dict[str, Any]:
        return await self._send_media(user_id, "photo", data, bot, caption=caption)

    async def send_document(
        self,
        user_id: int,
        data: bytes,
        filename: str,
        mime_type: str = "application/octet-stream",
        caption: str | None = None,
        *,
        bot: BotRef = None,
    ) -> dict[str, Any]:
        return await self._send_media(
            user_id, "document", data, bot, caption=caption, file_name=filename, mime_type=mime_type
        )

    async def send_voice(
        self,
        user_id: int,
        data: bytes,
        duration: int = 1,
        mime_type: str = "audio/ogg",
        *,
        bot: BotRef = None,
    ) -> dict[str, Any]:
        return await self._send_media(
            user_id, "voice", data, bot, mime_type=mime_type, duration=duration
        )

    async def send_sticker(
        self,
        user_id: int,
        data: bytes = b"RIFF\x00\x00\x00\x00WEBP",
        emoji: str = "🙂",
        *,
        bot: BotRef = None,
    ) -> dict[str, Any]:
        return await self._send_media(
            user_id, "sticker", data, bot, mime_type="image/webp", emoji=emoji
        )

    def block(self, user_id: int, *, bot: BotRef = None) -> None:
        """The member blocks the bot: sends then fail with 403, the bot gets my_chat_member."""
        self._set_blocked(user_id, bot, True)

    def unblock(self, user_id: int, *, bot: BotRef = None) -> None:
        self._set_blocked(user_id, bot, False)

    def _set_blocked(self, user_id: int, bot: BotRef, blocked: bool) -> None:
        account, conv = self._conv(user_id, bot)
        if conv.blocked == blocked:
            return
        conv.blocked = blocked
        self.state.changed(conv)
        member = {"status": "member", "user": account.to_api()}
        kicked = {"status": "kicked", "user": account.to_api(), "until_date": 0}
        self.state.enqueue_update(
            account,
            "my_chat_member",
            {
                "chat": conv.user.chat_api(),
                "from": conv.user.to_api(),
                "date": self.state.now(),
                "old_chat_member": member if blocked else kicked,
                "new_chat_member": kicked if blocked else member,
            },
        )

    def is_blocked(self, user_id: int, *, bot: BotRef = None) -> bool:
        return self._conv(user_id, bot)[1].blocked

    # --- supergroups and forum topics ------------------------------------------------------

    def create_group(
        self, title: str, owner_id: int, *, is_forum: bool = True, group_id: int | None = None
    ) -> dict[str, Any]:
        """A supergroup (with topics when `is_forum`) created by the member `owner_id`."""
        if not isinstance(title, str) or not title.strip():
            raise EmulatorError("title is required")
        owner = self.state.user(owner_id)
        if group_id is None:
            while self.state.next_group_id in self.state.groups:
                self.state.next_group_id -= 1
            group_id = self.state.next_group_id
            self.state.next_group_id -= 1
        elif group_id >= 0 or group_id in self.state.groups:
            raise EmulatorError(f"group id {group_id} is taken or not negative")
        group = Group(group_id, title.strip(), is_forum=is_forum)
        group.members[owner.id] = GroupMember("creator")
        self.state.groups[group_id] = group
        self.state.changed(group)
        return group.chat_api()

    def _group(self, group_id: int) -> Group:
        return self.state.group(group_id)

    def set_forum(self, group_id: int, is_forum: bool) -> None:
        """The owner switches topics on or off."""
        group = self._group(group_id)
        group.is_forum = bool(is_forum)
        self.state.changed(group)

    def add_group_member(self, group_id: int, user_id: int, *, admin: bool = False) -> None:
        """A member joins the group (as an administrator with `admin`)."""
        group = self._group(group_id)
        user = self.state.user(user_id)
        place = group.member(user.id)
        if place is not None and place.status == "creator":
            return
        group.members[user.id] = GroupMember(
            "administrator" if admin else "member", can_manage_topics=admin
        )
        self.state.changed(group)

    def set_bot_rights(
        self,
        group_id: int,
        *,
        bot: BotRef = None,
        member: bool = True,
        admin: bool = False,
        can_manage_topics: bool = False,
    ) -> None:
        """The owner adds the bot (or removes it, `member=False`) and sets its rights.

        The bot gets a `my_chat_member` update with the old and new place, as on Telegram.
        """
        group = self._group(group_id)
        account = self.state.resolve_bot(bot)
        owner_id = next(i for i, m in group.members.items() if m.status == "creator")
        old = group.member(account.id) or GroupMember("left")
        if not member:
            new = GroupMember("left")
        elif admin:
            new = GroupMember("administrator", can_manage_topics=can_manage_topics)
        else:
            new = GroupMember("member")
        group.members[account.id] = new
        self.state.changed(group)
        self.state.enqueue_update(
            account,
            "my_chat_member",
            {
                "chat": group.chat_api(),
                "from": self.state.user(owner_id).to_api(),
                "date": self.state.now(),
                "old_chat_member": old.to_api(account.to_api()),
                "new_chat_member": new.to_api(account.to_api()),
            },
        )

    def _group_message(
        self, group: Group, user_id: int, thread_id: int | None, **fields: Any
    ) -> Message:
        """A member's message in the group, passed to every bot that may read it.

        Bots that are administrators read everything; others, in privacy mode, only
        commands. In a forum, `thread_id` None is the General topic.
        """
        user = self.state.user(user_id)
        place = group.member(user.id)
        if place is None:
            raise EmulatorError(f"user {user_id} is not a member of group {group.id}")
        if thread_id is not None:
            topic = group.topics.get(int(thread_id))
            if not group.is_forum or topic is None or topic.deleted:
                raise NotFoundError(f"no topic {thread_id} in group {group.id}")
            if topic.closed and not place.is_admin:
                raise EmulatorError("the topic is closed; only administrators may write")
        message = Message(
            message_id=self.state.next_message_id(group),
            date=self.state.now(),
            chat=group,
            sender=user.to_api(),
            from_bot=False,
            thread_id=int(thread_id) if thread_id is not None else None,
            **fields,
        )
        self.state.add_message(group, message)
        is_command = (message.plain_text or "").startswith("/")
        for bot_id, bot_place in group.members.items():
            account = self.state.bots.get(bot_id)
            if account is None or bot_place.status == "left":
                continue
            if bot_place.is_admin or is_command:
                self.state.enqueue_update(account, "message", message.to_api())
        return message

    async def group_send_text(
        self, group_id: int, user_id: int, text: str, *, thread_id: int | None = None
    ) -> dict[str, Any]:
        """A group member writes `text` (in topic `thread_id`)."""
        if not isinstance(text, str) or not text.strip():
            raise EmulatorError("text must not be empty")
        if utf16_len(text) > MAX_TEXT_LENGTH:
            raise EmulatorError("text is longer than 4096 characters")
        message = self._group_message(
            self._group(group_id), user_id, thread_id,
            text=text, plain_text=text, entities=command_entities(text),
        )
        return message.to_view()

    async def group_send_media(
        self,
        group_id: int,
        user_id: int,
        kind: str,
        data: bytes,
        *,
        thread_id: int | None = None,
        caption: str | None = None,
        file_name: str | None = None,
        mime_type: str | None = None,
        **media_options: Any,
    ) -> dict[str, Any]:
        """A group member sends a photo, document, voice or sticker (`kind`)."""
        if kind not in ("photo", "document", "voice", "sticker", "audio", "video"):
            raise EmulatorError(f"unknown media kind {kind!r}")
        fields = self._media_fields(kind, data, caption, file_name, mime_type, media_options)
        group = self._group(group_id)
        return self._group_message(group, user_id, thread_id, **fields).to_view()

    async def group_press_button(
        self, group_id: int, user_id: int, message_id: int, callback_data: str,
        *, bot: BotRef = None,
    ) -> dict[str, Any]:
        """A group member taps an inline button under a bot's message in the group."""
        group = self._group(group_id)
        user = self.state.user(user_id)
        if group.member(user.id) is None:
            raise EmulatorError(f"user {user_id} is not a member of group {group.id}")
        message = group.find(int(message_id))
        if message is None:
            raise NotFoundError(f"message {message_id} not found in group {group_id}")
        if not message.from_bot or not has_callback_button(message.reply_markup, callback_data):
            raise EmulatorError(
                f"message {message_id} has no button with callback_data {callback_data!r}"
            )
        account = self.state.bots[message.sender["id"]] if bot is None else (
            self.state.resolve_bot(bot))
        query_id = str(secrets.randbits(63))
        self.state.callback_queries[query_id] = {
            "bot_id": account.id,
            "user_id": user.id,
            "chat_id": group.id,
            "message_id": message.message_id,
            "data": callback_data,
            "answered": False,
        }
        query = {
            "id": query_id,
            "from": user.to_api(),
            "message": message.to_api(),
            "chat_instance": str(account.id * 1_000_003 + abs(group.id)),
            "data": callback_data,
        }
        self.state.enqueue_update(account, "callback_query", query)
        return query

    def _topic_by_hand(self, group_id: int, thread_id: int, user_id: int) -> tuple[Group, Topic]:
        group = self._group(group_id)
        place = group.member(self.state.user(user_id).id)
        if place is None or not place.is_admin:
            raise EmulatorError("only the group's administrators manage topics")
        topic = group.topics.get(int(thread_id))
        if topic is None or topic.deleted:
            raise NotFoundError(f"no topic {thread_id} in group {group_id}")
        return group, topic

    def close_topic(self, group_id: int, thread_id: int, *, by: int, closed: bool = True) -> None:
        """An administrator closes (or, `closed=False`, reopens) a topic by hand."""
        group, topic = self._topic_by_hand(group_id, thread_id, by)
        if topic.closed == closed:
            return
        topic.closed = closed
        kind = "forum_topic_closed" if closed else "forum_topic_reopened"
        self._group_message(group, by, topic.thread_id, service={kind: {}})

    def delete_topic(self, group_id: int, thread_id: int, *, by: int) -> None:
        """An administrator deletes a topic by hand, with every message in it."""
        group, topic = self._topic_by_hand(group_id, thread_id, by)
        topic.deleted = True
        for message in group.messages:
            if message.thread_id == topic.thread_id:
                message.deleted = True
        self.state.changed(group)

    def group(self, group_id: int) -> dict[str, Any]:
        """The group's chat, its members (with status and rights) and its topics."""
        group = self._group(group_id)
        return {
            **group.chat_api(),
            "version": group.version,
            "members": [
                {"id": member_id, "status": place.status,
                 "can_manage_topics": place.can_manage_topics}
                for member_id, place in group.members.items()
            ],
            "topics": [t.to_view() for t in group.topics.values()],
        }

    def groups(self) -> list[dict[str, Any]]:
        return [g.chat_api() for g in self.state.groups.values()]

    def topics(self, group_id: int) -> list[dict[str, Any]]:
        """Every topic ever made in the group, with `closed` and `deleted`."""
        return [t.to_view() for t in self._group(group_id).topics.values()]

    def group_messages(
        self, group_id: int, *, thread_id: int | None = None, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        """The group's messages (of one topic when `thread_id` is given), oldest first."""
        group = self._group(group_id)
        return [
            m.to_view()
            for m in group.messages
            if (thread_id is None or m.thread_id == thread_id)
            and (include_deleted or not m.deleted)
        ]

    async def wait_for_group_messages(
        self,
        group_id: int,
        count: int,
        timeout: float = 5,  # noqa: ASYNC109 - mirrors wait_for_messages
        *,
        thread_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until the bots have posted `count` messages (not service messages) there."""
        group = self._group(group_id)

        def posts() -> list[Message]:
            return [
                m for m in group.messages
                if m.from_bot and not m.service and not m.deleted
                and (thread_id is None or m.thread_id == thread_id)
            ]

        if not await self.state.notifier.wait_for(lambda: len(posts()) >= count, timeout):
            got = [m.plain_text or m.caption_plain for m in posts()]
            raise TimeoutError(
                f"expected {count} bot post(s) in group {group_id} within {timeout}s, "
                f"got {len(got)}: {got!r}"
            )
        return [m.to_view() for m in posts()]


def _valid_start_payload(payload: str) -> bool:
    allowed = all(c.isascii() and (c.isalnum() or c in "_-") for c in payload)
    return allowed and len(payload) <= 64
