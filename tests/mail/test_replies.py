"""Members' replies by e-mail reach a person, and the person's answer goes back by e-mail in
the same thread: through PayRescue's own SMTP receiver (a real aiosmtplib client sends to
it) and the signed HTTP endpoint; strangers and forged threads are dropped."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiohttp
import aiosmtplib
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from mail.inbound import signature
from payrescue import agents
from payrescue.clock import FakeClock
from payrescue.db.models import Conversation, Member, Message
from tests.conversations.helpers import open_case, wait_for_rows
from tests.harness import BOT_USERNAME, RunningService, running_service
from tests.mail.smtp import Mailbox, free_port, smtp_settings

REPLY_TO = "antwort@example.org"
INBOUND_SECRET = "inbound-secret-for-tests"
PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture(autouse=True)
def quick_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024,
                                                          parallelism=1))


@pytest.fixture
async def svc(engine: AsyncEngine, clock: FakeClock, tmp_path,  # noqa: ANN001
              mailbox: Mailbox) -> AsyncIterator[RunningService]:
    port = free_port()
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               bot_username=BOT_USERNAME, smtp_inbound_port=port,
                               mail_inbound_secret=INBOUND_SECRET,
                               **smtp_settings(mailbox)) as service:
        service.inbound_port = port  # type: ignore[attr-defined]
        yield service


def reply(to: EmailMessage, text: str, *, sender: str = "mia.muster@example.org",
          in_reply_to: str | None = None, attachment: bytes | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Mia <{sender}>"
    message["To"] = REPLY_TO
    message["Subject"] = "Re: " + str(to["Subject"])
    message["Message-ID"] = "<reply-1@mail.example.org>"
    message["In-Reply-To"] = in_reply_to or to["Message-ID"]
    message["References"] = in_reply_to or to["Message-ID"]
    quoted = "\n".join("> " + line for line in
                       to.get_body(("plain",)).get_content().splitlines())
    message.set_content(f"{text}\n\nAm 5. Januar 2026 schrieb Beispiel Club:\n{quoted}\n")
    message.add_alternative(f"<p>{text}</p><blockquote>{quoted}</blockquote>", subtype="html")
    if attachment:
        message.add_attachment(attachment, maintype="image", subtype="png",
                               filename="kontoauszug.png")
    return message


async def send_reply(svc: RunningService, message: EmailMessage) -> None:
    await aiosmtplib.send(message, hostname="127.0.0.1",
                          port=svc.inbound_port, start_tls=False)  # type: ignore[attr-defined]


async def member_lines(svc: RunningService, member: Member) -> list[Message]:
    """What the member wrote, in order (the timeline also holds what happened around it)."""
    async with svc.sessionmaker() as session:
        return list(await session.scalars(
            select(Message).where(Message.member_id == member.id, Message.sender == "member")
            .order_by(Message.id)))


async def console(svc: RunningService, role: str = "agent") -> tuple[aiohttp.ClientSession, str]:
    async with svc.sessionmaker() as session, session.begin():
        await agents.add_agent(session, email="agent@example.org", name="Ada",
                               password=PASSWORD, now=svc.clock.now(), role=role)
    browser = aiohttp.ClientSession(svc.base_url, cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with browser.get("/console/login") as page:
        token = CSRF.search(await page.text()).group(1)  # type: ignore[union-attr]
    async with browser.post("/console/login", data={
            "email": "agent@example.org", "password": PASSWORD, "csrf_token": token},
            allow_redirects=False) as response:
        assert response.status == 303
    async with browser.get("/console/queue") as page:
        token = CSRF.search(await page.text()).group(1)  # type: ignore[union-attr]
    return browser, token


async def test_reply_reaches_the_console_and_the_answer_returns_in_the_thread(
    svc: RunningService, mailbox: Mailbox
) -> None:
    member = await svc.add_member(name="Mia Muster", language="de")
    await open_case(svc, member)
    [notice] = await mailbox.wait_for("mia.muster@example.org")

    await send_reply(svc, reply(notice, "Ich habe meinen Job verloren, kann ich pausieren?",
                                attachment=PNG))
    async with svc.sessionmaker() as session:
        conversation = await session.scalar(select(Conversation).where(
            Conversation.member_id == member.id))
    assert conversation is not None
    assert conversation.status == "waiting"
    assert conversation.handoff_reasons == ["wrote_by_email"]
    [line, file] = await member_lines(svc, member)
    assert line.kind == "email"
    assert line.text == "Ich habe meinen Job verloren, kann ich pausieren?"  # no quoted history
    assert file.file_name == "kontoauszug.png" and file.mime_type == "image/png"

    browser, token = await console(svc)
    async with browser:
        base = f"/console/conversations/{conversation.id}"
        async with browser.get(base) as page:
            html = await page.text()
            assert "Ich habe meinen Job verloren" in html and "by e-mail" in html
        async with browser.get(f"/console/media/{file.id}") as media:
            assert media.status == 200 and await media.read() == PNG
        async with browser.post(base + "/claim", data={"csrf_token": token}) as response:
            assert response.status == 200
        async with browser.post(base + "/reply", data={
                "csrf_token": token, "text": "Ja, das geht <gern>: wir pausieren."}) as response:
            assert response.status == 200
    [_, answer] = await mailbox.wait_for("mia.muster@example.org", 2)
    assert answer["In-Reply-To"] == "<reply-1@mail.example.org>"
    assert answer["References"] == "<reply-1@mail.example.org>"
    assert answer["Auto-Submitted"] == "no"
    assert "Ja, das geht <gern>: wir pausieren." in answer.get_body(("plain",)).get_content()
    assert "&lt;gern&gt;" in answer.get_body(("html",)).get_content()
    rows = await wait_for_rows(svc, 1, kind="agent_reply", status="sent")
    assert rows[0].channel == "email"


async def test_forged_thread_and_unknown_sender_are_dropped(svc: RunningService,
                                                           mailbox: Mailbox) -> None:
    mia = await svc.add_member(name="Mia Muster", language="de")
    eve = await svc.add_member(name="Eve Evil", language="de")
    await open_case(svc, mia)
    [notice] = await mailbox.wait_for("mia.muster@example.org")
    # Eve answers Mia's thread from her own address
    await send_reply(svc, reply(notice, "Bitte Konto auf mich umschreiben",
                                sender="eve.evil@example.org"))
    # a stranger, and a made-up id that looks like ours
    await send_reply(svc, reply(notice, "Hallo", sender="stranger@example.net"))
    await send_reply(svc, reply(notice, "Hallo", sender="eve.evil@example.org",
                                in_reply_to="<pr.1.0000000000000000@example.org>"))
    assert await member_lines(svc, mia) == []
    lines = await member_lines(svc, eve)
    assert [line.text for line in lines] == ["Hallo"]  # her own, not in Mia's thread
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):  # only the reply address
        message = reply(notice, "x")
        del message["To"]
        message["To"] = "someone@example.org"
        await send_reply(svc, message)
    assert len(mailbox.messages) == 1  # nobody was answered


async def test_signed_http_endpoint_takes_the_raw_message(svc: RunningService,
                                                         mailbox: Mailbox) -> None:
    member = await svc.add_member(name="Mia Muster", language="de")
    await open_case(svc, member)
    [notice] = await mailbox.wait_for("mia.muster@example.org")
    body = bytes(reply(notice, "Über die Webhook-Strecke"))
    async with aiohttp.ClientSession(svc.base_url) as client:
        async with client.post("/mail/inbound", data=body, headers={
                "X-PayRescue-Signature": "0" * 64}) as response:
            assert response.status == 401
        async with client.post("/mail/inbound", data=b"\x00garbage", headers={
                "X-PayRescue-Signature": signature(INBOUND_SECRET.encode(), b"\x00garbage")
                }) as response:
            assert response.status == 400
        async with client.post("/mail/inbound", data=body, headers={
                "X-PayRescue-Signature": signature(INBOUND_SECRET.encode(), body)}) as response:
            assert response.status == 200
    [line] = await member_lines(svc, member)
    assert line.text == "Über die Webhook-Strecke"


async def test_console_shows_a_refused_address_and_refuses_an_answer_by_email(
    svc: RunningService, mailbox: Mailbox
) -> None:
    mailbox.refuse["mia.muster@example.org"] = ["550 5.1.1 No such user"] * 5
    member = await svc.add_member(name="Mia Muster", language="de")
    await open_case(svc, member)
    await wait_for_rows(svc, 1, channel="email", status="failed")
    notice = EmailMessage()
    notice["Subject"], notice["Message-ID"] = "x", "<elsewhere@example.org>"
    notice.set_content("x")
    await send_reply(svc, reply(notice, "Kommt meine Mail an?"))
    async with svc.sessionmaker() as session:
        conversation = await session.scalar(select(Conversation.id).where(
            Conversation.member_id == member.id))
    browser, token = await console(svc)
    async with browser:
        base = f"/console/conversations/{conversation}"
        async with browser.get(base) as page:
            assert "the mail server refused the address" in await page.text()
        async with browser.post(base + "/claim", data={"csrf_token": token}):
            pass
        async with browser.post(base + "/reply", data={"csrf_token": token, "text": "Hallo"},
                                headers={"Accept": "application/json"}) as response:
            assert response.status == 409
    assert mailbox.messages == []


async def test_answer_goes_by_telegram_once_the_member_linked(svc: RunningService,
                                                              mailbox: Mailbox) -> None:
    member = await svc.add_member(name="Mia Muster", language="de")
    await open_case(svc, member)
    [notice] = await mailbox.wait_for("mia.muster@example.org")
    await send_reply(svc, reply(notice, "Ich schreibe lieber im Chat."))
    user = svc.create_user("Mia", language_code="de")
    await svc.link(member, user)
    async with svc.sessionmaker() as session:
        conversation = await session.scalar(select(Conversation.id).where(
            Conversation.member_id == member.id))
    browser, token = await console(svc)
    async with browser:
        base = f"/console/conversations/{conversation}"
        async with browser.post(base + "/claim", data={"csrf_token": token}):
            pass
        async with browser.post(base + "/reply", data={"csrf_token": token,
                                                      "text": "Gern, hier im Chat!"}) as response:
            assert response.status == 200
    messages = await svc.emulator.wait_for_messages(user["id"], 2)
    assert messages[-1]["plain_text"] == "Gern, hier im Chat!"
    [row] = await wait_for_rows(svc, 1, kind="agent_reply", status="sent")
    assert row.channel == "telegram"
    assert len(mailbox.messages) == 1


async def test_oversized_and_malformed_inbound_mail_is_stored_nowhere(
    engine: AsyncEngine, clock: FakeClock, tmp_path, mailbox: Mailbox,  # noqa: ANN001
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    caplog.set_level(logging.INFO)
    port = free_port()
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               smtp_inbound_port=port, smtp_inbound_max_bytes=2048,
                               mail_inbound_secret=INBOUND_SECRET,
                               **smtp_settings(mailbox)) as svc:
        member = await svc.add_member(name="Mia Muster", language="de")
        big = EmailMessage()
        big["From"], big["To"], big["Subject"] = "mia.muster@example.org", REPLY_TO, "Gehalt"
        big.set_content("Mein Gehalt " * 500)
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await aiosmtplib.send(big, hostname="127.0.0.1", port=port, start_tls=False)
        assert refused.value.code == 552
        garbage = b"\\x00\\xff not a mail at all"
        async with aiohttp.ClientSession(svc.base_url) as client:
            async with client.post("/mail/inbound", data=bytes(big), headers={
                    "X-PayRescue-Signature": signature(INBOUND_SECRET.encode(),
                                                       bytes(big))}) as response:
                assert response.status == 413
            async with client.post("/mail/inbound", data=garbage, headers={
                    "X-PayRescue-Signature": signature(INBOUND_SECRET.encode(),
                                                       garbage)}) as response:
                assert response.status == 400
        assert await member_lines(svc, member) == []
    ours = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name != "mail.log"]
    assert not [line for line in ours if "mia.muster" in line or "Gehalt" in line]


async def test_erasing_the_member_deletes_the_files_they_sent_by_email(
    svc: RunningService, mailbox: Mailbox
) -> None:
    from tests.conversations.helpers import buttons
    from tests.conversations.test_handoff import say

    member = await svc.add_member(name="Mia Muster", language="de")
    await open_case(svc, member)
    [notice] = await mailbox.wait_for("mia.muster@example.org")
    await send_reply(svc, reply(notice, "Anbei mein Kontoauszug", attachment=PNG))
    [_line, file] = await member_lines(svc, member)
    [stored] = (svc.settings.data_dir / "mail-files").iterdir()
    assert stored.read_bytes() == PNG

    user = svc.create_user("Mia", language_code="de")  # later she links Telegram …
    await svc.link(member, user)
    messages = await say(svc, user["id"], "/delete")  # … and asks us to erase her data
    yes = buttons(messages[-1])[0]
    await svc.emulator.press_button(user["id"], messages[-1]["message_id"], yes["callback_data"])
    messages = await svc.emulator.wait_for_messages(user["id"], len(messages) + 1)
    assert "gelöscht" in messages[-1]["text"]
    assert not stored.exists()
    assert list((svc.settings.data_dir / "mail-files").iterdir()) == []
    browser, _token = await console(svc)
    async with browser, browser.get(f"/console/media/{file.id}") as media:
        assert media.status == 404
