"""Member media is streamed through the console after a log-in check, from the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.emulator import TelegramEmulator, start_emulator
from payrescue.app import init_app
from payrescue.config import Settings
from payrescue.db.models import Conversation, Message
from tests.handoff.conftest import log_in

TOKEN = "123456:CONSOLE-test"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _with_bot_api(settings: Settings, url: str) -> Settings:
    return Settings(**(settings.model_dump() | {"bot_token": TOKEN, "telegram_api_base": url}))


@pytest.fixture
async def telegram() -> AsyncIterator[tuple[TelegramEmulator, str]]:
    emulator = TelegramEmulator()
    emulator.add_bot(token=TOKEN, username="payrescue_test_bot")
    runner, url = await start_emulator(emulator)
    try:
        yield emulator, url
    finally:
        await runner.cleanup()


async def test_a_member_photo_and_document_stream_through_the_server(
        aiohttp_client, settings, clock, bus, engine, world, telegram):
    emulator, url = telegram
    member = emulator.create_user(first_name="Mia")
    photo = await emulator.send_photo(member["id"], PNG)
    page = b"<html><script>alert(1)</script></html>"
    document = await emulator.send_document(member["id"], page, "card.html", "text/html")
    await world.agent()
    conversation_id = await world.conversation(chat_id=member["id"])
    async with world.sessionmaker() as db, db.begin():
        member_id = (await db.get(Conversation, conversation_id)).member_id
        rows = [Message(conversation_id=conversation_id, member_id=member_id, sender="member",
                        kind=kind,
                        file_id=view["media"]["file_id"], mime_type=mime, file_name=name,
                        created_at=clock.now())
                for kind, view, mime, name in (("photo", photo, None, None),
                                               ("document", document, "text/html",
                                                "card.html"))]
        db.add_all(rows)
    app = init_app(_with_bot_api(settings, url), clock=clock, bus=bus, engine=engine,
                   with_bot=False)
    client = await aiohttp_client(app)
    assert (await client.get(f"/console/media/{rows[0].id}",
                             allow_redirects=False)).status == 303  # no session, no file
    await log_in(client)
    response = await client.get(f"/console/media/{rows[0].id}")
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert await response.read() == PNG
    response = await client.get(f"/console/media/{rows[1].id}")
    assert response.headers["Content-Disposition"] == "attachment"  # never rendered here
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert await response.read() == page
    assert (await client.get("/console/media/999")).status == 404


async def test_an_unknown_file_is_reported_not_swallowed(
        aiohttp_client, settings, clock, bus, engine, world, telegram):
    _emulator, url = telegram
    await world.agent()
    conversation_id = await world.conversation()
    async with world.sessionmaker() as db, db.begin():
        member_id = (await db.get(Conversation, conversation_id)).member_id
        message = Message(conversation_id=conversation_id, member_id=member_id,
                          sender="member", kind="photo",
                          file_id="gone", created_at=clock.now())
        db.add(message)
    app = init_app(_with_bot_api(settings, url), clock=clock, bus=bus, engine=engine,
                   with_bot=False)
    client = await aiohttp_client(app)
    await log_in(client)
    response = await client.get(f"/console/media/{message.id}")
    assert response.status == 502
    assert TOKEN not in await response.text()


async def test_a_photo_says_who_sent_it(aiohttp_client, settings, clock, bus, engine, world):
    """The member's photo and one an agent sent (from the team group) are told apart, for a
    screen reader too."""
    await world.agent()
    conversation_id = await world.conversation()
    async with world.sessionmaker() as db, db.begin():
        member_id = (await db.get(Conversation, conversation_id)).member_id
        db.add_all([Message(conversation_id=conversation_id, member_id=member_id,
                            sender=sender, kind="photo", file_id=f"photo-{sender}",
                            created_at=clock.now()) for sender in ("member", "agent")])
    client = await aiohttp_client(init_app(settings, clock=clock, bus=bus, engine=engine,
                                           with_bot=False))
    await log_in(client)
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert page.count('alt="Photo from the member"') == 1
    assert page.count('alt="Photo from the team"') == 1
