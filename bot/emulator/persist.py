"""Keeping the emulated Telegram's members and chats in a file across restarts (the demo).

The service's database remembers which Telegram chat belongs to which member. An emulator
that forgot its members on a restart would hand the next new member the id of an earlier
one, and with it that member's link, open amount and all. So the demo saves what Telegram
itself would keep: members, their chats (messages, blocked or not), the files in them and
the id counters, and the team's supergroups with their topics. Not kept: pending updates
(the bot asks again), callback queries, faults, latency and webhooks, which belong to one
run.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EmulatorError
from .media import StoredFile
from .state import Conversation, Group, GroupMember, Message, Topic, User

if TYPE_CHECKING:
    from .emulator import TelegramEmulator

FORMAT = 1


def snapshot(emu: TelegramEmulator) -> dict[str, Any]:
    state = emu.state
    return {
        "format": FORMAT,
        "next_user_id": state.next_user_id,
        "users": [dataclasses.asdict(user) for user in state.users.values()],
        "chats": [_chat(conv) for conv in state.conversations.values()],
        "files": [_file(stored) for stored in emu.files.all()],
        "next_group_id": state.next_group_id,
        "groups": [_group(group) for group in state.groups.values()],
    }


def restore(emu: TelegramEmulator, data: dict[str, Any]) -> None:
    """Load a snapshot into an emulator that has its bots but no members yet."""
    if data.get("format") != FORMAT:
        raise EmulatorError(f"unknown emulator state format {data.get('format')!r}")
    state = emu.state
    if state.users:
        raise EmulatorError("restore into an emulator without members")
    for fields in data["users"]:
        user = User(**fields)
        state.users[user.id] = user
    for chat in data["chats"]:
        user = state.users[chat["user_id"]]
        conv = Conversation(chat["bot_id"], user, blocked=chat["blocked"],
                            next_message_id=chat["next_message_id"])
        conv.messages = [_message(fields, user) for fields in chat["messages"]]
        state.conversations[(conv.bot_id, user.id)] = conv
    for fields in data.get("groups", []):  # files of earlier versions have none
        group = Group(fields["id"], fields["title"], is_forum=fields["is_forum"],
                      next_message_id=fields["next_message_id"])
        group.members = {int(k): GroupMember(**v) for k, v in fields["members"].items()}
        group.topics = {t["thread_id"]: Topic(**t) for t in fields["topics"]}
        group.messages = [_message(m, group) for m in fields["messages"]]
        state.groups[group.id] = group
    state.next_group_id = data.get("next_group_id", state.next_group_id)
    for fields in data["files"]:
        emu.files.put(StoredFile(**{**fields, "data": base64.b64decode(fields["data"])}))
    state.next_user_id = data["next_user_id"]
    state.changed()


def save(emu: TelegramEmulator, path: Path) -> None:
    """Write the snapshot atomically: a crash mid-write leaves the previous file intact."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(snapshot(emu)), encoding="utf-8")
    os.replace(partial, path)


def load(emu: TelegramEmulator, path: Path) -> bool:
    """Restore from `path`; False when there is no such file (a first start)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise EmulatorError(f"cannot read the emulator state in {path}: {exc}") from exc
    restore(emu, data)
    return True


def _chat(conv: Conversation) -> dict[str, Any]:
    return {
        "bot_id": conv.bot_id,
        "user_id": conv.user.id,
        "blocked": conv.blocked,
        "next_message_id": conv.next_message_id,
        "messages": [
            {field.name: getattr(message, field.name)
             for field in dataclasses.fields(Message) if field.name != "chat"}
            for message in conv.messages
        ],
    }


def _message(fields: dict[str, Any], chat: User | Group) -> Message:
    media = fields.get("media")
    return Message(**{**fields, "chat": chat, "media": tuple(media) if media else None})


def _group(group: Group) -> dict[str, Any]:
    return {
        "id": group.id, "title": group.title, "is_forum": group.is_forum,
        "next_message_id": group.next_message_id,
        "members": {str(k): dataclasses.asdict(v) for k, v in group.members.items()},
        "topics": [dataclasses.asdict(t) for t in group.topics.values()],
        "messages": [
            {field.name: getattr(message, field.name)
             for field in dataclasses.fields(Message) if field.name != "chat"}
            for message in group.messages
        ],
    }


def _file(stored: StoredFile) -> dict[str, Any]:
    return {**dataclasses.asdict(stored), "data": base64.b64encode(stored.data).decode()}
