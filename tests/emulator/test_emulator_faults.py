"""Injected faults, latency and flood limits as the aiogram client experiences them."""

import asyncio

import pytest
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)

from bot.emulator import EmulatorError, EmulatorLimits


async def test_next_calls_fail_with_500_then_recover(bot, emu, member):
    emu.inject_faults(count=2, status=500)
    for _ in range(2):
        with pytest.raises(TelegramServerError, match="Internal Server Error"):
            await bot.get_me()
    assert (await bot.get_me()).username == "payrescue_demo_bot"


async def test_fault_for_one_method_only(bot, emu, member):
    emu.inject_faults(method="sendMessage", count=1, status=502)
    assert await bot.get_me()  # other methods pass
    with pytest.raises(TelegramServerError, match="Bad Gateway"):
        await bot.send_message(member["id"], "x")
    await bot.send_message(member["id"], "x")
    assert [m["plain_text"] for m in emu.sent_messages(member["id"])] == ["x"]


async def test_injected_429_is_telegram_retry_after(bot, emu, member):
    emu.inject_faults(method="sendMessage", status=429, retry_after=7)
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(member["id"], "x")
    assert caught.value.retry_after == 7
    assert "retry after 7" in caught.value.message


async def test_injected_403_and_custom_description(bot, emu, member):
    emu.inject_faults(method="sendMessage", status=403)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(member["id"], "x")
    emu.inject_faults(method="sendMessage", status=400, description="Bad Request: PEER_ID_INVALID")
    with pytest.raises(TelegramBadRequest, match="PEER_ID_INVALID"):
        await bot.send_message(member["id"], "x")


async def test_dropped_connection_is_a_network_error(bot, emu, member):
    emu.inject_faults(method="getMe", drop_connection=True)
    with pytest.raises(TelegramNetworkError):
        await bot.get_me()
    assert await bot.get_me()


def test_fault_arguments_are_checked(emu):
    with pytest.raises(EmulatorError, match="unknown Bot API method"):
        emu.inject_faults(method="sendPigeon")
    with pytest.raises(EmulatorError, match="count"):
        emu.inject_faults(count=0)
    with pytest.raises(EmulatorError, match="status"):
        emu.inject_faults(status=200)
    emu.inject_faults(method="getMe", count=3)
    assert emu.faults.pending()[0]["remaining"] == 3
    emu.clear_faults()
    assert emu.faults.pending() == []


async def test_latency_delays_answers(bot, emu):
    emu.set_latency(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bot.get_me()
    assert loop.time() - started >= 0.2
    emu.set_latency(0)
    with pytest.raises(EmulatorError):
        emu.set_latency(-1)


async def test_per_chat_flood_limit_with_injected_clock(bot, emu, member, clock):
    for n in range(3):  # the default burst of 3
        await bot.send_message(member["id"], f"m{n}")
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(member["id"], "too fast")
    assert caught.value.retry_after == 1
    assert "Too Many Requests: retry after 1" in caught.value.message
    clock.advance(1)
    await bot.send_message(member["id"], "after waiting")
    assert len(emu.sent_messages(member["id"])) == 4


async def test_global_flood_limit_and_raising_it(bot, emu, clock):
    emu.set_limits(EmulatorLimits(global_per_second=5, per_chat_per_second=None))
    members = [emu.create_user(f"M{n}") for n in range(6)]
    for m in members[:5]:
        await bot.send_message(m["id"], "hi")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(members[5]["id"], "hi")
    # Chat actions count against the global budget as well.
    with pytest.raises(TelegramRetryAfter):
        await bot.send_chat_action(members[5]["id"], "typing")
    emu.set_limits(
        EmulatorLimits(global_per_second=1000, per_chat_per_second=1000, per_chat_burst=1000)
    )
    await asyncio.gather(*(bot.send_message(members[0]["id"], str(n)) for n in range(50)))
    assert len(emu.sent_messages(members[0]["id"])) == 51
