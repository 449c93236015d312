"""The expired-link answers offer a working way to a fresh link: the /u/ expired page's
button sends one on the member's channel (here e-mail), and /start newlink in the bot
gives a linked member one at once."""

from __future__ import annotations

import re

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from payrescue.clock import FakeClock
from tests.conversations.helpers import linked_member, open_case
from tests.harness import BOT_USERNAME, running_service
from tests.mail.smtp import Mailbox, smtp_settings

DAY = 86400
LINK = re.compile(r"http://127\.0\.0\.1:\d+/u/[\w-]+")


async def test_expired_page_sends_a_fresh_link_by_email_once_a_day(
    engine: AsyncEngine, clock: FakeClock, tmp_path, mailbox: Mailbox  # noqa: ANN001
) -> None:
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               bot_username=BOT_USERNAME, update_link_days=1,
                               **smtp_settings(mailbox)) as svc:
        member = await svc.add_member(name="Mia Muster", language="de")
        await open_case(svc, member)
        [first] = await mailbox.wait_for("mia.muster@example.org")
        old = LINK.search(first.get_body(("plain",)).get_content()).group()  # type: ignore[union-attr]
        await clock.advance(DAY + 60)
        async with aiohttp.ClientSession(headers={"Accept-Language": "de"}) as browser:
            async with browser.get(old) as page:
                assert page.status == 410
                html = await page.text()
                assert "Schicken Sie mir einen neuen Link" in html
                assert f'action="{old[old.index("/u/"):]}/renew"' in html
            for _ in range(2):  # a second press the same day sends nothing more
                async with browser.post(old + "/renew") as done:
                    assert done.status == 200
                    assert "Ein neuer Link ist auf dem Weg in Ihr E-Mail-Postfach." in (
                        await done.text())
            [_, second] = await mailbox.wait_for("mia.muster@example.org", 2)
            fresh = LINK.search(second.get_body(("plain",)).get_content()).group()  # type: ignore[union-attr]
            assert fresh != old
            async with browser.get(fresh, allow_redirects=False) as page:
                assert page.status != 410
            async with browser.post(old[:-2] + "xx/renew") as forged:
                assert forged.status == 404
        assert len(mailbox.messages) == 2


async def test_start_newlink_gives_a_linked_member_a_fresh_link(service) -> None:  # noqa: ANN001
    member, chat = await linked_member(service, language="de")
    await open_case(service, member)
    before = len(await service.emulator.wait_for_messages(chat, 2))
    await service.emulator.send_text(chat, "/start newlink")
    answer = (await service.emulator.wait_for_messages(chat, before + 1))[-1]["plain_text"]
    assert LINK.search(answer), answer
    stranger = service.create_user("Otto", language_code="de")
    await service.emulator.send_text(stranger["id"], "/start newlink")
    [reply] = await service.emulator.wait_for_messages(stranger["id"], 1)
    assert "E-Mail" in reply["plain_text"] and "nicht" not in reply["plain_text"][:20]
