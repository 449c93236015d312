"""The team group end to end, through the emulator: set-up, a topic per waiting conversation,
answering from the topic and from the console alternately, the claim race, resolving, a
burst under the group limit, and topics deleted or closed by hand. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.emulator import EmulatorLimits, TelegramEmulator
from payrescue import teamgroup
from payrescue.agents import add_agent
from payrescue.clock import FakeClock
from payrescue.db.models import Agent, Conversation, Message, TeamTopic
from payrescue.events import Event
from payrescue.keys import BUS
from tests.conversations.helpers import PNG, linked_member, open_case
from tests.handoff.conftest import CSRF, PASSWORD, quick_password_hashes  # noqa: F401
from tests.harness import RunningService, eventually, running_service

GROUP_ADMIN = "Olga"


@pytest.fixture
async def svc(engine: AsyncEngine, clock: FakeClock, tmp_path: Path
              ) -> AsyncIterator[RunningService]:
    # the group's flood limit moves with the test's clock, as the poster's own pacing does
    emulator = TelegramEmulator(EmulatorLimits(per_chat_per_second=None),
                                clock=lambda: clock.now().timestamp())
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               emulator=emulator, outbox_retry_seconds=0.01,
                               default_language="en") as service:
        yield service


class Team:
    """The team group as a test sees it: the emulated group, its owner and linked agents."""

    def __init__(self, svc: RunningService, group_id: int, owner: int) -> None:
        self.svc = svc
        self.group_id = group_id
        self.owner = owner
        self.telegram: dict[str, int] = {}  # agent name → Telegram user id
        self.ids: dict[str, int] = {}  # agent name → agent id

    @property
    def emu(self) -> TelegramEmulator:
        return self.svc.emulator

    async def agent(self, name: str, *, role: str = "agent") -> int:
        """An agent with a console account who linked Telegram and joined the group."""
        async with self.svc.sessionmaker() as db, db.begin():
            agent = await add_agent(db, email=f"{name.lower()}@example.org", name=name,
                                    role=role, password=PASSWORD, now=self.svc.clock.now(),
                                    language="en")
            payload = teamgroup.agent_link_payload(self.svc.settings, agent, self.svc.clock.now())
        user = self.emu.create_user(name, language_code="en")
        self.emu.add_group_member(self.group_id, user["id"])
        await self.emu.start(user["id"], payload)
        answers = await self.emu.wait_for_messages(user["id"], 1)
        assert "your Telegram account is linked" in answers[-1]["plain_text"]
        self.telegram[name], self.ids[name] = user["id"], agent.id
        return agent.id

    def topics(self) -> list[dict[str, Any]]:
        return [t for t in self.emu.topics(self.group_id) if not t["deleted"]]

    async def topic_of(self, conversation_id: int) -> TeamTopic:
        async def found() -> TeamTopic | None:
            async with self.svc.sessionmaker() as session:
                topic = await session.scalar(select(TeamTopic).where(
                    TeamTopic.conversation_id == conversation_id))
                return topic if topic is not None and topic.first_post_id else None

        topic = None

        async def check() -> None:
            nonlocal topic
            topic = await found()

        for _ in range(500):
            await check()
            if topic is not None:
                return topic
            await asyncio.sleep(0.02)
        raise AssertionError(f"no topic for conversation {conversation_id}")

    def posts(self, thread_id: int) -> list[str]:
        """What the bot posted in the topic (service messages left out), oldest first."""
        return [m["plain_text"] or m["caption_plain"] or f"[{m['media']['kind']}]"
                for m in self.emu.group_messages(self.group_id, thread_id=thread_id)
                if m["from_bot"] and not m["service"]]

    def first_post(self, topic: TeamTopic) -> dict[str, Any]:
        return next(m for m in self.emu.group_messages(self.group_id, thread_id=topic.thread_id)
                    if m["message_id"] == topic.first_post_id)

    async def wait_post(self, thread_id: int, text: str) -> None:
        try:
            await self.emu.wait_until(lambda: any(text in p for p in self.posts(thread_id)),
                                      timeout=10)
        except TimeoutError:
            raise AssertionError(f"{text!r} not in {self.posts(thread_id)}") from None

    async def write(self, name: str, thread_id: int, text: str) -> None:
        await self.emu.group_send_text(self.group_id, self.telegram[name], text,
                                       thread_id=thread_id)

    async def press(self, name: str, topic: TeamTopic, prefix: str) -> None:
        await self.emu.group_press_button(self.group_id, self.telegram[name],
                                          topic.first_post_id, f"{prefix}{topic.conversation_id}")


async def connect(svc: RunningService) -> Team:
    emu = svc.emulator
    owner = emu.create_user(GROUP_ADMIN, language_code="en")
    group = emu.create_group("Support team", owner["id"])
    emu.set_bot_rights(group["id"], admin=True, can_manage_topics=True)
    code = teamgroup.connect_code(svc.settings, svc.clock.now())
    await emu.group_send_text(group["id"], owner["id"], f"/connect_team {code}")
    answers = await emu.wait_for_group_messages(group["id"], 1)
    assert answers[-1]["plain_text"].startswith("Connected."), answers[-1]["plain_text"]
    return Team(svc, group["id"], owner["id"])


class Console:
    """A signed-in browser on the running service's console."""

    def __init__(self, http: aiohttp.ClientSession, base: str, csrf: str) -> None:
        self.http, self.base, self.csrf = http, base, csrf

    async def post(self, path: str, **form: str) -> aiohttp.ClientResponse:
        async with self.http.post(self.base + path, data={"csrf_token": self.csrf, **form},
                                  headers={"Accept": "application/json"}) as response:
            await response.read()
            return response


