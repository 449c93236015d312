"""Supergroups with forum topics, through the real aiogram Bot: shapes, rights, errors, limits."""

import pytest
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
from aiogram.types import (
    BufferedInputFile,
    ChatFullInfo,
    ChatMemberAdministrator,
    ChatMemberOwner,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
)

from bot.emulator import EmulatorLimits


@pytest.fixture
def owner(emu):
    return emu.create_user(first_name="Olga", language_code="de")


@pytest.fixture
def group(emu, owner):
    chat = emu.create_group("Team", owner["id"])
    emu.set_bot_rights(chat["id"], admin=True, can_manage_topics=True)
    return chat


async def test_a_bot_without_the_topic_right_is_told_what_is_missing(bot, emu, owner):
    chat = emu.create_group("Team", owner["id"])
    with pytest.raises(TelegramForbiddenError, match="bot is not a member of the supergroup"):
        await bot.send_message(chat["id"], "hi")
    emu.set_bot_rights(chat["id"])  # a plain member
    member = await bot.get_chat_member(chat["id"], 123456)
    assert member.status == "member"
    with pytest.raises(TelegramBadRequest, match="not enough rights to create a topic"):
        await bot.create_forum_topic(chat["id"], "Anna")
    emu.set_bot_rights(chat["id"], admin=True, can_manage_topics=False)
    with pytest.raises(TelegramBadRequest, match="not enough rights to create a topic"):
        await bot.create_forum_topic(chat["id"], "Anna")
    emu.set_bot_rights(chat["id"], admin=True, can_manage_topics=True)
    member = await bot.get_chat_member(chat["id"], 123456)
    assert isinstance(member, ChatMemberAdministrator) and member.can_manage_topics
    assert isinstance(await bot.get_chat_member(chat["id"], owner["id"]), ChatMemberOwner)
    emu.set_forum(chat["id"], False)
    with pytest.raises(TelegramBadRequest, match="the chat is not a forum"):
        await bot.create_forum_topic(chat["id"], "Anna")
    info = await bot.get_chat(chat["id"])
    assert isinstance(info, ChatFullInfo) and info.type == "supergroup" and not info.is_forum
    kinds = [next(k for k in u if k != "update_id") for u in emu.pending_updates()]
    assert kinds == ["my_chat_member"] * 3
    update = Update.model_validate(emu.pending_updates()[-1])
    assert update.my_chat_member.new_chat_member.can_manage_topics


async def test_topics_live_close_reopen_and_vanish_as_on_telegram(bot, emu, group, owner):
    topic = await bot.create_forum_topic(group["id"], "Anna · Karte abgelaufen · 29 €")
    thread = topic.message_thread_id
    sent = await bot.send_message(group["id"], "Kontext", message_thread_id=thread)
    assert sent.message_thread_id == thread and sent.is_topic_message
    assert sent.chat.is_forum and sent.chat.type == "supergroup"

    assert await bot.edit_forum_topic(group["id"], thread, name="Anna · übernommen")
    with pytest.raises(TelegramBadRequest, match="TOPIC_NOT_MODIFIED"):
        await bot.edit_forum_topic(group["id"], thread, name="Anna · übernommen")
    assert await bot.close_forum_topic(group["id"], thread)
    with pytest.raises(TelegramBadRequest, match="TOPIC_CLOSED"):
        await bot.send_message(group["id"], "noch da?", message_thread_id=thread)
    assert await bot.reopen_forum_topic(group["id"], thread)
    await bot.send_message(group["id"], "wieder offen", message_thread_id=thread)

    emu.delete_topic(group["id"], thread, by=owner["id"])  # by hand, in the app
    with pytest.raises(TelegramBadRequest, match="message thread not found"):
        await bot.send_message(group["id"], "weg?", message_thread_id=thread)
    with pytest.raises(TelegramBadRequest, match="message thread not found"):
        await bot.close_forum_topic(group["id"], thread)
    assert emu.topics(group["id"]) == [
        {"message_thread_id": thread, "name": "Anna · übernommen",
         "icon_color": 0x6FB9F0, "closed": False, "deleted": True}
    ]


