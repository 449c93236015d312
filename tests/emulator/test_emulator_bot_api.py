"""Bot API methods and errors, called through the real aiogram Bot over HTTP."""

import aiohttp
import pytest
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramUnauthorizedError,
)
from aiogram.methods import TelegramMethod
from aiogram.types import (
    BotCommand,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
)

TOKEN = "123456:TEST-token"


def keyboard(*buttons: InlineKeyboardButton) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[list(buttons)])


class GetNothing(TelegramMethod[bool]):
    """A method Telegram does not have, to see the 404 answer through aiogram."""

    __returning__ = bool
    __api_method__ = "getNothing"


async def test_get_me_describes_the_bot(bot):
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username, me.first_name) == (
        123456,
        True,
        "payrescue_demo_bot",
        "PayRescue",
    )


async def test_send_message_returns_a_telegram_message(bot, emu, member):
    markup = keyboard(
        InlineKeyboardButton(text="Update card", url="https://billing.example/portal"),
        InlineKeyboardButton(text="Later", callback_data="later:1"),
    )
    sent = await bot.send_message(
        member["id"], "Hallo <b>Anna</b>, deine Zahlung", parse_mode="HTML", reply_markup=markup
    )
    assert sent.message_id == 1
    assert sent.chat.id == member["id"] and sent.chat.type == "private"
    assert sent.chat.first_name == "Anna"
    assert sent.from_user.id == 123456 and sent.from_user.is_bot
    assert sent.text == "Hallo Anna, deine Zahlung"
    assert sent.entities[0].type == "bold"
    assert sent.html_text == "Hallo <b>Anna</b>, deine Zahlung"
    assert sent.reply_markup.model_dump() == markup.model_dump()
    assert isinstance(sent.date.timestamp(), float)

    [stored] = emu.sent_messages(member["id"])
    assert stored["message_id"] == 1
    assert stored["text"] == "Hallo <b>Anna</b>, deine Zahlung"
    assert stored["parse_mode"] == "HTML"
    assert stored["plain_text"] == "Hallo Anna, deine Zahlung"
    assert stored["reply_markup"]["inline_keyboard"][0][1]["callback_data"] == "later:1"
    assert stored["edits"] == [] and stored["edit_date"] is None


async def test_markdown_v2_and_plain_text(bot, member):
    sent = await bot.send_message(member["id"], r"*Total:* 9\.99 €", parse_mode="MarkdownV2")
    assert sent.text == "Total: 9.99 €"
    plain = await bot.send_message(member["id"], "<b> is not parsed without parse_mode")
    assert plain.text == "<b> is not parsed without parse_mode"
    assert plain.message_id == 2


@pytest.mark.parametrize(
    ("kwargs", "description"),
    [
        ({"text": ""}, "Bad Request: message text is empty"),
        ({"text": "x" * 4097}, "Bad Request: message is too long"),
        (
            {"text": "<b>oops", "parse_mode": "HTML"},
            "Bad Request: can't parse entities: "
            'Can\'t find end tag corresponding to start tag "b"',
        ),
        (
            {"text": "5.00", "parse_mode": "MarkdownV2"},
            "Bad Request: can't parse entities: Character '.' is reserved and must be "
            "escaped with the preceding '\\'",
        ),
        (
            {
                "text": "x",
                "reply_markup": keyboard(InlineKeyboardButton(text="b", callback_data="x" * 65)),
            },
            "Bad Request: BUTTON_DATA_INVALID",
        ),
        (
            {"text": "x", "reply_markup": keyboard(InlineKeyboardButton(text="b", url="nope"))},
            "Bad Request: inline keyboard button URL 'nope' is invalid: Wrong HTTP URL",
        ),
    ],
)
async def test_send_message_bad_requests(bot, member, kwargs, description):
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.send_message(member["id"], **kwargs)
    assert caught.value.message == description


async def test_4096_characters_is_still_fine_and_64_byte_callback_data_too(bot, member):
    await bot.send_message(member["id"], "x" * 4096)
    await bot.send_message(
        member["id"],
        "x",
        reply_markup=keyboard(InlineKeyboardButton(text="b", callback_data="é" * 32)),
    )


