"""Nothing lost from view: every conversation (the bot's too) is listed, full-text search
finds members and lines on both databases, and a result opens at its line."""

from __future__ import annotations

import re

from payrescue import timeline
from payrescue.db.models import Conversation
from tests.handoff.conftest import log_in


async def _say(world, conversation_id: int, text: str, sender: str = "member") -> int:  # noqa: ANN001
    async with world.sessionmaker() as db, db.begin():
        conversation = await db.get(Conversation, conversation_id)
        line = timeline.entry(conversation.member_id, sender, "text", world.clock.now(),
                              text=text, conversation_id=conversation_id)
        db.add(line)
        await db.flush()
        return line.id


async def test_search_finds_words_in_either_language_and_opens_at_the_line(make_client, world):
    await world.agent()
    paypal = await world.conversation(name="Jonas Weber", chat_id=11, status="bot")
    other = await world.conversation(name="Mia Muster", chat_id=12)
    line_id = await _say(world, paypal, "Kann ich mit PayPal zahlen?")
    await _say(world, other, "My cards were declined twice")
    await _say(world, other, "Hallo, wie geht es?", sender="bot")
    client = await make_client()
    await log_in(client)

    page = await (await client.get("/console/search", params={"q": "paypal"})).text()
    found = re.search(r'<ul class="plain" id="found-lines">(.*?)</ul>', page, re.S).group(1)
    assert "Kann ich mit PayPal zahlen?" in found and "declined" not in found
    assert f"?around={line_id}#line-{line_id}" in found
    # stemming: "zahlt" and "zahlen" share a stem in German; "card" finds "cards"
    for words, expected in (("Zahlen paypal", "PayPal"), ("card", "declined")):
        page = await (await client.get("/console/search", params={"q": words})).text()
        assert expected in page, words
    page = await (await client.get("/console/search", params={"q": "weber"})).text()
    assert "Jonas Weber" in re.search(r'id="found-members">(.*?)</ul>', page, re.S).group(1)
    # nonsense and FTS syntax are plain words, never an error
    for nonsense in ('"unclosed', "NEAR(a b", "*", "a OR", "%_"):
        assert (await client.get("/console/search", params={"q": nonsense})).status == 200

    member_id = await _member_of(world, paypal)
    page = await (await client.get(f"/console/members/{member_id}",
                                   params={"around": line_id})).text()
    assert f'id="line-{line_id}"' in page and "Jonas Weber" in page
    assert f'href="/console/conversations/{paypal}"' in page


async def test_conversations_with_the_bot_are_listed(make_client, world):
    await world.agent()
    with_bot = await world.conversation(name="Lea Bot", chat_id=21, status="bot")
    waiting = await world.conversation(name="Tom Wait", chat_id=22)
    client = await make_client()
    await log_in(client)
    page = await (await client.get("/console/queue", params={"view": "bot"})).text()
    assert "Lea Bot" in page and "Tom Wait" not in page
    page = await (await client.get("/console/queue", params={"view": "all"})).text()
    assert "Lea Bot" in page and "Tom Wait" in page
    page = await (await client.get("/console/queue",
                                   params={"view": "all", "q": "lea"})).text()
    assert f"/console/conversations/{with_bot}" in page
    assert f"/console/conversations/{waiting}" not in page


async def _member_of(world, conversation_id: int) -> int:  # noqa: ANN001
    async with world.sessionmaker() as db:
        return (await db.get(Conversation, conversation_id)).member_id


async def test_an_old_line_is_found_behind_many_newer_ones(world, session, monkeypatch):
    from payrescue.db import search as db_search
    from payrescue.search import search

    monkeypatch.setattr(db_search, "WINDOWS", (2, 5, None))  # tiny windows, same rule
    conversation_id = await world.conversation(chat_id=41)
    old = await _say(world, conversation_id, "Lastschrift zurückgegeben")
    for n in range(8):
        await _say(world, conversation_id, f"neuere Zeile {n}")
    found = await search(session, "Lastschrift")
    assert [line.id for line, _name in found.lines] == [old]
    found = await search(session, "Zeile", limit=3)  # newest first, the first window enough
    assert len(found.lines) == 3 and found.lines[0][0].id > found.lines[-1][0].id


async def test_the_member_page_says_whether_email_reaches_the_member(make_client, world):
    """A member whose address is no address (from an import or a payment event) is kept,
    and the console says e-mail does not reach them."""
    from payrescue.db.models import Member

    await world.agent()
    kai = await world.conversation(name="Kai Kaputt", chat_id=13, email="kai at example")
    mia = await world.conversation(name="Mia Muster", chat_id=14)
    kai_id, mia_id = await _member_of(world, kai), await _member_of(world, mia)
    async with world.sessionmaker() as db, db.begin():
        (await db.get(Member, kai_id)).email_problem = "invalid"
    client = await make_client()
    await log_in(client)
    for member_id, reach in ((kai_id, "no – not a valid address"), (mia_id, "<dd>yes</dd>")):
        page = await (await client.get(f"/console/members/{member_id}")).text()
        assert re.search(r"Reachable by e-mail</dt>\s*<dd>", page)
        assert reach in page
    page = await (await client.get(f"/console/conversations/{kai}")).text()
    assert "no – not a valid address" in page
