"""A compressed day in the demo with two agents, as the console issue is checked: `payrescue
demo` runs as a process (its admin and its second agent log in with the printed passwords),
members write in the emulated Telegram and payments fail through the demo's billing page.
The admin works at a desk, Lena on a phone (390 × 844), each in a browser context of their
own: handoffs reach both on whatever page they are, the claim loser is told at once, both
answer, search finds every conversation, and a member's timeline holds everything the
member saw in Telegram. Waiting times run on the browsers' clocks, which the test moves on.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus, urlsplit

import aiohttp
import pytest

from tests.demo_process import Demo, free_port_pair, start_demo
from tests.e2e.test_console_browser import (  # noqa: F401 - fixtures
    RECORD_NOTIFICATIONS,
    WAIT_MS,
    browser,
    chromium_path,
)

pytestmark = pytest.mark.browser
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESK = {"viewport": {"width": 1280, "height": 800}}
FORM_TOKEN = re.compile(r'name="token" value="([^"]+)"')


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the demo runs on its own SQLite


@pytest.fixture
def demo(tmp_path: Path):  # noqa: ANN201
    running = start_demo(tmp_path, PAYRESCUE_PORT=str(free_port_pair()))
    yield running
    assert running.stop() == 0


async def _control(demo: Demo, path: str, body: dict | None = None) -> dict:
    return await asyncio.to_thread(demo.control, path, body)


async def _bot_says(demo: Demo, user: int, count: int) -> list[dict]:
    return await asyncio.to_thread(demo.wait_for_bot, user, count)


async def _fail_payment(billing: aiohttp.ClientSession, member_id: str) -> None:
    """The demo's billing page: "failed payment" for one member (a signed webhook)."""
    page = await (await billing.get("/demo")).text()
    token = FORM_TOKEN.search(page)
    assert token, "the billing page has its form token"
    answer = await billing.post("/demo/simulate", data={
        "token": token.group(1), "member_id": member_id, "action": "failed-payment",
        "reason": "expired_card"}, allow_redirects=False)
    assert answer.status == 303
    assert "sent for member" in unquote_plus(answer.headers["Location"])


async def _signed_in(chromium, demo: Demo, email: str, password: str, **options):  # noqa: ANN001, ANN202
    context = await chromium.new_context(locale="de-DE", **options)
    await context.add_init_script(RECORD_NOTIFICATIONS)
    page = await context.new_page()
    await page.clock.install()  # the page's own clock: the test moves it on
    await page.goto(demo.console + "/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/queue")
    return context, page


async def _conversation_of(page, name: str) -> str:  # noqa: ANN001
    row = page.locator("#queue-rows tr[data-conversation]", has_text=name)
    await row.wait_for(timeout=WAIT_MS)
    return await row.get_attribute("data-conversation")


def _said(message: dict) -> str:
    return " ".join((message.get("plain_text") or message.get("caption") or "").split())


