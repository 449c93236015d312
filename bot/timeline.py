"""Puts what the member and the bot say in Telegram on the member's timeline.

While an update is handled (`MemberContextMiddleware`), a `Recording` holds the update's
database session: the member's message or button press is recorded first, and every
answer the bot sends to that chat (`TimelineRequestMiddleware`, on the Bot's session) is
added as it succeeds. The rows commit with the update's transaction and are announced on
the bus afterwards. Messages the notifier delivers from the outbox are recorded there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiogram import Bot
from aiogram.client.default import Default
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.enums import ParseMode
from aiogram.methods import EditMessageText, SendDocument, SendMessage, SendPhoto, TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, TelegramObject, Update
from aiogram.types import Message as TelegramMessage
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import timeline
from payrescue.db.models import Member, Message
from payrescue.events import Bus


@dataclass
class Recording:
    session: AsyncSession
    member: Member
    chat_id: int
    now: datetime
    incoming: Message | None = None
    rows: list[Message] = field(default_factory=list)


RECORDED_METHODS = (SendMessage, SendPhoto, SendDocument, EditMessageText)
_recording: ContextVar[Recording | None] = ContextVar("payrescue_recording", default=None)


def member_line(member_id: int, message: TelegramMessage, now: datetime) -> Message:
    """The timeline entry for a member's Telegram message, whatever its kind."""
    row = timeline.entry(member_id, timeline.MEMBER, "text", now,
                         telegram_message_id=message.message_id,
                         text=message.text or message.caption)
    if message.photo:
        row.kind, row.file_id, row.mime_type = "photo", message.photo[-1].file_id, "image/jpeg"
    elif message.document:
        row.kind, row.file_id = "document", message.document.file_id
        row.file_name, row.mime_type = message.document.file_name, message.document.mime_type
    elif message.voice:
        row.kind, row.file_id = "voice", message.voice.file_id
        row.mime_type = message.voice.mime_type
    elif message.sticker:
        row.kind, row.file_id, row.text = "sticker", message.sticker.file_id, message.sticker.emoji
    return row


def _button_line(member_id: int, query: CallbackQuery, now: datetime) -> Message:
    """A pressed button: its label as the member saw it."""
    label = None
    markup = query.message.reply_markup if isinstance(query.message, TelegramMessage) else None
    for row in markup.inline_keyboard if markup else []:
        for button in row:
            if button.callback_data == query.data:
                label = button.text
    return timeline.entry(member_id, timeline.MEMBER, "button", now, text=label,
                          data={"callback_data": (query.data or "")[:64]})


@contextmanager
def recording(session: AsyncSession, member: Member | None, event: TelegramObject,
              now: datetime) -> Iterator[Recording | None]:
    """Record this update's lines while the handler runs (nothing for unknown chats)."""
    if member is None or member.telegram is None:
        yield None
        return
    rec = Recording(session, member, member.telegram.chat_id, now)
    inner = event.message or event.edited_message or event.callback_query \
        if isinstance(event, Update) else None
    if isinstance(inner, TelegramMessage) and inner.chat.id == rec.chat_id:
        rec.incoming = member_line(member.id, inner, now)
        if inner is event.edited_message:  # a new line: the original stays as it was
            rec.incoming.kind = "edit"
            rec.incoming.data = {"edited_message_id": inner.message_id}
    elif isinstance(inner, CallbackQuery):
        rec.incoming = _button_line(member.id, inner, now)
    if rec.incoming is not None:
        session.add(rec.incoming)
        rec.rows.append(rec.incoming)
    token = _recording.set(rec)
    try:
        yield rec
    finally:
        _recording.reset(token)


@contextmanager
def linked(session: AsyncSession, member: Member, message: TelegramMessage,
           now: datetime) -> Iterator[Recording]:
    """The update that linked the chat: the member was unknown when it began, so it is
    recorded from the link on — their /start (without its token, a secret) and the bot's
    greeting. The caller finishes, commits and announces it as the middleware does."""
    rec = Recording(session, member, message.chat.id, now)
    rec.incoming = member_line(member.id, message, now)
    rec.incoming.text = "/start"
    session.add(rec.incoming)
    rec.rows.append(rec.incoming)
    token = _recording.set(rec)
    try:
        yield rec
    finally:
        _recording.reset(token)


def incoming_line() -> Message | None:
    """The member's message this update recorded, for the routers that act on it."""
    rec = _recording.get()
    return rec.incoming if rec is not None else None


async def finish(rec: Recording) -> None:
    """Before the commit: lines recorded before a conversation existed join the one open now."""
    if rec.member.erased_at is not None:  # erased: nothing to keep
        return
    if all(row.conversation_id is not None for row in rec.rows):  # a handler placed them
        return
    conversation_id = await timeline.open_conversation_id(rec.session, rec.member.id, rec.now)
    for row in rec.rows:
        if row.conversation_id is None:
            row.conversation_id = conversation_id


async def announce(rec: Recording, bus: Bus) -> None:
    if rec.member.erased_at is not None:
        return
    for row in rec.rows:
        await bus.publish(timeline.created_event(row))


def _buttons(markup: Any) -> list[str] | None:
    if isinstance(markup, InlineKeyboardMarkup):
        return [button.text for row in markup.inline_keyboard for button in row]
    return None


class TimelineRequestMiddleware(BaseRequestMiddleware):
    """Adds the bot's answers to the member's timeline once Telegram accepted them."""

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                       method: TelegramMethod[TelegramType]) -> Response[TelegramType]:
        result = await make_request(bot, method)  # aiogram hands back the result itself
        rec = _recording.get()
        if rec is not None and rec.member.erased_at is None \
                and isinstance(method, RECORDED_METHODS) \
                and getattr(method, "chat_id", None) in (rec.chat_id, None):
            self._record(rec, method, result)
        return result

    @staticmethod
    def _record(rec: Recording, method: TelegramMethod[Any], result: Any) -> None:
        parse_mode = getattr(method, "parse_mode", None)  # unset: the Bot's default, HTML
        text = timeline.as_seen(getattr(method, "text", None) or getattr(method, "caption", None),
                                isinstance(parse_mode, Default) or parse_mode == ParseMode.HTML)
        kind = {SendPhoto: "photo", SendDocument: "document",
                EditMessageText: "edit"}.get(type(method), "text")
        buttons = _buttons(getattr(method, "reply_markup", None))
        row = timeline.entry(
            rec.member.id, timeline.BOT, kind, rec.now, text=text,
            data={"buttons": buttons} if buttons else None,
            telegram_message_id=result.message_id if isinstance(result, TelegramMessage)
            else None)
        rec.session.add(row)
        rec.rows.append(row)