async def console(svc: RunningService, http: aiohttp.ClientSession, email: str) -> Console:
    async with http.get(svc.base_url + "/console/login") as page:
        token = CSRF.search(await page.text()).group(1)
    async with http.post(svc.base_url + "/console/login", allow_redirects=False, data={
            "email": email, "password": PASSWORD, "csrf_token": token}) as response:
        assert response.status == 303
    async with http.get(svc.base_url + "/console/queue") as page:
        return Console(http, svc.base_url, CSRF.search(await page.text()).group(1))


async def ask_for_person(svc: RunningService, chat: int, member_id: int) -> Conversation:
    """The member sends /human; returns their conversation once it waits."""
    await svc.emulator.send_text(chat, "/human")

    async def waiting() -> Conversation | None:
        async with svc.sessionmaker() as session:
            return await session.scalar(select(Conversation).where(
                Conversation.member_id == member_id, Conversation.status == "waiting"))

    for _ in range(500):
        if (conversation := await waiting()) is not None:
            return conversation
        await asyncio.sleep(0.02)
    raise AssertionError("the conversation does not wait")


async def lines_of(svc: RunningService, conversation_id: int) -> list[Message]:
    async with svc.sessionmaker() as session:
        return list(await session.scalars(select(Message).where(
            Message.conversation_id == conversation_id).order_by(Message.id)))