async def test_unknown_chat_is_400_chat_not_found(bot):
    with pytest.raises(TelegramBadRequest, match="Bad Request: chat not found"):
        await bot.send_message(999, "hi")


async def test_blocked_member_is_403(bot, emu, member):
    emu.block(member["id"])
    with pytest.raises(TelegramForbiddenError, match="Forbidden: bot was blocked by the user"):
        await bot.send_message(member["id"], "hi")
    emu.unblock(member["id"])
    await bot.send_message(member["id"], "welcome back")


async def test_wrong_token_is_401(bot_factory):
    stranger = bot_factory("999:WRONG-token")
    with pytest.raises(TelegramUnauthorizedError, match="Unauthorized"):
        await stranger.get_me()


async def test_unknown_method_is_404(bot):
    with pytest.raises(TelegramNotFound, match="Not Found"):
        await bot(GetNothing())


async def test_raw_http_shapes_for_errors_and_other_encodings(base_url, member):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/bot{TOKEN}/fooBar") as resp:
            assert resp.status == 404
            assert await resp.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        async with http.get(f"{base_url}/bot1:nope/getMe") as resp:
            assert resp.status == 401
            assert await resp.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
        # Query string (GET), JSON body and method names in any case all work, as on Telegram.
        url = f"{base_url}/bot{TOKEN}/SENDMESSAGE"
        async with http.get(url, params={"chat_id": member["id"], "text": "via query"}) as resp:
            assert (await resp.json())["result"]["text"] == "via query"
        body = {
            "chat_id": member["id"],
            "text": "via json",
            "reply_markup": {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]},
        }
        async with http.post(url, json=body) as resp:
            result = (await resp.json())["result"]
            assert result["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "a"
        async with http.post(url, json={"text": "no chat"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["description"] == "Bad Request: chat_id is empty"


async def test_edit_message_text_keeps_history_and_drops_keyboard(bot, emu, member):
    markup = keyboard(InlineKeyboardButton(text="Pay", callback_data="pay"))
    sent = await bot.send_message(member["id"], "Zahlung offen", reply_markup=markup)
    edited = await bot.edit_message_text(
        "Zahlung <i>erledigt</i>",
        chat_id=member["id"],
        message_id=sent.message_id,
        parse_mode="HTML",
    )
    assert edited.text == "Zahlung erledigt"
    assert edited.edit_date is not None
    # Like Telegram: an edit without reply_markup removes the inline keyboard.
    assert edited.reply_markup is None
    [stored] = emu.sent_messages(member["id"])
    assert stored["text"] == "Zahlung <i>erledigt</i>"
    assert stored["reply_markup"] is None
    assert [e["text"] for e in stored["edits"]] == ["Zahlung offen"]
    assert stored["edits"][0]["reply_markup"] == markup.model_dump(exclude_none=True)


async def test_edit_errors_not_modified_and_not_found(bot, member, emu):
    markup = keyboard(InlineKeyboardButton(text="Pay", callback_data="pay"))
    sent = await bot.send_message(member["id"], "same", reply_markup=markup)
    with pytest.raises(TelegramBadRequest, match="Bad Request: message is not modified: "):
        await bot.edit_message_text(
            "same", chat_id=member["id"], message_id=sent.message_id, reply_markup=markup
        )
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(
            chat_id=member["id"], message_id=sent.message_id, reply_markup=markup
        )
    with pytest.raises(TelegramBadRequest, match="Bad Request: message to edit not found"):
        await bot.edit_message_text("x", chat_id=member["id"], message_id=99)
    own = await emu.send_text(member["id"], "hello")
    with pytest.raises(TelegramBadRequest, match="Bad Request: message can't be edited"):
        await bot.edit_message_text("x", chat_id=member["id"], message_id=own["message_id"])


async def test_edit_reply_markup_changes_and_removes_buttons(bot, emu, member):
    sent = await bot.send_message(
        member["id"],
        "Pick",
        reply_markup=keyboard(InlineKeyboardButton(text="A", callback_data="a")),
    )
    new_markup = keyboard(InlineKeyboardButton(text="B", callback_data="b"))
    edited = await bot.edit_message_reply_markup(
        chat_id=member["id"], message_id=sent.message_id, reply_markup=new_markup
    )
    assert edited.reply_markup.model_dump() == new_markup.model_dump()
    removed = await bot.edit_message_reply_markup(chat_id=member["id"], message_id=sent.message_id)
    assert removed.reply_markup is None
    assert len(emu.sent_messages(member["id"])[0]["edits"]) == 2


async def test_reply_keyboards_are_stored_but_not_echoed(bot, emu, member):
    markup = ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text="Ja"), KeyboardButton(text="Nein")]]
    )
    sent = await bot.send_message(member["id"], "Weiter?", reply_markup=markup)
    assert sent.reply_markup is None  # Telegram only echoes inline keyboards
    assert emu.sent_messages(member["id"])[0]["reply_markup"]["keyboard"][0][0]["text"] == "Ja"
    await bot.send_message(member["id"], "Grund?", reply_markup=ForceReply())


