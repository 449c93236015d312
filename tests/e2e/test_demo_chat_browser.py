"""A newcomer's first minute on a phone-sized browser: `payrescue demo` runs as a process,
Anna's printed link opens her chat with Telegram's Start button, the chat reads like a
messenger at 390 × 844, and the agent console offers the demo's canned answers.

With PAYRESCUE_SCREENSHOTS=1 it refreshes docs/demo-chat-phone.png (shown in README);
otherwise the screenshot goes to a temporary directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.demo_process import free_port_pair, start_demo
from tests.e2e.test_console_browser import WAIT_MS, browser, chromium_path, shots  # noqa: F401

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the demo runs on its own SQLite


@pytest.fixture
def demo(tmp_path: Path):  # noqa: ANN201
    running = start_demo(tmp_path, PAYRESCUE_PORT=str(free_port_pair()))
    yield running
    assert running.stop() == 0


async def test_a_demo_link_opens_the_members_chat_like_a_phone(demo, browser, shots) -> None:  # noqa: F811
    context = await browser.new_context(viewport=PHONE, device_scale_factor=2,
                                        is_mobile=True, has_touch=True, locale="de-DE")
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)

    await page.goto(demo.links["Anna Schmidt"])
    # her chat, ready: her name on top, Telegram's Start button where the composer goes
    await page.locator("#chat-title", has_text="Anna Schmidt").wait_for(timeout=WAIT_MS)
    start = page.locator("#start-button")
    assert await start.is_visible()
    assert not await page.locator("#composer").is_visible()
    assert not await page.locator("#sidebar").is_visible()
    await start.click()

    # the tap shows as "/start", as in Telegram; the bot greets Anna by name
    await page.locator(".msg.bot", has_text="Anna").first.wait_for(timeout=WAIT_MS)
    assert await page.locator(".msg.member").first.inner_text() != ""
    member_text = await page.locator(".msg.member > div").first.inner_text()
    assert member_text == "/start"
    assert await page.locator("#composer").is_visible()
    # counted before sending: the answer may show in the same refresh as the question
    count = await page.locator(".msg.bot").count()
    await page.fill("#text-input", "/status")
    await page.press("#text-input", "Enter")
    await page.locator(".msg.member", has_text="/status").wait_for(timeout=WAIT_MS)
    await page.locator(".msg.bot").nth(count).wait_for(timeout=WAIT_MS)  # the bot answers

    # a messenger on a phone: nothing wider than the screen, bubbles with whole words
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    bubble = await page.locator(".msg.bot").first.bounding_box()
    assert bubble is not None and bubble["width"] > PHONE["width"] * 0.6
    await page.screenshot(path=str(shots / "demo-chat-phone.png"))

    # back to the member list, which then fills the screen
    await page.click("#back")
    assert await page.locator("#sidebar").is_visible()
    assert not await page.locator("#chat").is_visible()
    assert errors == []
    await context.close()


async def test_the_demos_console_offers_canned_answers_in_both_languages(demo, browser) -> None:  # noqa: F811
    page = await browser.new_page()
    await page.goto(demo.console + "/login")
    await page.fill("input[name=email]", "admin@demo.payrescue.test")
    await page.fill("input[name=password]", demo.password)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/queue")
    await page.goto(demo.console + "/canned")
    listing = await page.locator("main").inner_text()
    for shortcut in ("karte", "card", "aufschub", "grace"):
        assert shortcut in listing
    await page.close()
