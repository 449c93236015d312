"""The team group as a newcomer tries it in the demo: Anna asks for a person, her topic
appears in the team group page, the agent claims and answers there, the console shows it;
answered from the console, the topic shows that; resolved from the topic, Anna is asked
for a rating."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.demo_process import free_port_pair, start_demo
from tests.e2e.test_console_browser import WAIT_MS, browser, chromium_path  # noqa: F401

pytestmark = pytest.mark.browser


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the demo runs on its own SQLite


@pytest.fixture
def demo(tmp_path: Path):  # noqa: ANN201
    running = start_demo(tmp_path, PAYRESCUE_PORT=str(free_port_pair()))
    yield running
    assert running.stop() == 0


async def test_claim_and_answer_from_telegram_and_watch_the_console_follow(demo, browser) -> None:  # noqa: F811
    assert "/team" in demo.line("Team group:")
    errors: list[str] = []
    anna = await browser.new_page()
    anna.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await anna.goto(demo.links["Anna Schmidt"])
    await anna.click("#start-button")
    await anna.locator(".msg.bot", has_text="Anna").first.wait_for(timeout=WAIT_MS)
    await anna.fill("#text-input", "/human")
    await anna.press("#text-input", "Enter")

    team = await browser.new_page()
    team.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await team.goto(demo.emulator + "/team")
    topic = team.locator("#user-list button", has_text="Anna")
    await topic.wait_for(timeout=WAIT_MS)
    await topic.click()
    await team.locator(".msg", has_text="Anna needs a person.").wait_for(timeout=WAIT_MS)
    await team.click(".keyboard button:has-text('Claim')")
    await team.locator(".msg", has_text="Taken by Demo Admin").wait_for(timeout=WAIT_MS)
    await team.fill("#text-input", "Hallo Anna, hier ist das Team.")
    await team.press("#text-input", "Enter")
    await anna.locator(".msg.bot", has_text="Hallo Anna, hier ist das Team.").wait_for(
        timeout=WAIT_MS)

    console = await browser.new_page()
    await console.goto(demo.console + "/login")
    await console.fill("input[name=email]", "admin@demo.payrescue.test")
    await console.fill("input[name=password]", demo.password)
    await console.click("button[type=submit]")
    await console.wait_for_url("**/console/queue")
    await console.goto(demo.console + "/queue?view=mine")
    await console.click("a:has-text('Anna')")
    await console.locator("main", has_text="Hallo Anna, hier ist das Team.").wait_for(
        timeout=WAIT_MS)
    await console.fill("#reply", "Ich schaue mir Ihre Zahlung an.")
    await console.press("#reply", "Enter")
    await team.locator(".msg", has_text="Ich schaue mir Ihre Zahlung an.").wait_for(
        timeout=WAIT_MS)

    await team.click(".keyboard button:has-text('Resolve')")
    await anna.locator(".msg.bot .keyboard button", has_text="5").wait_for(timeout=WAIT_MS)
    await team.locator("#user-list button", has_text="🔒").wait_for(timeout=WAIT_MS)
    assert errors == []
