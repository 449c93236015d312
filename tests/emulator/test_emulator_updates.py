"""getUpdates long polling, member actions as updates, and a real aiogram Dispatcher."""

import asyncio

import aiohttp
import pytest
from aiogram import Dispatcher, F
from aiogram.exceptions import TelegramConflictError
from aiogram.filters import CommandObject, CommandStart
from aiogram.types import (
    CallbackQuery,
    ChatMemberUpdated,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)


async def test_updates_queue_until_confirmed_by_offset(bot, emu, member):
    await emu.send_text(member["id"], "one")
    await emu.send_text(member["id"], "two")
    await emu.send_text(member["id"], "three")
    first = await bot.get_updates(limit=2)
    assert [u.message.text for u in first] == ["one", "two"]
    # Without a new offset nothing is confirmed: the same updates come again.
    assert [u.update_id for u in await bot.get_updates(limit=2)] == [u.update_id for u in first]
    rest = await bot.get_updates(offset=first[-1].update_id + 1)
    assert [u.message.text for u in rest] == ["three"]
    assert await bot.get_updates(offset=rest[-1].update_id + 1) == []
    assert emu.pending_updates() == []


async def test_member_message_shape(bot, emu, member):
    await emu.send_text(member["id"], "/start abc")
    [update] = await bot.get_updates()
    message = update.message
    assert message.from_user.id == member["id"] and not message.from_user.is_bot
    assert message.from_user.language_code == "de"
    assert message.chat.id == member["id"] and message.chat.type == "private"
    assert message.entities[0].type == "bot_command" and message.entities[0].length == 6
    assert emu.history(member["id"])[0]["from_bot"] is False


async def test_long_poll_wakes_up_on_a_new_update(bot, emu, member):
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.05)  # let the poll reach the emulator
    assert not poll.done()
    await emu.send_text(member["id"], "hello")
    updates = await asyncio.wait_for(poll, 2)
    assert [u.message.text for u in updates] == ["hello"]


async def test_long_poll_times_out_empty(bot):
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await bot.get_updates(timeout=1) == []
    assert loop.time() - started >= 0.9


async def test_a_second_poller_ends_the_first_with_409(bot, bot_factory):
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.05)
    assert await bot_factory().get_updates() == []
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await asyncio.wait_for(first, 2)


async def test_allowed_updates_filter(bot, emu, member):
    await bot.get_updates(allowed_updates=["callback_query"])
    await emu.send_text(member["id"], "dropped")
    assert emu.pending_updates() == []
    await bot.get_updates(allowed_updates=[])  # back to the default: everything
    await emu.send_text(member["id"], "kept")
    assert [u.message.text for u in await bot.get_updates()] == ["kept"]


async def test_block_and_unblock_send_my_chat_member(bot, emu, member):
    emu.block(member["id"])
    emu.unblock(member["id"])
    blocked, unblocked = await bot.get_updates()
    assert blocked.my_chat_member.new_chat_member.status == "kicked"
    assert blocked.my_chat_member.old_chat_member.status == "member"
    assert unblocked.my_chat_member.new_chat_member.status == "member"
    assert blocked.my_chat_member.chat.id == member["id"]


async def test_dispatcher_polling_end_to_end(bot, emu, member):
    dp = Dispatcher()
    seen_blocks: list[str] = []

    @dp.message(CommandStart(deep_link=True))
    async def start(message: Message, command: CommandObject) -> None:
        await message.bot.send_chat_action(message.chat.id, "typing")
        await message.answer(
            f"Token: <code>{command.args}</code>",
            parse_mode="HTML",
            reply_markup=InlineKeyboardMarkup(
                inline_keyboard=[[InlineKeyboardButton(text="Jetzt zahlen", callback_data="pay")]]
            ),
        )

    @dp.message(F.text)
    async def echo(message: Message) -> None:
        await message.answer(f"Echo: {message.text}")

    @dp.callback_query(F.data == "pay")
    async def pay(query: CallbackQuery) -> None:
        await query.answer("Danke!")
        await query.message.edit_text("Bezahlt ✅")

    @dp.my_chat_member()
    async def blocked(event: ChatMemberUpdated) -> None:
        seen_blocks.append(event.new_chat_member.status)

    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
    try:
        await emu.start(member["id"], "tok_123")
        [welcome] = await emu.wait_for_messages(member["id"], 1)
        assert welcome["plain_text"] == "Token: tok_123"
        assert emu.chat_actions(member["id"]) == ["typing"]

        await emu.press_button(member["id"], welcome["message_id"], "pay")
        await emu.wait_until(lambda: bool(emu.sent_messages(member["id"])[0]["edits"]))
        [paid] = emu.sent_messages(member["id"])
        assert paid["plain_text"] == "Bezahlt ✅" and paid["reply_markup"] is None
        assert emu.callback_answers[0]["text"] == "Danke!"

        await emu.send_text(member["id"], "Hallo")
        messages = await emu.wait_for_messages(member["id"], 2)
        assert messages[-1]["plain_text"] == "Echo: Hallo"

        emu.block(member["id"])
        await emu.wait_until(lambda: seen_blocks == ["kicked"])
    finally:
        await dp.stop_polling()
        await polling


async def test_wait_for_messages_times_out_with_a_useful_message(emu, member):
    with pytest.raises(TimeoutError, match=r"expected 1 bot message\(s\) .* got 0"):
        await emu.wait_for_messages(member["id"], 1, timeout=0.05)


async def test_shutdown_answers_a_pending_long_poll_at_once():
    from bot.emulator import TelegramEmulator, start_emulator

    emulator = TelegramEmulator()
    emulator.add_bot(token="42:SHUTDOWN-token", username="shutdown_bot")
    runner, url = await start_emulator(emulator)
    async with aiohttp.ClientSession() as http:
        poll = asyncio.create_task(
            http.get(f"{url}/bot42:SHUTDOWN-token/getUpdates", params={"timeout": "30"})
        )
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await runner.cleanup()
        assert loop.time() - started < 2
        async with await poll as resp:
            assert (await resp.json()) == {"ok": True, "result": []}
