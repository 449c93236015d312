"""More of an agent's day in a real Chromium: search to a line and the member page, an action
on the payment appearing live on the timeline, a rating shown, a colleague invited and
signing in with the one-time link."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from payrescue import timeline
from payrescue.agents import add_agent
from payrescue.db.models import Conversation
from tests.e2e.test_console_browser import (  # noqa: F401 - fixtures
    PASSWORD,
    WAIT_MS,
    _member_asks_for_a_human,
    _prepare,
    _signed_in,
    backend,
    browser,
    chromium_path,
    service,
)

pytestmark = pytest.mark.browser


async def test_search_member_page_payment_action_and_rating(service, browser):  # noqa: F811
    svc = service
    _user, member_id = await _prepare(svc)
    conversation_id = await _member_asks_for_a_human(svc, member_id)
    async with svc.sessionmaker() as db, db.begin():
        line = timeline.entry(member_id, "member", "text", svc.clock.now(),
                              text="Kann ich mit PayPal zahlen?",
                              conversation_id=conversation_id)
        db.add(line)
    context, page = await _signed_in(browser, svc, "anna@example.org",
                                     viewport={"width": 1280, "height": 800})

    # search by a word of the message: the result opens the member page at that line
    await page.click("nav a[href='/console/search']")
    await page.fill("input[name=q]", "paypal")
    await page.press("input[name=q]", "Enter")
    await page.locator("#found-lines a").first.click()
    await page.wait_for_url(f"**/console/members/{member_id}?around={line.id}#line-{line.id}")
    assert "PayPal" in await page.locator(f"#line-{line.id}").inner_text()
    assert await page.locator("#conversations a").count() == 1

    # claim, pause the reminders: the action is on the timeline at once
    await page.goto(f"{svc.base_url}/console/conversations/{conversation_id}")
    await page.click("#claim")
    await page.locator("#reply").wait_for(timeout=WAIT_MS)
    await page.fill("#case-actions input[name=days]", "5")
    await page.click("#pause-reminders")
    await page.locator("#transcript .line.system",
                       has_text="Anna hat die Erinnerungen für 5 Tage pausiert"
                       ).wait_for(timeout=WAIT_MS)
    assert await page.locator("#paused-until").is_visible()

    # a rating and its comment show beside the conversation
    await page.click("#resolve")
    async with svc.sessionmaker() as db, db.begin():
        conversation = await db.scalar(select(Conversation).where(
            Conversation.id == conversation_id))
        conversation.rating, conversation.rating_comment = 4, "Sehr freundlich"
    await page.goto(f"{svc.base_url}/console/conversations/{conversation_id}")
    assert "★★★★☆" in await page.locator("#rating").inner_text()
    assert "Sehr freundlich" in await page.locator("#rating").inner_text()
    await context.close()


async def test_an_admin_invites_a_colleague_who_signs_in(service, browser):  # noqa: F811
    svc = service
    async with svc.sessionmaker() as db, db.begin():
        await add_agent(db, email="chef@example.org", name="Chefin", role="admin",
                        password=PASSWORD, now=svc.clock.now(), language="de")
    admin_context, admin = await _signed_in(browser, svc, "chef@example.org")
    await admin.goto(svc.base_url + "/console/team")
    await admin.fill("#invite input[name=name]", "Lena Koch")
    await admin.fill("#invite input[name=email]", "lena@example.org")
    await admin.click("#invite button[type=submit]")
    link = await admin.locator("#password-link code").inner_text()

    lena_context = await browser.new_context(locale="de-DE")
    lena = await lena_context.new_page()
    await lena.goto(link)
    assert "Lena Koch" in await lena.locator("main").inner_text()
    await lena.fill("input[name=new]", "lenas password 123")
    await lena.fill("input[name=again]", "lenas password 123")
    await lena.click("button[type=submit]")
    await lena.wait_for_url("**/console/login**")
    await lena.fill("input[name=email]", "lena@example.org")
    await lena.fill("input[name=password]", "lenas password 123")
    await lena.click("button[type=submit]")
    await lena.wait_for_url("**/console/queue")
    await lena.goto(link)  # once only
    assert "funktioniert nicht mehr" in await lena.locator("main").inner_text()
    await admin_context.close()
    await lena_context.close()