async def test_connecting_says_what_is_missing_and_only_linked_agents_count(svc) -> None:
    emu = svc.emulator
    owner = emu.create_user(GROUP_ADMIN, language_code="en")
    group = emu.create_group("Support team", owner["id"], is_forum=False)
    emu.set_bot_rights(group["id"])  # a plain member: commands only
    stranger = emu.create_user("Max", language_code="en")
    emu.add_group_member(group["id"], stranger["id"])
    code = teamgroup.connect_code(svc.settings, svc.clock.now())

    await emu.group_send_text(group["id"], stranger["id"], f"/connect_team {code}")
    refused = (await emu.wait_for_group_messages(group["id"], 1))[-1]["plain_text"]
    assert "Only an administrator" in refused and "Topics are off" in refused
    assert "Manage topics" in refused
    emu.set_forum(group["id"], True)
    emu.set_bot_rights(group["id"], admin=True, can_manage_topics=True)
    await emu.group_send_text(group["id"], owner["id"], "/connect_team not-a-code")
    refused = (await emu.wait_for_group_messages(group["id"], 2))[-1]["plain_text"]
    assert "The code is not valid" in refused and "Topics" not in refused
    await emu.group_send_text(group["id"], owner["id"], f"/connect_team {code}")
    assert (await emu.wait_for_group_messages(group["id"], 3))[-1]["plain_text"].startswith(
        "Connected.")
    await emu.group_send_text(group["id"], owner["id"], f"/connect_team {code}")
    assert "already been used" in (await emu.wait_for_group_messages(group["id"], 4))[-1][
        "plain_text"]

    team = Team(svc, group["id"], owner["id"])
    member, chat = await linked_member(svc, language="en")
    conversation = await ask_for_person(svc, chat, member.id)
    topic = await team.topic_of(conversation.id)
    assert [t["name"] for t in team.topics()] == ["Anna · asked for a person"]  # no e-mail
    # someone in the group who is no linked agent: ignored, never reaches the member
    before = len(emu.sent_messages(chat))
    await emu.group_send_text(group["id"], stranger["id"], "Hi Anna, Max here",
                              thread_id=topic.thread_id)
    await team.agent("Lena")
    await team.write("Lena", topic.thread_id, "Hello Anna, Lena from the team.")
    answers = await emu.wait_for_messages(chat, before + 1)
    assert [m["plain_text"] for m in answers[before:]] == ["Hello Anna, Lena from the team."]
    assert not [line for line in await lines_of(svc, conversation.id) if "Max" in (line.text or "")]
    # a used agent link does not link anyone else
    async with svc.sessionmaker() as session:
        lena = await session.scalar(select(Agent).where(Agent.name == "Lena"))
        assert lena.telegram_user_id == team.telegram["Lena"]


