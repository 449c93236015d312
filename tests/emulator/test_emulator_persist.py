"""A restarted emulator (the demo's) knows its members, their chats and files again."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.emulator import EmulatorError, TelegramEmulator, persist
from tests.emulator.conftest import TOKEN

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000002000000030806000000")


def _emulator() -> TelegramEmulator:
    emu = TelegramEmulator()
    emu.add_bot(TOKEN, "payrescue_demo_bot")
    return emu


async def test_members_chats_and_files_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "telegram-emulator.json"
    first = _emulator()
    anna = first.create_user("Anna", "Schmidt", language_code="de")["id"]
    await first.start(anna, "tok_123")
    photo = await first.send_photo(anna, PNG, caption="meine Karte")
    first.block(anna)
    persist.save(first, path)

    second = _emulator()
    assert persist.load(second, path)
    assert second.get_user(anna)["last_name"] == "Schmidt"
    history = second.history(anna)
    assert [m["plain_text"] or m["caption_plain"] for m in history] == [
        "/start tok_123", "meine Karte"]
    assert second.files.get(photo["media"]["file_id"]).data == PNG
    assert second.is_blocked(anna)
    # a new member never gets an earlier member's id (and with it their link)
    assert second.create_user("Noah")["id"] != anna
    # message ids go on where they stopped
    second.unblock(anna)
    assert (await second.send_text(anna, "hallo"))["message_id"] == 3


def test_no_file_is_a_first_start_and_a_broken_one_is_named(tmp_path: Path) -> None:
    assert not persist.load(_emulator(), tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(EmulatorError, match="cannot read the emulator state"):
        persist.load(_emulator(), broken)