async def test_members_write_in_topics_and_tap_buttons(bot, emu, group, owner):
    lena = emu.create_user(first_name="Lena")
    emu.add_group_member(group["id"], lena["id"])
    thread = (await bot.create_forum_topic(group["id"], "Anna")).message_thread_id
    post = await bot.send_message(
        group["id"], "Anna wartet", message_thread_id=thread,
        reply_markup=InlineKeyboardMarkup(inline_keyboard=[[
            InlineKeyboardButton(text="Übernehmen", callback_data="claim:1")]]),
    )
    await emu.group_send_text(group["id"], lena["id"], "Ich mache das", thread_id=thread)
    await emu.group_send_media(group["id"], lena["id"], "photo", b"\x89PNG", thread_id=thread,
                               caption="Beleg")
    await emu.group_press_button(group["id"], lena["id"], post.message_id, "claim:1")
    emu.close_topic(group["id"], thread, by=owner["id"])

    updates = await bot.get_updates()  # aiogram parses every update
    texts = [u.message for u in updates if u.message]
    assert [(m.text, m.message_thread_id, m.from_user.first_name) for m in texts[:1]] == [
        ("Ich mache das", thread, "Lena")]
    assert texts[1].photo and texts[1].caption == "Beleg" and texts[1].is_topic_message
    assert texts[2].forum_topic_closed is not None
    query = next(u.callback_query for u in updates if u.callback_query)
    assert query.message.chat.id == group["id"] and query.data == "claim:1"
    assert await bot.answer_callback_query(query.id, text="Übernommen")
    with pytest.raises(TelegramBadRequest, match="TOPIC_CLOSED"):
        await bot.send_photo(group["id"], BufferedInputFile(b"\x89PNG", "a.png"),
                             message_thread_id=thread)


async def test_a_group_that_is_not_an_admin_bots_sees_only_commands(bot, emu, owner):
    chat = emu.create_group("Team", owner["id"])
    emu.set_bot_rights(chat["id"])  # privacy mode: a plain member
    await emu.group_send_text(chat["id"], owner["id"], "Hallo zusammen")
    await emu.group_send_text(chat["id"], owner["id"], "/connect_team 1234")
    messages = [u["message"]["text"] for u in emu.pending_updates() if "message" in u]
    assert messages == ["/connect_team 1234"]


async def test_twenty_posts_a_minute_per_group_then_429(bot, emu, group, clock):
    emu.set_limits(EmulatorLimits(per_group_per_minute=20, per_group_burst=20))
    thread = (await bot.create_forum_topic(group["id"], "Anna")).message_thread_id
    for n in range(19):
        await bot.send_message(group["id"], f"m{n}", message_thread_id=thread)
    with pytest.raises(TelegramRetryAfter) as refused:
        await bot.send_message(group["id"], "one too many", message_thread_id=thread)
    assert refused.value.retry_after == 3  # one message every three seconds
    clock.advance(refused.value.retry_after)
    await bot.send_message(group["id"], "after the wait", message_thread_id=thread)
    posts = await emu.wait_for_group_messages(group["id"], 20, thread_id=thread)
    assert posts[-1]["plain_text"] == "after the wait"


async def test_the_control_api_plays_the_team_group(bot, emu, base_url, owner):
    import aiohttp

    async with aiohttp.ClientSession(base_url) as http:
        async def call(method, path, body=None):
            async with http.request(method, "/_emulator" + path, json=body) as response:
                return response.status, await response.json()

        status, chat = await call("POST", "/groups", {"title": "Team", "owner_id": owner["id"]})
        assert status == 201 and chat["is_forum"]
        gid = chat["id"]
        await call("PUT", f"/groups/{gid}/bot", {"admin": True, "can_manage_topics": True})
        thread = (await bot.create_forum_topic(gid, "Anna")).message_thread_id
        status, sent = await call("POST", f"/groups/{gid}/messages",
                                  {"user_id": owner["id"], "text": "Hallo", "thread_id": thread})
        assert status == 200 and sent["message_thread_id"] == thread
        status, seen = await call("GET", f"/groups/{gid}/messages?thread_id={thread}")
        assert [m["plain_text"] for m in seen["messages"]] == [None, "Hallo"]
        assert seen["messages"][0]["service"] == {
            "forum_topic_created": {"name": "Anna", "icon_color": 0x6FB9F0}}
        status, topics = await call("POST", f"/groups/{gid}/topics/{thread}/close",
                                    {"user_id": owner["id"]})
        assert topics["topics"][0]["closed"]
        status, error = await call("POST", f"/groups/{gid}/messages",
                                   {"user_id": 1, "text": "x"})
        assert status == 404 and "unknown user" in error["error"]


async def test_groups_and_topics_survive_a_restart(bot, emu, group, owner, tmp_path):
    from bot.emulator import TelegramEmulator, persist

    thread = (await bot.create_forum_topic(group["id"], "Anna")).message_thread_id
    await bot.send_message(group["id"], "Kontext", message_thread_id=thread)
    persist.save(emu, tmp_path / "state.json")
    again = TelegramEmulator()
    again.add_bot(token="123456:TEST-token", username="payrescue_demo_bot")
    assert persist.load(again, tmp_path / "state.json")
    assert again.topics(group["id"]) == emu.topics(group["id"])
    assert again.group_messages(group["id"]) == emu.group_messages(group["id"])
    assert again.create_group("Zweite", owner["id"])["id"] == group["id"] - 1