async def test_answered_alternately_from_topic_and_console(svc) -> None:
    team = await connect(svc)
    await team.agent("Lena")
    member, chat = await linked_member(svc, language="en")
    await open_case(svc, member, attempt_count=2)
    conversation = await ask_for_person(svc, chat, member.id)
    topic = await team.topic_of(conversation.id)
    first = team.first_post(topic)
    assert "Anna needs a person." in first["plain_text"]
    assert "Plan: Gold Club · €29.00" in first["plain_text"]
    assert "Failed attempts: 2" in first["plain_text"]
    assert "Waiting for someone to claim it." in first["plain_text"]
    assert [b["text"] for row in first["reply_markup"]["inline_keyboard"] for b in row] == [
        "Claim", "Send fresh link", "Resolve", "Back to bot"]

    await svc.emulator.send_text(chat, "My card was replaced last week")
    await team.wait_post(topic.thread_id, "Anna: My card was replaced last week")
    await svc.emulator.send_photo(chat, PNG)
    await svc.emulator.wait_until(lambda: any(
        m["media"] and m["media"]["kind"] == "photo"
        for m in svc.emulator.group_messages(team.group_id, thread_id=topic.thread_id)))

    # from the topic: claims implicitly and reaches the member like a console reply
    await team.write("Lena", topic.thread_id, "Hi Anna, I am on it.")
    await svc.emulator.wait_until(lambda: svc.emulator.sent_messages(chat)[-1]["plain_text"]
                                  == "Hi Anna, I am on it.")
    await svc.emulator.wait_until(
        lambda: "Taken by Lena." in team.first_post(topic)["plain_text"], timeout=10)
    assert [b["text"] for row in team.first_post(topic)["reply_markup"]["inline_keyboard"]
            for b in row] == ["Send fresh link", "Resolve", "Back to bot"]
    # from the console: the same conversation, and the topic shows it
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        browser = await console(svc, http, "lena@example.org")
        reply = await browser.post(f"/console/conversations/{conversation.id}/reply",
                                   text="Here is what happened with your card.")
        assert reply.status == 200
        await team.wait_post(topic.thread_id, "Lena: Here is what happened with your card.")
        await browser.post(f"/console/conversations/{conversation.id}/note",
                           text="Card issuer says it is fine")
        await team.wait_post(topic.thread_id, "Note by Lena: Card issuer says it is fine")
    # and the topic again: a note stays internal, a photo reaches the member
    await team.write("Lena", topic.thread_id, "!call her tomorrow if nothing happens")
    await svc.emulator.group_send_media(team.group_id, team.telegram["Lena"], "photo", PNG,
                                        thread_id=topic.thread_id, caption="Where to tap")
    await svc.emulator.wait_until(lambda: svc.emulator.sent_messages(chat)[-1]["media"]
                                  is not None, timeout=10)
    sent = [m["plain_text"] or m["caption_plain"] for m in svc.emulator.sent_messages(chat)]
    assert sent[-3:] == ["Hi Anna, I am on it.", "Here is what happened with your card.",
                         "Where to tap"]
    lines = [(line.sender, line.text) for line in await lines_of(svc, conversation.id)
             if line.sender in ("agent", "note")]
    assert lines == [("agent", "Hi Anna, I am on it."),
                     ("agent", "Here is what happened with your card."),
                     ("note", "Card issuer says it is fine"),
                     ("note", "call her tomorrow if nothing happens"),
                     ("agent", "Where to tap")]
    # the topic shows each console line once and none of its own a second time
    posts = team.posts(topic.thread_id)
    assert sum("I am on it" in p for p in posts) == 0
    assert sum("what happened with your card" in p for p in posts) == 1

    # resolve from the topic: closed there, the member is asked for a rating
    await team.press("Lena", topic, "team:resolve:")
    await svc.emulator.wait_until(lambda: team.topics()[0]["closed"], timeout=10)
    assert "Resolved." in team.first_post(topic)["plain_text"]
    assert team.first_post(topic)["reply_markup"] is None
    await svc.emulator.wait_until(lambda: svc.emulator.sent_messages(chat)[-1]["reply_markup"]
                                  is not None, timeout=10)
    rating = svc.emulator.sent_messages(chat)[-1]
    assert [b["text"] for b in rating["reply_markup"]["inline_keyboard"][0]] == [
        "1", "2", "3", "4", "5"]
    async with svc.sessionmaker() as session:
        assert (await session.get(Conversation, conversation.id)).status == "resolved"

    # the member needs a person again within the window: the same topic opens again
    again = await ask_for_person(svc, chat, member.id)
    assert again.id != conversation.id
    reopened = await team.topic_of(again.id)
    assert reopened.thread_id == topic.thread_id
    await svc.emulator.wait_until(lambda: not team.topics()[0]["closed"], timeout=10)
    assert len(team.topics()) == 1