async def test_two_agents_work_a_day_in_the_demo(demo, browser) -> None:  # noqa: F811
    members = {}  # name → (Telegram user id, link token)
    for name, link in demo.links.items():
        query = parse_qs(urlsplit(link).query)
        members[name] = int(query["user"][0]), query["start"][0]
    anna, ben, clara = (members[n][0] for n in ("Anna Schmidt", "Ben Carter", "Clara Huber"))
    for user, token in members.values():  # each taps their deep link
        await _control(demo, f"/users/{user}/start", {"payload": token})
        await _bot_says(demo, user, 1)

    admin_email, admin_password = "admin@demo.payrescue.test", demo.password
    lena_email, lena_password = demo.agent
    admin_context, admin = await _signed_in(browser, demo, admin_email, admin_password, **DESK)
    lena_context, lena = await _signed_in(browser, demo, lena_email, lena_password, **PHONE)
    # the morning: the admin (English console) reads the dashboard, Lena (German) looks
    # something up on her phone
    await admin.goto(demo.console + "/dashboard")
    await lena.goto(demo.console + "/search")
    for page in (admin, lena):
        assert not (await page.title()).startswith("(")  # nobody waiting yet

    # three payments fail; each member gets the notice in Telegram
    base = demo.console.removesuffix("/console")
    async with aiohttp.ClientSession(base_url=base) as billing:
        page = await (await billing.get("/demo")).text()
        for name in ("Anna Schmidt", "Ben Carter", "Clara Huber"):  # a row per member
            row = re.search(rf'<td>{name}<br>.*?name="member_id" value="(\d+)"', page, re.S)
            assert row, f"{name} on the billing page"
            await _fail_payment(billing, row.group(1))
    for user in (anna, ben, clara):
        await _bot_says(demo, user, 2)

    # they ask for a person: Anna by the notice's button, Ben and Clara by command
    notice = (await _bot_says(demo, anna, 2))[-1]
    talk = next(button for line in notice["reply_markup"]["inline_keyboard"]
                for button in line if "Menschen" in button["text"]
                or "Team" in button["text"] or "Person" in button["text"])
    await _control(demo, f"/users/{anna}/callback",
                   {"message_id": notice["message_id"], "data": talk["callback_data"]})
    await _control(demo, f"/users/{ben}/messages", {"text": "/human"})
    await _control(demo, f"/users/{clara}/messages", {"text": "/mensch"})

    # both agents learn of all three wherever they are: count, tab title, notifications
    for page, new in ((admin, "New in the queue"), (lena, "Neu in der Warteschlange")):
        await page.locator("#waiting-count", has_text="3").wait_for(timeout=WAIT_MS)
        assert (await page.title()).startswith("(3) ")
        await page.locator("output.test-notification").nth(2).wait_for(timeout=WAIT_MS)
        titles = [title for title, _body in await page.evaluate("window.__notes")]
        assert sorted(titles) == [f"{new}: {name}" for name in members]

    # both open Anna's conversation; the admin claims first, Lena is told at once
    await admin.goto(demo.console + "/queue")
    anna_conversation = await _conversation_of(admin, "Anna Schmidt")
    ben_conversation = await _conversation_of(admin, "Ben Carter")
    clara_conversation = await _conversation_of(admin, "Clara Huber")
    for page in (admin, lena):
        await page.goto(f"{demo.console}/conversations/{anna_conversation}")
        await page.locator("#claim").wait_for(timeout=WAIT_MS)
    await admin.click("#claim")
    await admin.locator("#reply").wait_for(timeout=WAIT_MS)
    await lena.locator("#error", has_text="Demo Admin").wait_for(timeout=WAIT_MS)
    assert await lena.locator("#reply").count() == 0

    # the admin answers Anna with the demo's canned answer (a signed link of her own)
    before = len(await _bot_says(demo, anna, 1))
    await admin.type("#reply", "/karte")
    await admin.locator("#canned-menu li").first.wait_for(timeout=WAIT_MS)
    await admin.press("#reply", "Enter")
    await admin.press("#reply", "Enter")
    answer = (await _bot_says(demo, anna, before + 1))[-1]
    assert _said(answer).startswith("Hallo Anna, Ihre letzte Zahlung über")
    assert f"{base}/u/" in _said(answer)

    # Lena takes Ben on her phone and answers him; the layout fits the screen
    await lena.goto(f"{demo.console}/conversations/{ben_conversation}")
    await lena.locator("#claim").tap()
    await lena.locator("#reply").wait_for(timeout=WAIT_MS)
    assert await lena.evaluate("document.scrollingElement.scrollWidth") <= 390
    before = len(await _bot_says(demo, ben, 1))
    await lena.fill("#reply", "Hi Ben, I'm Lena. Shall we sort out your card together?")
    await lena.locator("form.reply button.primary").tap()
    answer = (await _bot_says(demo, ben, before + 1))[-1]
    assert _said(answer) == "Hi Ben, I'm Lena. Shall we sort out your card together?"
    await _control(demo, f"/users/{ben}/messages", {"text": "Yes please, the new card ends 4711"})
    await lena.locator(".line.member", has_text="ends 4711").wait_for(timeout=WAIT_MS)

    # Clara still waits: on Lena's phone queue her wait ticks on to the SLA highlight
    await lena.goto(demo.console + "/queue")
    row = lena.locator(f'#queue-rows tr[data-conversation="{clara_conversation}"]')
    await row.wait_for(timeout=WAIT_MS)
    async with lena.expect_response("**/console/queue/rows**"):  # its first look (debounced)
        await lena.clock.run_for(1000)
    assert "overdue" not in (await row.get_attribute("class") or "")
    await lena.clock.run_for(16 * 60 * 1000)  # sixteen minutes on the phone's clock
    await row.locator(".overdue-badge").wait_for(timeout=WAIT_MS)
    assert await lena.evaluate("document.scrollingElement.scrollWidth") <= 390

    # search finds every member and, through them, every conversation — and a line
    for name, conversation in (("Anna Schmidt", anna_conversation),
                               ("Ben Carter", ben_conversation),
                               ("Clara Huber", clara_conversation)):
        await admin.goto(f"{demo.console}/search?q={name.split()[0]}")
        await admin.locator("#found-members a", has_text=name).click()
        await admin.locator(f'#conversations a[href$="/conversations/{conversation}"]'
                            ).wait_for(timeout=WAIT_MS)
    await admin.goto(f"{demo.console}/search?q=4711")
    await admin.locator("#found-lines a", has_text="Ben Carter").click()
    assert "ends 4711" in await admin.locator("#transcript .line:target").inner_text()

    # everything Anna saw in Telegram, both sides, is on her timeline
    chat = await _control(demo, f"/chats/{anna}/messages")
    await admin.goto(f"{demo.console}/conversations/{anna_conversation}")
    await admin.locator("#transcript .line").first.wait_for(timeout=WAIT_MS)
    shown = [" ".join(text.split()) for text in
             await admin.locator("#transcript .line .text").all_inner_texts()]
    seen = [said.split()[0] if said.startswith("/start ") else said  # its token: a secret
            for said in map(_said, chat["messages"])]
    missing = [said for said in seen if not any(said in line for line in shown)]
    assert missing == [], (missing, shown)
    await admin_context.close()
    await lena_context.close()
