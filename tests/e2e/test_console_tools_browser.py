"""An agent's tools in a real Chromium, against the whole service with the Telegram emulator
and the real bot: a canned answer filled in for the member (its link signed and counted),
quoting a member's message, a member's edit, unread markers, and the actions on the
payment (Stripe's "retry the charge" against the Stripe stand-in), each on the timeline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from payrescue.clock import Clock
from payrescue.db.models import CannedAnswer, Member, RecoveryCase, Subscription, UpdateLink
from tests.billing.conftest import STRIPE_KEY, WHSEC, invoice, sign_stripe, stripe_event
from tests.billing.conftest import standin as standin  # noqa: F401 - the stand-in fixture
from tests.billing.stripe_standin import StandinState
from tests.e2e.test_console_browser import (  # noqa: F401 - fixtures
    WAIT_MS,
    _delivered,
    _member_asks_for_a_human,
    _prepare,
    _signed_in,
    backend,
    browser,
    chromium_path,
    service,
)
from tests.harness import RunningService, running_service

pytestmark = pytest.mark.browser


async def _claimed_in_the_browser(chromium, svc: RunningService, member_id: int):  # noqa: ANN001, ANN202
    conversation_id = await _member_asks_for_a_human(svc, member_id)
    context, page = await _signed_in(chromium, svc, "anna@example.org",
                                     viewport={"width": 1280, "height": 800})
    await page.goto(f"{svc.base_url}/console/conversations/{conversation_id}")
    await page.click("#claim")
    await page.locator("#reply").wait_for(timeout=WAIT_MS)
    return context, page, conversation_id


async def test_a_canned_answer_filled_in_for_the_member_its_link_counted(
        service, browser):  # noqa: F811
    svc = service
    user, member_id = await _prepare(svc)
    now = svc.clock.now()
    async with svc.sessionmaker() as db, db.begin():
        plan = Subscription(member_id=member_id, provider="stripe", external_id="sub_e2e",
                            plan_name="Premium jährlich", amount_minor=2900, currency="EUR",
                            update_url="https://billing.example.org/card", created_at=now)
        db.add(plan)
        await db.flush()
        case = await db.scalar(select(RecoveryCase).where(RecoveryCase.member_id == member_id))
        case.subscription_id = plan.id
        db.add(CannedAnswer(shortcut="link", title="Link senden", language="de",
                            body="Hallo {{ first_name }}, für Ihr Abo {{ plan }} sind "
                                 "{{ amount }} offen. Hier geht es zur Karte: {{ update_link }}",
                            created_at=now, updated_at=now))
    context, page, _conversation_id = await _claimed_in_the_browser(browser, svc, member_id)

    # "/" offers the answers; the preview is what the member will read, filled in for Mia
    await page.type("#reply", "/li")
    preview = page.locator("#canned-menu li .preview")
    await preview.first.wait_for(timeout=WAIT_MS)
    assert await preview.count() == 1  # only the shortcut that matches
    shown = await preview.inner_text()
    assert shown.startswith("Hallo Mia, für Ihr Abo Premium jährlich sind 29,00\xa0€ offen.")
    # the link is made when the reply is sent (a preview creates none): a placeholder here
    assert shown.endswith("Hier geht es zur Karte: {{ update_link }}")
    await page.press("#reply", "Enter")  # pick it
    assert (await page.input_value("#reply")).startswith("Hallo Mia, für Ihr Abo")
    async with svc.sessionmaker() as db:
        assert (await db.scalars(select(UpdateLink))).all() == []

    # sent: the member reads it in Telegram with a signed, tracked link of her own
    before = len(svc.emulator.sent_messages(user["id"]))
    await page.press("#reply", "Enter")
    received = (await _delivered(svc, user["id"], before + 1))[-1]["plain_text"]
    prefix = "Hallo Mia, für Ihr Abo Premium jährlich sind 29,00\xa0€ offen. Hier geht es zur " \
             "Karte: "
    assert received.startswith(prefix)
    link = received.removeprefix(prefix)
    assert link.startswith(f"{svc.base_url}/u/") and " " not in link
    await page.locator(".line.agent .text", has_text=link).wait_for(timeout=WAIT_MS)

    # she opens it: counted, and the console shows it on the timeline at once
    async with aiohttp.ClientSession() as member_browser:
        opened = await member_browser.get(link, allow_redirects=False)
        assert opened.status == 302
        assert opened.headers["Location"] == "https://billing.example.org/card"
    await page.locator("#transcript .line.system",
                       has_text="hat den Link zur Zahlungsänderung geöffnet"
                       ).wait_for(timeout=WAIT_MS)
    async with svc.sessionmaker() as db:
        [row] = (await db.scalars(select(UpdateLink))).all()
    assert row.open_count == 1 and row.case_id == case.id
    await context.close()


async def test_quoting_a_member_and_a_members_edit(service, browser):  # noqa: F811
    svc = service
    user, member_id = await _prepare(svc)
    context, page, _conversation_id = await _claimed_in_the_browser(browser, svc, member_id)

    # Mia writes in Telegram (the real bot relays it): the line arrives live, quotable
    said = await svc.emulator.send_text(user["id"], "Meine Karte endet auf 4242")
    line = page.locator(".line.member", has_text="Meine Karte endet auf 4242")
    await line.wait_for(timeout=WAIT_MS)
    await line.locator("button.quote").click()
    assert "Meine Karte endet auf 4242" in await page.locator("#quote-preview").inner_text()
    before = len(svc.emulator.sent_messages(user["id"]))
    await page.fill("#reply", "Danke, das sehe ich mir an.")
    await page.press("#reply", "Enter")

    # Telegram shows the reply under her message (reply_parameters, in the emulator's record)
    reply = (await _delivered(svc, user["id"], before + 1))[-1]
    assert reply["plain_text"] == "Danke, das sehe ich mir an."
    assert reply["reply_to_message_id"] == said["message_id"]
    agent_line = page.locator(".line.agent", has_text="Danke, das sehe ich mir an.")
    await agent_line.wait_for(timeout=WAIT_MS)
    assert await agent_line.locator("blockquote.quoted").inner_text() == \
        "Meine Karte endet auf 4242"
    assert not await page.locator("#quote-preview").is_visible()  # sent: the quote is gone

    # she edits her message: the edit is a line of its own, marked, the original kept
    await svc.emulator.edit_text(user["id"], said["message_id"], "Meine Karte endet auf 4343")
    edited = page.locator(".line.member.edited", has_text="Meine Karte endet auf 4343")
    await edited.wait_for(timeout=WAIT_MS)
    assert "bearbeitet" in await edited.locator(".meta").inner_text()
    assert await page.locator(".line.member", has_text="4242").count() == 1
    await context.close()


async def test_unread_markers_come_when_the_member_writes_and_go_when_opened(
        service, browser):  # noqa: F811
    svc = service
    user, member_id = await _prepare(svc)
    context, page, conversation_id = await _claimed_in_the_browser(browser, svc, member_id)
    await page.goto(f"{svc.base_url}/console/queue?view=mine")
    row = page.locator(f'#queue-rows tr[data-conversation="{conversation_id}"]')
    await row.wait_for(timeout=WAIT_MS)
    assert "unread" not in (await row.get_attribute("class") or "")

    # Mia writes while Anna looks at her queue: the row is marked at once
    await svc.emulator.send_text(user["id"], "Sind Sie noch da?")
    await page.locator(f'#queue-rows tr.unread[data-conversation="{conversation_id}"]'
                       ).wait_for(timeout=WAIT_MS)
    assert await row.locator(".unread-badge").is_visible()

    # opened, the message is on her screen: back in the queue, nothing is unread
    await row.locator("a").first.click()
    await page.locator(".line.member", has_text="Sind Sie noch da?").wait_for(timeout=WAIT_MS)
    await page.goto(f"{svc.base_url}/console/queue?view=mine")
    await row.wait_for(timeout=WAIT_MS)
    assert "unread" not in (await row.get_attribute("class") or "")
    assert await row.locator(".unread-badge").count() == 0
    await context.close()


@pytest.fixture
async def stripe_service(engine, standin) -> AsyncIterator[tuple[RunningService,  # noqa: F811
                                                                 StandinState]]:
    """The whole service with a Stripe API key, the official library talking to the stand-in."""
    server: TestServer
    server, state = standin
    async with running_service(engine=engine, clock=Clock(), default_language="de",
                               stripe_api_key=STRIPE_KEY, stripe_webhook_secret=WHSEC,
                               stripe_api_base=str(server.make_url("")).rstrip("/")) as svc:
        yield svc, state


async def _post_stripe(svc: RunningService, event: dict) -> None:
    body = json.dumps(event).encode()
    async with aiohttp.ClientSession() as stripe_itself:
        response = await stripe_itself.post(
            f"{svc.base_url}/webhooks/stripe", data=body,
            headers={"Stripe-Signature": sign_stripe(body), "Content-Type": "application/json"})
        assert response.status == 200, await response.text()


async def test_the_actions_on_the_payment_each_land_on_the_timeline(
        stripe_service, browser):  # noqa: F811
    svc, stripe_state = stripe_service
    user, member_id = await _prepare(svc)
    async with svc.sessionmaker() as db:
        member = await db.get(Member, member_id)
    # the failed renewal as Stripe reports it (the case _prepare made stays aside: a second
    # member's invoice is the one retried here)
    failed = invoice("in_retry", customer="cus_Mia", email=member.email, name="Mia Muster",
                     subscription="sub_Mia")
    await _post_stripe(svc, stripe_event("invoice.payment_failed", failed,
                                         svc.clock.now() - timedelta(minutes=5)))
    async with svc.sessionmaker() as db, db.begin():
        for case in (await db.scalars(select(RecoveryCase).where(
                RecoveryCase.member_id == member_id, RecoveryCase.invoice_ref == "in_e2e"))):
            await db.delete(case)  # Mia owes only the Stripe invoice
    context, page, _conversation_id = await _claimed_in_the_browser(browser, svc, member_id)

    # retry the charge: the official library asks the stand-in to pay the open invoice
    await page.click("#retry-charge")
    await page.locator("#transcript .line.system",
                       has_text="Anna hat den Zahlungsanbieter gebeten"
                       ).wait_for(timeout=WAIT_MS)
    assert stripe_state.paid_invoices == ["in_retry"]

    # a fresh update link goes to the member as Anna's message
    before = len(svc.emulator.sent_messages(user["id"]))
    await page.click("form[action$='/update-link'] button")
    received = (await _delivered(svc, user["id"], before + 1))[-1]["plain_text"]
    assert f"{svc.base_url}/u/" in received
    await page.locator(".line.agent .text", has_text="/u/").wait_for(timeout=WAIT_MS)

    # the charge went through: Stripe's webhook closes the case, live on the timeline
    paid = invoice("in_retry", customer="cus_Mia", email=member.email, name="Mia Muster",
                   subscription="sub_Mia", paid=True)
    await _post_stripe(svc, stripe_event("invoice.paid", paid, svc.clock.now()))
    await page.locator("#transcript .line.system", has_text="Zahlung eingegangen"
                       ).wait_for(timeout=WAIT_MS)
    await page.reload()
    assert await page.locator("#case-actions").count() == 0  # nothing left to act on
    await context.close()


async def test_settled_outside_closes_the_case_on_the_timeline(service, browser):  # noqa: F811
    svc = service
    _user, member_id = await _prepare(svc)
    context, page, _conversation_id = await _claimed_in_the_browser(browser, svc, member_id)
    assert await page.locator("#retry-charge").count() == 0  # no Stripe key: no retry
    await page.fill("#case-actions input[name=reason]", "Überweisung am 3. Mai")
    await page.click("#settle")
    settled = page.locator("#transcript .line.system",
                           has_text="als außerhalb von PayRescue bezahlt")
    await settled.wait_for(timeout=WAIT_MS)
    assert "Überweisung am 3. Mai" in await settled.inner_text()
    await page.reload()
    assert await page.locator("#case-actions").count() == 0
    async with svc.sessionmaker() as db:
        case = await db.scalar(select(RecoveryCase).where(RecoveryCase.member_id == member_id))
    assert (case.status, case.attribution) == ("recovered", "agent")
    await context.close()