async def test_claim_race_between_topic_button_and_console(svc) -> None:
    team = await connect(svc)
    await team.agent("Lena")
    await team.agent("Tom")
    member, chat = await linked_member(svc, language="en")
    conversation = await ask_for_person(svc, chat, member.id)
    topic = await team.topic_of(conversation.id)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        tom = await console(svc, http, "tom@example.org")
        pressed, claimed = await asyncio.gather(
            team.press("Lena", topic, "team:claim:"),
            tom.post(f"/console/conversations/{conversation.id}/claim"))
        await svc.emulator.wait_until(
            lambda: any(a.get("chat_id") == team.group_id
                        for a in svc.emulator.callback_answers), timeout=10)
    async with svc.sessionmaker() as session:
        owner = (await session.get(Conversation, conversation.id)).assigned_agent_id
    winner = "Tom" if owner == team.ids["Tom"] else "Lena"
    assert owner == team.ids[winner]
    answer = next(a for a in svc.emulator.callback_answers if a.get("chat_id") == team.group_id)
    if winner == "Tom":
        assert claimed.status == 200 and answer["text"] == "Tom holds this conversation."
    else:
        assert claimed.status == 409 and answer["text"] == "It's yours."
    await svc.emulator.wait_until(
        lambda: f"Taken by {winner}." in team.first_post(topic)["plain_text"], timeout=10)
    claims = [line for line in await lines_of(svc, conversation.id) if line.kind == "claimed"]
    assert len(claims) == 1 and claims[0].agent_id == owner
    # the other one writes in the topic: told who holds it, the member hears nothing
    loser = "Lena" if winner == "Tom" else "Tom"
    before = len(svc.emulator.sent_messages(chat))
    await team.write(loser, topic.thread_id, "Can I help?")
    await team.wait_post(topic.thread_id, f"{winner} holds this conversation.")
    assert len(svc.emulator.sent_messages(chat)) == before


async def test_a_burst_of_100_member_messages_under_the_group_limit(svc) -> None:
    team = await connect(svc)
    await team.agent("Lena")
    member, chat = await linked_member(svc, language="en")
    conversation = await ask_for_person(svc, chat, member.id)
    topic = await team.topic_of(conversation.id)
    for n in range(100):
        await svc.emulator.send_text(chat, f"line {n:03}")

    def mirrored() -> list[str]:
        return [line for post in team.posts(topic.thread_id) for line in post.split("\n")
                if line.startswith("Anna: line")]

    # the clock moves 3 s at a time: Telegram's group budget gives one post each
    await eventually(lambda: len(mirrored()) == 100, "all 100 lines in the topic",
                     clock=svc.clock, tick=3, timeout=90)
    assert mirrored() == [f"Anna: line {n:03}" for n in range(100)]  # all, in order
    posts = [p for p in team.posts(topic.thread_id) if "Anna: line" in p]
    assert len(posts) < 100  # bursts were batched
    assert svc.emulator.bans.violations == 0


async def test_topics_deleted_or_closed_by_hand_come_back(svc) -> None:
    team = await connect(svc)
    await team.agent("Lena")
    member, chat = await linked_member(svc, language="en")
    conversation = await ask_for_person(svc, chat, member.id)
    topic = await team.topic_of(conversation.id)

    svc.emulator.close_topic(team.group_id, topic.thread_id, by=team.owner)
    await svc.emulator.send_text(chat, "Still there?")
    await team.wait_post(topic.thread_id, "Anna: Still there?")
    assert not team.topics()[0]["closed"]

    svc.emulator.delete_topic(team.group_id, topic.thread_id, by=team.owner)
    await svc.emulator.send_text(chat, "Hello?")
    await svc.emulator.wait_until(lambda: len(team.topics()) == 1, timeout=10)
    new_thread = team.topics()[0]["message_thread_id"]
    assert new_thread != topic.thread_id
    await team.wait_post(new_thread, "Anna: Hello?")
    assert "Anna needs a person." in team.posts(new_thread)[0]
    await team.write("Lena", new_thread, "Yes, here I am.")
    await svc.emulator.wait_until(lambda: svc.emulator.sent_messages(chat)[-1]["plain_text"]
                                  == "Yes, here I am.", timeout=10)

    # Telegram says 429: the poster waits retry_after (on the clock) and goes on
    svc.emulator.inject_faults(method="sendMessage", status=429, retry_after=5)
    await svc.emulator.send_text(chat, "After the flood wait")
    await eventually(lambda: any("After the flood wait" in p for p in team.posts(new_thread)),
                     "the post after a 429", clock=svc.clock, tick=1)
    assert svc.emulator.bans.violations == 0


