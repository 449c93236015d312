"""The Bot API methods, answering with Telegram's exact shapes and error texts."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .errors import ApiError, bad_request, too_many_requests
from .formatting import MAX_CAPTION_LENGTH, MAX_TEXT_LENGTH, parse_text, utf16_len
from .limits import RateLimiter
from .markup import inline_keyboard, validate_reply_markup
from .media import FileStore, StoredFile, media_object
from .params import Params, Upload
from .state import BotAccount, Conversation, EmulatorState, Group, Message, Topic, Webhook
from .webhook import local_address_error

if TYPE_CHECKING:
    from .webhook import WebhookDispatcher

Handler = Callable[[BotAccount, Params], Awaitable[Any]]

NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
CHAT_ACTIONS = {
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
}
MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024  # getFile refuses bigger files, as Telegram does
MAX_POLL_TIMEOUT = 50
# Methods a bot calls once at start-up to describe itself; accepted and forgotten.
_ACCEPTED_NOOPS = (
    "setMyName",
    "setChatMenuButton",
    "setMyDefaultAdministratorRights",
)


class BotApi:
    def __init__(
        self,
        state: EmulatorState,
        files: FileStore,
        limiter: RateLimiter,
        webhooks: WebhookDispatcher,
    ) -> None:
        self.state = state
        self.files = files
        self.limiter = limiter
        self.webhooks = webhooks
        methods: dict[str, Handler] = {
            "getMe": self.get_me,
            "getUpdates": self.get_updates,
            "setWebhook": self.set_webhook,
            "deleteWebhook": self.delete_webhook,
            "getWebhookInfo": self.get_webhook_info,
            "sendMessage": self.send_message,
            "editMessageText": self.edit_message_text,
            "editMessageReplyMarkup": self.edit_message_reply_markup,
            "editMessageCaption": self.edit_message_caption,
            "deleteMessage": self.delete_message,
            "answerCallbackQuery": self.answer_callback_query,
            "sendChatAction": self.send_chat_action,
            "sendPhoto": self._media_sender("photo"),
            "sendDocument": self._media_sender("document"),
            "sendVoice": self._media_sender("voice"),
            "sendSticker": self._media_sender("sticker"),
            "sendAudio": self._media_sender("audio"),
            "sendVideo": self._media_sender("video"),
            "getFile": self.get_file,
            "getChat": self.get_chat,
            "getChatMember": self.get_chat_member,
            "createForumTopic": self.create_forum_topic,
            "editForumTopic": self.edit_forum_topic,
            "closeForumTopic": self._topic_closer(closed=True),
            "reopenForumTopic": self._topic_closer(closed=False),
            "deleteForumTopic": self.delete_forum_topic,
            "setMyCommands": self.set_my_commands,
            "getMyCommands": self.get_my_commands,
            "deleteMyCommands": self.delete_my_commands,
            "setMyDescription": self._describer("description", 512),
            "setMyShortDescription": self._describer("short_description", 120),
            "getMyDescription": self._description_reader("description"),
            "getMyShortDescription": self._description_reader("short_description"),
        }
        for name in _ACCEPTED_NOOPS:
            methods[name] = self._accept
        # Telegram matches method names case-insensitively.
        self._methods = {name.lower(): handler for name, handler in methods.items()}

    def knows(self, method: str) -> bool:
        return method.lower() in self._methods

    async def call(self, bot: BotAccount, method: str, params: Params) -> Any:
        handler = self._methods.get(method.lower())
        if handler is None:
            raise ApiError(404, "Not Found")
        return await handler(bot, params)

    # --- helpers ------------------------------------------------------------------------

    def _conversation(self, bot: BotAccount, params: Params) -> Conversation | Group:
        """The chat named by chat_id: a private chat with a member, or a group of the bot's."""
        chat_id = params.chat_id()
        group = self.state.groups.get(chat_id)
        if group is not None:
            if group.member(bot.id) is None:
                raise ApiError(403, "Forbidden: bot is not a member of the supergroup chat")
            return group
        user = self.state.users.get(chat_id)
        if user is None:
            raise bad_request("chat not found")
        conv = self.state.conversation(bot, user)
        if conv.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return conv

    def _throttle(self, bot: BotAccount, chat_id: int | None) -> None:
        group = chat_id is not None and chat_id in self.state.groups
        retry_after = self.limiter.check(bot.id, chat_id, group=group)
        if retry_after is not None:
            raise too_many_requests(retry_after)

    @staticmethod
    def _thread(conv: Conversation | Group, params: Params) -> int | None:
        """`message_thread_id` of a send: a live, open topic of a forum (else None)."""
        thread_id = params.integer("message_thread_id")
        if not isinstance(conv, Group) or not conv.is_forum or thread_id is None:
            return None
        topic = conv.topics.get(thread_id)
        if topic is None or topic.deleted:
            raise bad_request("message thread not found")
        if topic.closed:
            raise bad_request("TOPIC_CLOSED")
        return thread_id

    @staticmethod
    def _reply_markup(params: Params) -> dict[str, Any] | None:
        markup = params.json_value(
            "reply_markup", "Bad Request: can't parse reply keyboard markup JSON object"
        )
        return validate_reply_markup(markup)

    @staticmethod
    def _formatted(
        params: Params, field: str, entities_field: str, limit: int, too_long: str
    ) -> tuple[str | None, str | None, list[dict[str, Any]]]:
        """(plain text, parse_mode, entities) of a text or caption field."""
        text = params.text(field)
        if text is None or text == "":
            return None, None, []
        parse_mode = params.text("parse_mode") or None
        plain, entities = parse_text(text, parse_mode)
        if parse_mode is None and entities_field in params:
            entities = params.json_value(entities_field) or []
        if utf16_len(plain) > limit:
            raise bad_request(too_long)
        return plain, parse_mode, entities

    def _bot_message(self, bot: BotAccount, conv: Conversation | Group, **fields: Any) -> Message:
        message = Message(
            message_id=self.state.next_message_id(conv),
            date=self.state.now(),
            chat=conv.chat,
            sender=bot.to_api(),
            from_bot=True,
            **fields,
        )
        return self.state.add_message(conv, message)

    def _editable(
        self, bot: BotAccount, params: Params
    ) -> tuple[Conversation | Group, Message]:
        if "inline_message_id" in params:
            raise bad_request("inline messages are not supported by the emulator")
        conv = self._conversation(bot, params)
        message_id = params.integer("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        message = conv.find(message_id)
        if message is None:
            raise bad_request("message to edit not found")
        if not message.from_bot or message.sender["id"] != bot.id or message.service:
            raise bad_request("message can't be edited")
        return conv, message

    def _apply_edit(self, conv: Conversation | Group, message: Message, **changes: Any) -> Any:
        message.edits.append(message.snapshot())
        for key, value in changes.items():
            setattr(message, key, value)
        message.edit_date = self.state.now()
        self.state.changed(conv)
        return message.to_api()

    # --- identity and updates -------------------------------------------------------------

    async def get_me(self, bot: BotAccount, params: Params) -> Any:
        return bot.to_api()

    async def _accept(self, bot: BotAccount, params: Params) -> Any:
        return True

    async def get_updates(self, bot: BotAccount, params: Params) -> Any:
        if bot.webhook is not None:
            raise _webhook_conflict()
        offset = params.integer("offset")
        limit = min(max(params.integer("limit", 100) or 100, 1), 100)
        timeout = min(max(params.integer("timeout", 0) or 0, 0), MAX_POLL_TIMEOUT)
        if "allowed_updates" in params:
            bot.allowed_updates = params.json_value("allowed_updates") or None
        if offset is not None and offset > 0:
            # An offset confirms (and forgets) every update before it.
            bot.pending = [u for u in bot.pending if u["update_id"] >= offset]
        elif offset is not None and offset < 0:
            bot.pending = bot.pending[offset:]
        bot.poll_generation += 1
        generation = bot.poll_generation
        self.state.notifier.notify()  # an older poll of this bot ends with 409
        if not bot.pending and timeout:
            await self.state.notifier.wait_for(
                lambda: (
                    bool(bot.pending)
                    or bot.poll_generation != generation
                    or bot.webhook is not None
                ),
                timeout,
            )
            if bot.poll_generation != generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only "
                    "one bot instance is running",
                )
            if bot.webhook is not None:
                raise _webhook_conflict()
        return copy.deepcopy(bot.pending[:limit])

    async def set_webhook(self, bot: BotAccount, params: Params) -> Any:
        url = params.text("url") or ""
        if not url:
            return await self.delete_webhook(bot, params)
        error = await local_address_error(url)
        if error:
            raise bad_request(f"bad webhook: {error}")
        secret = params.text("secret_token")
        if secret is not None and not _valid_secret(secret):
            raise bad_request("secret token contains unallowed characters")
        if params.flag("drop_pending_updates"):
            bot.pending.clear()
        if "allowed_updates" in params:
            bot.allowed_updates = params.json_value("allowed_updates") or None
        bot.webhook = Webhook(
            url=url,
            secret_token=secret or None,
            max_connections=params.integer("max_connections", 40) or 40,
        )
        self.webhooks.start(bot)
        self.state.changed()
        return True

    async def delete_webhook(self, bot: BotAccount, params: Params) -> Any:
        if params.flag("drop_pending_updates"):
            bot.pending.clear()
        bot.webhook = None
        self.webhooks.stop(bot)
        self.state.changed()
        return True

    async def get_webhook_info(self, bot: BotAccount, params: Params) -> Any:
        return bot.webhook_info()

    # --- messages -------------------------------------------------------------------------

    async def send_message(self, bot: BotAccount, params: Params) -> Any:
        conv = self._conversation(bot, params)
        plain, parse_mode, entities = self._formatted(
            params, "text", "entities", MAX_TEXT_LENGTH, "message is too long"
        )
        if plain is None or not plain.strip():
            raise bad_request("message text is empty")
        markup = self._reply_markup(params)
        reply_to = self._replied(conv, params)
        thread_id = self._thread(conv, params)
        self._throttle(bot, conv.chat.id)
        message = self._bot_message(
            bot,
            conv,
            text=params.text("text"),
            parse_mode=parse_mode,
            plain_text=plain,
            entities=entities,
            reply_markup=markup,
            reply_to=reply_to,
            thread_id=thread_id,
        )
        return message.to_api()

    @staticmethod
    def _replied(conv: Conversation | Group, params: Params) -> dict[str, Any] | None:
        """`reply_parameters`: the message this one quotes, which must be in the chat."""
        replying = params.json_value(
            "reply_parameters", "Bad Request: can't parse reply parameters JSON object")
        if replying is None:
            return None
        if not isinstance(replying, dict) or not isinstance(replying.get("message_id"), int):
            raise bad_request("message to be replied not found")
        quoted = conv.find(replying["message_id"])
        if quoted is None or quoted.deleted:
            raise bad_request("message to be replied not found")
        return quoted.to_api()

    async def edit_message_text(self, bot: BotAccount, params: Params) -> Any:
        conv, message = self._editable(bot, params)
        if message.plain_text is None:
            raise bad_request("there is no text in the message to edit")
        plain, parse_mode, entities = self._formatted(
            params, "text", "entities", MAX_TEXT_LENGTH, "message is too long"
        )
        if plain is None or not plain.strip():
            raise bad_request("message text is empty")
        # Like Telegram, an edit without reply_markup removes the inline keyboard.
        markup = inline_keyboard(self._reply_markup(params))
        self._throttle(bot, conv.chat.id)
        # "Not modified" compares what the member sees, not the markup source.
        if (plain, entities, markup) == (
            message.plain_text,
            message.entities,
            inline_keyboard(message.reply_markup),
        ):
            raise bad_request(NOT_MODIFIED)
        return self._apply_edit(
            conv,
            message,
            text=params.text("text"),
            parse_mode=parse_mode,
            plain_text=plain,
            entities=entities,
            reply_markup=markup,
        )

    async def edit_message_reply_markup(self, bot: BotAccount, params: Params) -> Any:
        conv, message = self._editable(bot, params)
        markup = inline_keyboard(self._reply_markup(params))
        self._throttle(bot, conv.chat.id)
        if markup == inline_keyboard(message.reply_markup):
            raise bad_request(NOT_MODIFIED)
        return self._apply_edit(conv, message, reply_markup=markup)

    async def edit_message_caption(self, bot: BotAccount, params: Params) -> Any:
        conv, message = self._editable(bot, params)
        if message.media is None:
            raise bad_request("there is no caption in the message to edit")
        plain, parse_mode, entities = self._formatted(
            params, "caption", "caption_entities", MAX_CAPTION_LENGTH, "message caption is too long"
        )
        markup = inline_keyboard(self._reply_markup(params))
        self._throttle(bot, conv.chat.id)
        if (plain, entities, markup) == (
            message.caption_plain,
            message.caption_entities,
            inline_keyboard(message.reply_markup),
        ):
            raise bad_request(NOT_MODIFIED)
        return self._apply_edit(
            conv,
            message,
            caption=params.text("caption"),
            parse_mode=parse_mode,
            caption_plain=plain,
            caption_entities=entities,
            reply_markup=markup,
        )

    async def delete_message(self, bot: BotAccount, params: Params) -> Any:
        conv = self._conversation(bot, params)
        message = conv.find(params.integer("message_id") or 0)
        if message is None:
            raise bad_request("message to delete not found")
        message.deleted = True
        self.state.changed(conv)
        return True

    async def answer_callback_query(self, bot: BotAccount, params: Params) -> Any:
        query_id = params.text("callback_query_id") or ""
        query = self.state.callback_queries.get(query_id)
        if query is None or query["bot_id"] != bot.id or query["answered"]:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        query["answered"] = True
        answer = {
            "callback_query_id": query_id,
            "bot_id": bot.id,
            "user_id": query["user_id"],
            "message_id": query["message_id"],
            "data": query["data"],
            "text": params.text("text"),
            "show_alert": params.flag("show_alert"),
            "url": params.text("url"),
            "cache_time": params.integer("cache_time", 0),
            "date": self.state.now(),
        }
        if query.get("chat_id") is not None:
            answer["chat_id"] = query["chat_id"]  # a tap in a group
        self.state.callback_answers.append(answer)
        group = self.state.groups.get(query.get("chat_id") or 0)
        user = self.state.users.get(query["user_id"])
        self.state.changed(group or (self.state.conversation(bot, user) if user else None))
        return True

    async def send_chat_action(self, bot: BotAccount, params: Params) -> Any:
        conv = self._conversation(bot, params)
        action = params.text("action")
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        # Chat actions count against the bot's overall limit only, so that the usual
        # "typing..." before a reply does not eat the chat's message budget.
        self._throttle(bot, None)
        conv.actions.append({"action": action, "date": self.state.now()})
        self.state.changed(conv)
        return True

    # --- files ----------------------------------------------------------------------------

    def _resolve_file(self, kind: str, ref: Upload | str | None) -> StoredFile:
        if ref is None:
            raise bad_request(f"there is no {kind} in the request")
        if isinstance(ref, Upload):
            if not ref.data:
                raise bad_request("file must be non-empty")
            return self.files.add(kind, ref.data, ref.filename, ref.content_type)
        if ref.startswith(("http://", "https://")):
            # Telegram would download the URL; the emulator never leaves the machine.
            raise bad_request("failed to get HTTP URL content")
        stored = self.files.get(ref)
        if stored is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
        if stored.kind != kind and not (kind == "document" and stored.kind != "photo"):
            raise bad_request(f"can't use file of type {stored.kind.title()} as {kind.title()}")
        return stored

    def _media_sender(self, kind: str) -> Handler:
        async def send(bot: BotAccount, params: Params) -> Any:
            conv = self._conversation(bot, params)
            caption, parse_mode, entities = self._formatted(
                params,
                "caption",
                "caption_entities",
                MAX_CAPTION_LENGTH,
                "message caption is too long",
            )
            markup = self._reply_markup(params)
            stored = self._resolve_file(kind, params.file(kind))
            thread_id = self._thread(conv, params)
            self._throttle(bot, conv.chat.id)
            media = media_object(
                stored,
                duration=params.integer("duration"),
                emoji=params.text("emoji"),
                width=params.integer("width"),
                height=params.integer("height"),
            )
            message = self._bot_message(
                bot,
                conv,
                caption=params.text("caption"),
                parse_mode=parse_mode,
                caption_plain=caption,
                caption_entities=entities,
                media=media,
                media_file_id=stored.file_id,
                reply_markup=markup,
                thread_id=thread_id,
            )
            return message.to_api()

        return send

    async def get_file(self, bot: BotAccount, params: Params) -> Any:
        stored = self.files.get(params.text("file_id") or "")
        if stored is None:
            raise bad_request("invalid file_id")
        if stored.file_size > MAX_DOWNLOAD_SIZE:
            raise bad_request("file is too big")
        return stored.to_file()

    # --- chats and commands -------------------------------------------------------------------

    async def get_chat(self, bot: BotAccount, params: Params) -> Any:
        chat_id = params.chat_id()
        chat = self.state.groups.get(chat_id) or self.state.users.get(chat_id)
        if chat is None:
            raise bad_request("chat not found")
        return {
            **chat.chat_api(),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    async def get_chat_member(self, bot: BotAccount, params: Params) -> Any:
        group = self._group(bot, params)
        user_id = params.integer("user_id")
        if user_id is None:
            raise bad_request("user_id is empty")
        if user_id == bot.id:
            who = bot.to_api()
        elif user_id in self.state.users:
            who = self.state.users[user_id].to_api()
        else:
            raise bad_request("PARTICIPANT_ID_INVALID")
        place = group.member(user_id)
        if place is None:
            return {"status": "left", "user": who}
        return place.to_api(who)

    # --- forum topics ----------------------------------------------------------------------

    def _group(self, bot: BotAccount, params: Params) -> Group:
        conv = self._conversation(bot, params)
        if not isinstance(conv, Group):
            raise bad_request("chat not found")  # topics live in supergroups only
        return conv

    def _forum(self, bot: BotAccount, params: Params, missing_right: str) -> Group:
        """The forum the bot manages topics in; Telegram's errors when it may not."""
        group = self._group(bot, params)
        if not group.is_forum:
            raise bad_request("the chat is not a forum")
        place = group.member(bot.id)
        if place is None or not (
            place.status == "creator" or (place.is_admin and place.can_manage_topics)
        ):
            raise bad_request(missing_right)
        return group

    @staticmethod
    def _topic(group: Group, params: Params) -> Topic:
        topic = group.topics.get(params.integer("message_thread_id") or 0)
        if topic is None or topic.deleted:
            raise bad_request("message thread not found")
        return topic

    def _service(self, bot: BotAccount, group: Group, thread_id: int | None,
                 kind: str, body: dict[str, Any]) -> Message:
        message = self._bot_message(bot, group, thread_id=thread_id, service={kind: body})
        return message

    async def create_forum_topic(self, bot: BotAccount, params: Params) -> Any:
        group = self._forum(bot, params, "not enough rights to create a topic")
        name = (params.text("name") or "").strip()
        if not name:
            raise bad_request("topic name is empty")  # Telegram: 1-128 characters
        if len(name) > 128:
            raise bad_request("TOPIC_TITLE_INVALID")
        color = params.integer("icon_color", TOPIC_COLORS[0])
        if color not in TOPIC_COLORS:
            raise bad_request("TOPIC_COLOR_INVALID")  # one of Telegram's six colours
        self._throttle(bot, group.id)
        thread_id = group.next_message_id  # the topic's id is its service message's
        topic = Topic(thread_id, name, color, params.text("icon_custom_emoji_id") or None)
        group.topics[thread_id] = topic
        self._service(bot, group, thread_id, "forum_topic_created",
                      {"name": name, "icon_color": color})
        return topic.to_api()

    async def edit_forum_topic(self, bot: BotAccount, params: Params) -> Any:
        group = self._forum(bot, params, "not enough rights to manage topics")
        topic = self._topic(group, params)
        name = params.text("name")
        if name is not None and not (1 <= len(name.strip()) <= 128):
            raise bad_request("TOPIC_TITLE_INVALID")
        emoji = params.text("icon_custom_emoji_id")
        if (name is None or name == topic.name) and (
            emoji is None or emoji == (topic.icon_custom_emoji_id or "")
        ):
            raise bad_request("TOPIC_NOT_MODIFIED")
        self._throttle(bot, group.id)
        edited: dict[str, Any] = {}
        if name is not None and name != topic.name:
            topic.name = edited["name"] = name
        if emoji is not None:
            topic.icon_custom_emoji_id = emoji or None
            edited["icon_custom_emoji_id"] = emoji
        self._service(bot, group, topic.thread_id, "forum_topic_edited", edited)
        return True

    def _topic_closer(self, *, closed: bool) -> Handler:
        async def close_or_reopen(bot: BotAccount, params: Params) -> Any:
            group = self._forum(bot, params, "not enough rights to manage topics")
            topic = self._topic(group, params)
            if topic.closed == closed:
                raise bad_request("TOPIC_NOT_MODIFIED")
            self._throttle(bot, group.id)
            topic.closed = closed
            kind = "forum_topic_closed" if closed else "forum_topic_reopened"
            self._service(bot, group, topic.thread_id, kind, {})
            return True

        return close_or_reopen

    async def delete_forum_topic(self, bot: BotAccount, params: Params) -> Any:
        group = self._forum(bot, params, "not enough rights to manage topics")
        topic = self._topic(group, params)
        topic.deleted = True
        for message in group.messages:
            if message.thread_id == topic.thread_id:
                message.deleted = True
        self.state.changed(group)
        return True

    async def set_my_commands(self, bot: BotAccount, params: Params) -> Any:
        commands = params.json_value("commands")
        if not isinstance(commands, list) or not all(
            isinstance(c, dict) and c.get("command") and c.get("description") for c in commands
        ):
            raise bad_request("can't parse commands JSON object")
        language = params.text("language_code") or ""
        bot.localized_commands[language] = commands
        if not language:
            bot.commands = commands
        return True

    async def get_my_commands(self, bot: BotAccount, params: Params) -> Any:
        language = params.text("language_code") or ""
        return copy.deepcopy(bot.localized_commands.get(language, bot.commands))

    async def delete_my_commands(self, bot: BotAccount, params: Params) -> Any:
        language = params.text("language_code") or ""
        bot.localized_commands.pop(language, None)
        if not language:
            bot.commands = []
        return True

    def _describer(self, field: str, limit: int) -> Handler:
        """setMyDescription / setMyShortDescription, kept per language_code."""
        async def describe(bot: BotAccount, params: Params) -> Any:
            text = params.text(field) or ""
            if len(text) > limit:
                raise bad_request(f"{field} is too long")
            store = bot.descriptions if field == "description" else bot.short_descriptions
            store[params.text("language_code") or ""] = text
            return True
        return describe

    def _description_reader(self, field: str) -> Handler:
        async def read(bot: BotAccount, params: Params) -> Any:
            store = bot.descriptions if field == "description" else bot.short_descriptions
            language = params.text("language_code") or ""
            return {field: store.get(language, store.get("", ""))}
        return read


# The six colours Telegram offers for a topic's icon (RGB).
TOPIC_COLORS = (0x6FB9F0, 0xFFD67E, 0xCB86DB, 0x8EEE98, 0xFF93B2, 0xFB6F5F)


def _webhook_conflict() -> ApiError:
    return ApiError(
        409,
        "Conflict: can't use getUpdates method while webhook is active; "
        "use deleteWebhook to delete the webhook first",
    )


def _valid_secret(secret: str) -> bool:
    allowed = all(c.isascii() and (c.isalnum() or c in "_-") for c in secret)
    return allowed and 1 <= len(secret) <= 256
