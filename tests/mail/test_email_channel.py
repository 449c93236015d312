"""E-mail as the second channel, against a real SMTP server (aiosmtpd) in the test process:
which channel, the e-mails themselves, temporary and permanent failures, one-click
unsubscribe, and a crash while e-mails drain."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta
from email.message import EmailMessage
from html.parser import HTMLParser

import aiohttp
import pytest
from sqlalchemy import select

from mail.sender import MailSender, SmtpTransport
from payrescue import outbox
from payrescue.db.models import Member, UpdateLink
from payrescue.keys import BUS
from tests.conversations.helpers import advance, linked_member, open_case, set_case, wait_for_rows
from tests.harness import RunningService
from tests.mail.smtp import Mailbox

DAY = 86400


async def unlinked_member(svc: RunningService, name: str = "Mia Muster", *,
                          language: str = "de", email: str | None = None) -> Member:
    return await svc.add_member(name=name, language=language, email=email)


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.styled = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append(tag)
        self.styled += "style" in values
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "a":
            self.links.append(values.get("href") or "")


async def member_row(svc: RunningService, member: Member) -> Member:
    async with svc.sessionmaker() as session:
        stored = await session.get(Member, member.id)
        assert stored is not None
        return stored


async def test_member_without_telegram_gets_the_notice_by_email_in_german(
    mail_service: RunningService, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    svc = mail_service
    caplog.set_level(logging.INFO)
    member = await unlinked_member(svc)
    await open_case(svc, member, decline_category="expired_card")
    [message] = await mailbox.wait_for("mia.muster@example.org")
    [row] = await wait_for_rows(svc, 1, channel="email", status="sent")

    assert message["Subject"] == "Ihre Zahlung hat leider nicht geklappt"
    assert message["From"] == "Beispiel Club <club@example.org>"
    assert message["To"] == "Mia Muster <mia.muster@example.org>"
    assert message["Reply-To"] == "antwort@example.org"
    assert message["Message-ID"] == row.email_message_id
    assert message["Date"] is not None
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.fullmatch(r"<http://127\.0\.0\.1:\d+/mail/unsubscribe/[\w-]+>",
                        message["List-Unsubscribe"])

    text, html = parts(message)
    assert "Hallo Mia," in text
    assert "29,00\xa0€" in text and "Gold Club" in text
    assert "abgelaufen" in text  # the decline reason in plain words
    assert "Lieber im Chat klären? Schreiben Sie uns auf Telegram." in text
    assert "<b>" not in text  # Telegram's markup does not leak into the plain part
    update_url = re.search(r"http://127\.0\.0\.1:\d+/u/[\w-]+", text)
    deep_link = re.search(r"https://t\.me/payrescue_demo_bot\?start=[\w-]+", text)
    assert update_url and deep_link

    parsed = _Html()
    parsed.feed(html)
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert parsed.images == ["cid:telegram-qr"]  # the QR code travels with the e-mail
    assert update_url.group() in parsed.links and deep_link.group() in parsed.links
    assert parsed.styled > 5
    assert "Zahlungsdaten aktualisieren" in html
    [qr] = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert qr["Content-ID"] == "<telegram-qr>"
    assert qr.get_content().startswith(b"\x89PNG")

    # the button's link is the tracked update link of this case
    async with aiohttp.ClientSession() as client, \
            client.get(update_url.group(), allow_redirects=False) as response:
        assert response.status < 500
    async with svc.sessionmaker() as session:
        [link] = await session.scalars(select(UpdateLink))
        assert link.open_count == 1

    # (aiosmtpd, the test's mail server, logs under "mail.log": not ours)
    ours = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name != "mail.log"]
    assert not [line for line in ours if "mia.muster" in line or "Zahlung" in line]


async def test_the_button_asks_to_confirm_a_payment_that_needs_authentication(
    mail_service: RunningService, mailbox: Mailbox
) -> None:
    """The same words as the Telegram button (3-D Secure: confirm, not update), which the
    text names."""
    svc = mail_service
    member = await unlinked_member(svc)
    await open_case(svc, member, decline_category="authentication_required")
    [message] = await mailbox.wait_for("mia.muster@example.org")
    text, html = parts(message)
    assert "Zahlung bestätigen:\r\nhttp" in text
    assert "Zahlung bestätigen</a>" in html
    assert "Zahlungsdaten aktualisieren" not in text + html


async def test_linked_member_gets_telegram_and_never_both(mail_service: RunningService,
                                                          mailbox: Mailbox) -> None:
    svc = mail_service
    member, chat = await linked_member(svc, "Anna Schmidt", language="de")
    await open_case(svc, member)
    await svc.emulator.wait_for_messages(chat, 2)
    rows = await wait_for_rows(svc, 1, kind="reminder", status="sent")
    assert [r.channel for r in rows] == ["telegram"]
    assert mailbox.messages == []


async def test_also_first_sends_the_first_notice_by_email_as_well(
    engine, clock, tmp_path, mailbox: Mailbox  # noqa: ANN001
) -> None:
    from tests.harness import BOT_USERNAME, running_service
    from tests.mail.smtp import smtp_settings

    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               bot_username=BOT_USERNAME, email_policy="also_first",
                               **smtp_settings(mailbox)) as svc:
        member, chat = await linked_member(svc, "Anna Schmidt", language="de")
        case = await open_case(svc, member)
        [message] = await mailbox.wait_for("anna.schmidt@example.org")
        await svc.emulator.wait_for_messages(chat, 2)
        # a member on Telegram is not invited to Telegram again
        assert "t.me" not in parts(message)[0]
        await advance(svc, case, seconds=3 * DAY + 60)
        rows = await wait_for_rows(svc, 3, kind="reminder", status="sent")
        assert sorted((r.dunning_step, r.channel) for r in rows) == [
            (0, "email"), (0, "telegram"), (1, "telegram")]
        assert len(mailbox.messages) == 1


async def test_member_who_links_mid_case_continues_on_telegram(
    mail_service: RunningService, mailbox: Mailbox
) -> None:
    svc = mail_service
    member = await unlinked_member(svc)
    case = await open_case(svc, member)
    await mailbox.wait_for("mia.muster@example.org")
    user = svc.create_user("Mia", language_code="de")
    await svc.link(member, user)
    await advance(svc, case, seconds=3 * DAY + 60)
    rows = await wait_for_rows(svc, 2, kind="reminder", status="sent")
    assert [(r.dunning_step, r.channel) for r in rows] == [(0, "email"), (1, "telegram")]
    assert len(mailbox.messages) == 1


async def test_recovery_stops_reminders_and_thanks_by_email(
    mail_service: RunningService, mailbox: Mailbox
) -> None:
    svc = mail_service
    member = await unlinked_member(svc, "John Smith", language="en")
    case = await open_case(svc, member)
    [notice] = await mailbox.wait_for("john.smith@example.org")
    assert notice["Subject"] == "Your payment didn't go through"
    await set_case(svc, case, "recovered", status="recovered", recovered_at=svc.clock.now(),
                   recovered_amount_minor=2900)
    [_, thanks] = await mailbox.wait_for("john.smith@example.org", 2)
    assert thanks["Subject"] == "Thank you – your payment has arrived"
    text = parts(thanks)[0]
    assert "Thank you, John!" in text and "Your payment of €29.00 went through" in text
    await advance(svc, case, seconds=8 * DAY)
    await asyncio.sleep(0.3)
    assert len(mailbox.messages) == 2


async def test_permanent_rejection_marks_the_address_undeliverable(
    mail_service: RunningService, mailbox: Mailbox
) -> None:
    svc = mail_service
    mailbox.refuse["mia.muster@example.org"] = ["550 5.1.1 No such user"] * 5
    member = await unlinked_member(svc)
    case = await open_case(svc, member)
    [row] = await wait_for_rows(svc, 1, channel="email", status="failed")
    assert row.error == "address rejected 550"
    assert (await member_row(svc, member)).email_problem == "rejected"
    await advance(svc, case, seconds=3 * DAY + 60)
    assert len(await wait_for_rows(svc, 1, kind="reminder")) == 1  # nothing more queued
    assert mailbox.messages == []


async def test_invalid_address_is_kept_and_marked(mail_service: RunningService,
                                                  mailbox: Mailbox) -> None:
    svc = mail_service
    member = await unlinked_member(svc, "Kai Kaputt", email="kai at example")
    await open_case(svc, member)
    # (an address that came in this way, past the checks of imports and events)
    [row] = await wait_for_rows(svc, 1, channel="email", status="cancelled")
    assert (await member_row(svc, member)).email_problem == "invalid"
    assert row.error == "e-mail address undeliverable"
    assert mailbox.messages == []


async def test_temporary_failure_is_retried_after_a_pause(mail_service: RunningService,
                                                          mailbox: Mailbox) -> None:
    svc = mail_service
    mailbox.refuse["mia.muster@example.org"] = ["451 4.3.0 Try again later"]
    member = await unlinked_member(svc)
    await open_case(svc, member)
    async with svc.app[BUS].subscribe() as events, asyncio.timeout(10):
        while True:
            [row] = await wait_for_rows(svc, 1, channel="email")
            if row.status == "queued" and row.attempts == 1:
                break
            await events.get()
    assert row.not_before == svc.clock.now() + timedelta(seconds=60)
    assert row.error == "temporary: 451"
    await svc.clock.advance(61)
    await mailbox.wait_for("mia.muster@example.org")
    [row] = await wait_for_rows(svc, 1, channel="email", status="sent")
    assert row.attempts == 2
    assert (await member_row(svc, member)).email_problem is None


async def test_one_click_unsubscribe_is_the_same_opt_out_as_stop(
    mail_service: RunningService, mailbox: Mailbox
) -> None:
    svc = mail_service
    member = await unlinked_member(svc)
    case = await open_case(svc, member)
    [message] = await mailbox.wait_for("mia.muster@example.org")
    url = message["List-Unsubscribe"].strip("<>")
    one_click = {"List-Unsubscribe": "One-Click"}
    async with aiohttp.ClientSession() as client:
        async with client.get(url) as page:  # a link scanner opening it changes nothing
            assert page.status == 200 and "Erinnerungen" in await page.text()
        assert not (await member_row(svc, member)).opted_out
        async with client.post(url[:-3] + "abc", data=one_click) as forged:
            assert forged.status == 404
        assert not (await member_row(svc, member)).opted_out
        async with client.post(url, data=one_click) as done:
            assert done.status == 200
    assert (await member_row(svc, member)).opted_out
    await advance(svc, case, seconds=3 * DAY + 60)
    await asyncio.sleep(0.3)
    assert len(mailbox.messages) == 1


async def test_a_crash_while_emails_drain_loses_none(mail_service: RunningService,
                                                     mailbox: Mailbox) -> None:
    svc = mail_service
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "mail-sender"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    addresses = []
    async with svc.sessionmaker() as session:
        for n in range(12):
            member = Member(email=f"m{n}@example.org", name=f"M{n}", language="en",
                            created_at=svc.clock.now())
            session.add(member)
            await session.flush()
            await outbox.queue_message(
                session, member, "bot",
                {"subject": f"hello {n}", "body": "hello", "language": "en"},
                svc.clock.now(), channel=outbox.EMAIL, settings=svc.settings)
            addresses.append(member.email)
        await session.commit()

    class Dying(SmtpTransport):
        """Dies (like a kill -9: nothing recorded, nothing released) after 4 e-mails."""
        sent = 0

        async def send(self, sender: str, recipient: str, message: bytes) -> None:
            await super().send(sender, recipient, message)
            Dying.sent += 1
            if Dying.sent == 4:
                raise asyncio.CancelledError

    first = MailSender(Dying(svc.settings), svc.sessionmaker, svc.app[BUS], svc.clock,
                       svc.settings)
    await asyncio.gather(first.run(), return_exceptions=True)
    await mailbox.wait_for("m3@example.org")
    assert {r.status for r in await wait_for_rows(svc, 12)} == {"sent", "sending"}

    second = MailSender(SmtpTransport(svc.settings), svc.sessionmaker, svc.app[BUS],
                        svc.clock, svc.settings)
    running = asyncio.create_task(second.run())
    await svc.clock.advance(svc.settings.outbox_lease_seconds + 1)  # the dead run's lease
    try:
        rows = await wait_for_rows(svc, 12, status="sent", timeout=15)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert len(rows) == 12
    received = [a for _, rcpts in mailbox.envelopes for a in rcpts]
    assert set(received) == set(addresses)  # none lost …
    assert len(received) <= 13  # … and only the one in flight sent twice


async def test_reach_figures_count_channels_bounces_and_the_unreached(
    mail_service: RunningService, mailbox: Mailbox
) -> None:
    from datetime import datetime

    from payrescue.report_export import figure_rows
    from payrescue.reports import Period, compute

    svc = mail_service
    mailbox.refuse["kai.kaputt@example.org"] = ["550 5.1.1 No such user"] * 5
    mia = await unlinked_member(svc)
    kai = await unlinked_member(svc, "Kai Kaputt")
    anna, _chat = await linked_member(svc, "Anna Schmidt", language="de")
    for member in (mia, kai, anna):
        await open_case(svc, member)
    await wait_for_rows(svc, 2, kind="reminder", status="sent")
    await wait_for_rows(svc, 1, kind="reminder", status="failed")
    period = Period.last_days(7, svc.clock.now(), svc.settings.zone)
    async with svc.sessionmaker() as session:
        on = await compute(session, period, svc.settings.hours, "de", email_enabled=True)
        off = await compute(session, period, svc.settings.hours, "de", email_enabled=False)
    reach = on.reach
    assert (reach.members, reach.linked, reach.unreached) == (3, 1, 1)  # Kai: dead address
    assert reach.reached_by_channel == {"email": 1, "telegram": 1}
    assert (reach.emails_sent, reach.emails_bounced) == (1, 1)
    assert reach.by_first_channel == {"email": (2, 0), "telegram": (1, 0)}
    assert off.reach.unreached == 2  # without e-mail, Mia is out of reach too
    rows = {row.name: row.value for row in figure_rows(on)}
    assert rows["Members linked to Telegram"] == 1
    assert rows["Recovery rate, first contact by E-mail"] == 0
    assert isinstance(svc.clock.now(), datetime)


async def test_a_member_who_blocked_the_bot_gets_that_step_by_email(
    mail_service: RunningService, mailbox: Mailbox
) -> None:
    svc = mail_service
    member, chat = await linked_member(svc, "Anna Schmidt", language="de")
    svc.emulator.block(chat)
    case = await open_case(svc, member)
    [message] = await mailbox.wait_for("anna.schmidt@example.org")
    assert message["Subject"] == "Ihre Zahlung hat leider nicht geklappt"
    await wait_for_rows(svc, 1, kind="reminder", channel="email", status="sent")
    rows = await wait_for_rows(svc, 2, kind="reminder")
    assert sorted((r.channel, r.status) for r in rows) == [("email", "sent"),
                                                           ("telegram", "failed")]
    await advance(svc, case, seconds=3 * DAY + 60)  # the next step: e-mail straight away
    await mailbox.wait_for("anna.schmidt@example.org", 2)
    rows = await wait_for_rows(svc, 2, kind="reminder", channel="email", status="sent")
    assert [r.dunning_step for r in rows] == [0, 1]
    assert len(await wait_for_rows(svc, 3, kind="reminder")) == 3  # no Telegram try again


async def test_the_owner_s_voice_signs_e_mails_and_chat_messages(
    engine, clock, tmp_path, mailbox: Mailbox  # noqa: ANN001
) -> None:
    from tests.conversations.helpers import linked_member, texts
    from tests.harness import BOT_USERNAME, running_service
    from tests.mail.smtp import smtp_settings

    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               bot_username=BOT_USERNAME, business_name="Beispiel Club",
                               sign_off="Lena Berger", **smtp_settings(mailbox)) as svc:
        by_mail = await unlinked_member(svc)
        await open_case(svc, by_mail, decline_category="expired_card")
        [message] = await mailbox.wait_for("mia.muster@example.org")
        text, html = parts(message)
        assert "Herzliche Grüße\r\nLena Berger\r\n" in text
        assert "zu Ihrer Mitgliedschaft bei Beispiel Club" in text and "Beispiel Club" in html

        member, chat = await linked_member(svc, language="en")
        await open_case(svc, member, decline_category="insufficient_funds")
        messages = await svc.emulator.wait_for_messages(chat, 2)
        assert texts(messages)[-1].endswith("Warm wishes,\nLena Berger")


async def test_a_reminder_is_checked_against_its_case_just_before_it_goes(
    mail_service: RunningService, mailbox: Mailbox
) -> None:
    """A late event recorded the payment after the e-mail was queued: it is withdrawn, as
    on Telegram, not sent."""
    from payrescue.db.models import RecoveryCase

    svc = mail_service
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "mail-sender"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    member = await unlinked_member(svc)
    case = await open_case(svc, member)
    await wait_for_rows(svc, 1, channel="email", status="queued")
    async with svc.sessionmaker() as session:  # written, not announced: the reconciler
        stored = await session.get(RecoveryCase, case.id)  # has not seen it yet
        assert stored is not None
        stored.status, stored.recovered_at = "recovered", svc.clock.now()
        await session.commit()

    sender = MailSender(SmtpTransport(svc.settings), svc.sessionmaker, svc.app[BUS],
                        svc.clock, svc.settings)
    running = asyncio.create_task(sender.run())
    try:
        [row] = await wait_for_rows(svc, 1, channel="email", status="cancelled")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert row.error == "no longer wanted by its case"
    assert mailbox.messages == []


async def test_an_e_mail_queued_before_messages_were_stored_still_goes_out(
    mail_service: RunningService, mailbox: Mailbox
) -> None:
    """Rows queued by a version that stored no message with the row (before migration 0011)
    are built when they are sent, not failed by the upgrade."""
    from sqlalchemy import update

    from payrescue.db.models import Outbox

    svc = mail_service
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "mail-sender"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    member = await unlinked_member(svc)
    await open_case(svc, member)
    [queued] = await wait_for_rows(svc, 1, channel="email", status="queued")
    async with svc.sessionmaker() as session:  # as an earlier version left it
        await session.execute(update(Outbox).where(Outbox.id == queued.id)
                              .values(email_raw=None, payload={
                                  k: v for k, v in queued.payload.items() if k != "to"}))
        await session.commit()

    sender = MailSender(SmtpTransport(svc.settings), svc.sessionmaker, svc.app[BUS],
                        svc.clock, svc.settings)
    running = asyncio.create_task(sender.run())
    try:
        [row] = await wait_for_rows(svc, 1, channel="email", status="sent")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    [message] = await mailbox.wait_for("mia.muster@example.org")
    assert message["Subject"] == "Ihre Zahlung hat leider nicht geklappt"
    assert "Mia" in parts(message)[0]