async def test_an_agent_links_telegram_from_the_console(svc) -> None:
    import re

    async with svc.sessionmaker() as db, db.begin():
        await add_agent(db, email="lena@example.org", name="Lena", role="agent",
                        password=PASSWORD, now=svc.clock.now(), language="en")
    user = svc.emulator.create_user("Lena", language_code="en")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        browser = await console(svc, http, "lena@example.org")
        async with http.post(svc.base_url + "/console/telegram-link",
                             data={"csrf_token": browser.csrf}) as response:
            page = await response.text()
        command = re.search(r"<code>/start (agent-[A-Za-z0-9_-]+)</code>", page).group(1)
        assert "https://t.me/payrescue_demo_bot?start=" not in page  # no username configured
        await svc.emulator.start(user["id"], command)
        answer = (await svc.emulator.wait_for_messages(user["id"], 1))[-1]["plain_text"]
        assert answer.startswith("Hello Lena, your Telegram account is linked.")
        async with http.get(svc.base_url + "/console/password") as response:
            assert "Your Telegram account is linked" in await response.text()
        await svc.emulator.start(user["id"], command)  # once only
        answer = (await svc.emulator.wait_for_messages(user["id"], 2))[-1]["plain_text"]
        assert answer == "This link has already been used. Please open a new one in the console."


async def test_the_demo_has_a_team_group_to_answer_from(svc) -> None:
    from payrescue.demo import ADMIN_EMAIL, bind_team_group, demo_team_group

    async with svc.sessionmaker() as db, db.begin():
        await add_agent(db, email=ADMIN_EMAIL, name="Demo Admin", role="admin",
                        password=PASSWORD, now=svc.clock.now(), language="en")
    group_id, owner = demo_team_group(svc.emulator)
    assert demo_team_group(svc.emulator) == (group_id, owner)  # once, then kept
    async with svc.sessionmaker() as db, db.begin():
        await bind_team_group(db, group_id, owner, svc.clock)
    async with svc.sessionmaker() as db, db.begin():
        await bind_team_group(db, group_id, owner, svc.clock)  # a restart changes nothing
    # the demo binds before the service starts; bound while it runs, it is told as
    # /connect_team tells it
    await svc.app[BUS].publish(Event(teamgroup.CONNECTED, {}))
    member, chat = await linked_member(svc, language="en")
    conversation = await ask_for_person(svc, chat, member.id)
    team = Team(svc, group_id, owner)
    team.telegram["Demo Admin"] = owner
    topic = await team.topic_of(conversation.id)
    await team.press("Demo Admin", topic, "team:claim:")
    await team.write("Demo Admin", topic.thread_id, "Hello from Telegram")
    await svc.emulator.wait_until(lambda: svc.emulator.sent_messages(chat)[-1]["plain_text"]
                                  == "Hello from Telegram", timeout=10)
    async with aiohttp.ClientSession() as http, http.get(svc.emulator_url + "/team") as page:
        assert page.status == 200 and "script-src 'self'" in page.headers[
            "Content-Security-Policy"]
        assert '<script src="/chat/static/team.js">' in await page.text()


async def test_back_to_the_bot_from_the_console_closes_the_topic(svc) -> None:
    team = await connect(svc)
    await team.agent("Lena")
    member, chat = await linked_member(svc, language="en")
    conversation = await ask_for_person(svc, chat, member.id)
    topic = await team.topic_of(conversation.id)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        lena = await console(svc, http, "lena@example.org")
        assert (await lena.post(f"/console/conversations/{conversation.id}/claim")).status == 200
        await svc.emulator.wait_until(
            lambda: "Taken by Lena." in team.first_post(topic)["plain_text"], timeout=10)
        back = await lena.post(f"/console/conversations/{conversation.id}/hand-back")
        assert back.status == 200
    await svc.emulator.wait_until(lambda: team.topics()[0]["closed"], timeout=10)
    assert "Back with the bot." in team.first_post(topic)["plain_text"]
    assert team.first_post(topic)["reply_markup"] is None