async def test_answer_callback_query(bot, emu, member):
    sent = await bot.send_message(
        member["id"],
        "Pay?",
        reply_markup=keyboard(InlineKeyboardButton(text="Pay", callback_data="pay")),
    )
    query = await emu.press_button(member["id"], sent.message_id, "pay")
    assert await bot.answer_callback_query(query["id"], text="Danke!", show_alert=True)
    [answer] = emu.callback_answers
    assert answer["callback_query_id"] == query["id"]
    assert (answer["text"], answer["show_alert"], answer["data"]) == ("Danke!", True, "pay")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query["id"])
    with pytest.raises(TelegramBadRequest, match="query ID is invalid"):
        await bot.answer_callback_query("12345")


async def test_press_button_checks_the_button_exists(bot, emu, member):
    from bot.emulator import EmulatorError

    sent = await bot.send_message(
        member["id"],
        "Pay?",
        reply_markup=keyboard(InlineKeyboardButton(text="Pay", callback_data="pay")),
    )
    with pytest.raises(EmulatorError, match="no button with callback_data 'other'"):
        await emu.press_button(member["id"], sent.message_id, "other")
    with pytest.raises(EmulatorError, match="not found"):
        await emu.press_button(member["id"], 42, "pay")


async def test_send_chat_action(bot, emu, member):
    assert await bot.send_chat_action(member["id"], "typing")
    assert await bot.send_chat_action(member["id"], "upload_document")
    assert emu.chat_actions(member["id"]) == ["typing", "upload_document"]
    assert emu.chat_action_log(member["id"])[0]["action"] == "typing"
    with pytest.raises(TelegramBadRequest, match="wrong parameter action"):
        await bot.send_chat_action(member["id"], "dancing")


async def test_delete_message_get_chat_and_commands(bot, emu, member):
    sent = await bot.send_message(member["id"], "oops")
    assert await bot.delete_message(member["id"], sent.message_id)
    assert emu.sent_messages(member["id"])[0]["deleted"] is True
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(member["id"], sent.message_id)

    chat = await bot.get_chat(member["id"])
    assert (chat.id, chat.type, chat.first_name, chat.last_name) == (
        member["id"],
        "private",
        "Anna",
        "Muster",
    )

    commands = [
        BotCommand(command="start", description="Start"),
        BotCommand(command="help", description="Hilfe"),
    ]
    assert await bot.set_my_commands(commands)
    assert [c.command for c in await bot.get_my_commands()] == ["start", "help"]
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == []
    assert await bot.set_my_description("PayRescue hilft")


async def test_several_bots_have_separate_chats(emu, bot, bot_factory, member):
    emu.add_bot(token="654321:OTHER-token", username="second_bot", first_name="Second")
    second = bot_factory("654321:OTHER-token")
    assert (await second.get_me()).username == "second_bot"
    await bot.send_message(member["id"], "from first")
    sent = await second.send_message(member["id"], "from second")
    assert sent.message_id == 1  # message ids count per conversation
    assert [m["plain_text"] for m in emu.sent_messages(member["id"])] == ["from first"]
    assert [m["plain_text"] for m in emu.sent_messages(member["id"], bot="second_bot")] == [
        "from second"
    ]
