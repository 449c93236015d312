"""The way into Telegram: `payrescue members invite` queues invitation e-mails (never twice
within 30 days, resumable), and the e-mail's button opens the member's /connect page with
the deep link and its QR code."""

from __future__ import annotations

import asyncio
import re
import shutil

import aiohttp
from sqlalchemy import select

from payrescue.cli import main
from payrescue.db import create_engine, create_sessionmaker
from payrescue.db.models import Member, Outbox, TelegramLink
from payrescue.invitations import invite
from tests.conftest import TEST_SECRET
from tests.harness import RunningService
from tests.mail.smtp import Mailbox


def _members_and_rows(url: str) -> tuple[list[Member], list[Outbox]]:
    async def read() -> tuple[list[Member], list[Outbox]]:
        engine = create_engine(url)
        try:
            async with create_sessionmaker(engine)() as session:
                return (list(await session.scalars(select(Member).order_by(Member.id))),
                        list(await session.scalars(select(Outbox).order_by(Outbox.id))))
        finally:
            await engine.dispose()
    return asyncio.run(read())


def test_cli_invites_unlinked_members_once(tmp_path, capsys, sqlite_template) -> None:  # noqa: ANN001
    database = tmp_path / "cli.sqlite3"
    shutil.copy(sqlite_template, database)
    url = f"sqlite+aiosqlite:///{database}"
    config = tmp_path / "payrescue.toml"
    config.write_text(f'database_url = "{url}"\nsecret_key = "{TEST_SECRET}"\n'
                      f'data_dir = "{tmp_path}"\nsmtp_host = "127.0.0.1"\n'
                      'smtp_from = "club@example.org"\nbot_username = "payrescue_demo_bot"\n')
    source = tmp_path / "members.csv"
    source.write_text("email,name,language\nanna@example.org,Anna,de\nbob@example.org,Bob,en\n"
                      "cleo@example.org,Cleo,de\n", encoding="utf-8")
    assert main(["--config", str(config), "members", "import", str(source)]) == 0
    capsys.readouterr()

    async def link_cleo() -> None:
        engine = create_engine(url)
        async with create_sessionmaker(engine)() as session, session.begin():
            cleo = await session.scalar(select(Member).where(Member.email == "cleo@example.org"))
            session.add(TelegramLink(member_id=cleo.id, chat_id=77, telegram_user_id=77,
                                     linked_at=cleo.created_at))
        await engine.dispose()
    asyncio.run(link_cleo())
    capsys.readouterr()

    assert main(["--config", str(config), "members", "invite", "--all-unlinked",
                 "--dry-run"]) == 0
    assert "2 members would be invited" in capsys.readouterr().out
    assert _members_and_rows(url)[1] == []
    assert main(["--config", str(config), "members", "invite", "--all-unlinked"]) == 0
    out = capsys.readouterr()
    assert "2 invitations queued" in out.out and "2/2 (100%)" in out.err
    assert main(["--config", str(config), "members", "invite", "--all-unlinked"]) == 0
    assert "0 invitations queued" in capsys.readouterr().out  # not twice within 30 days
    members, rows = _members_and_rows(url)
    assert [(r.channel, r.kind, r.member_id) for r in rows] == [
        ("email", "invite", members[0].id), ("email", "invite", members[1].id)]
    assert rows[0].payload["subject"] == "Erinnerungen und Hilfe direkt im Telegram-Chat"


async def test_invitation_leads_to_the_connect_page(mail_service: RunningService,
                                                   mailbox: Mailbox) -> None:
    svc = mail_service
    member = await svc.add_member(name="Mia Muster", language="de")
    async with svc.sessionmaker() as session:
        stored = await session.get(Member, member.id)
        assert stored is not None
        await invite(session, svc.settings, stored, svc.clock.now())
        await session.commit()
    [message] = await mailbox.wait_for("mia.muster@example.org")
    text = message.get_body(("plain",)).get_content()
    connect = re.search(r"Telegram verbinden:\r?\n(http://127\.0\.0\.1:\d+/connect/[\w-]+)", text)
    assert connect, text
    async with aiohttp.ClientSession() as browser:
        async with browser.get(connect.group(1)) as page:
            html = await page.text()
            assert page.status == 200
            assert "Erinnerungen und Hilfe direkt im Chat." in html
            assert "<svg" in html and "<script" not in html
            deep_link = re.search(r'https://t\.me/payrescue_demo_bot\?start=([\w-]+)', html)
            assert deep_link
        user = svc.create_user("Mia", language_code="de")
        await svc.emulator.send_text(user["id"], f"/start {deep_link.group(1)}")
        await svc.emulator.wait_for_messages(user["id"], 1)
        async with browser.get(connect.group(1)) as page:
            assert "bereits mit Ihrer Mitgliedschaft verbunden" in await page.text()
        async with browser.get(connect.group(1)[:-3] + "abc") as page:
            assert page.status == 404


def test_cli_import_can_invite_the_imported_members(tmp_path, capsys,  # noqa: ANN001
                                                   sqlite_template) -> None:
    database = tmp_path / "cli.sqlite3"
    shutil.copy(sqlite_template, database)
    url = f"sqlite+aiosqlite:///{database}"
    config = tmp_path / "payrescue.toml"
    config.write_text(f'database_url = "{url}"\nsecret_key = "{TEST_SECRET}"\n'
                      f'data_dir = "{tmp_path}"\nsmtp_host = "127.0.0.1"\n'
                      'smtp_from = "club@example.org"\n')
    source = tmp_path / "members.csv"
    source.write_text("email,name\nanna@example.org,Anna\nbroken,Nobody\n", encoding="utf-8")
    assert main(["--config", str(config), "members", "import", str(source), "--invite"]) == 1
    out = capsys.readouterr().out
    # "broken" is kept, not reachable by e-mail: nobody to invite there
    assert "1 imported without a usable e-mail address" in out
    assert "1 invitations queued" in out
    members, rows = _members_and_rows(url)
    assert [m.email for m in members] == ["anna@example.org", "broken"]
    assert [(r.kind, r.member_id) for r in rows] == [("invite", members[0].id)]
