"""An agent works a handoff in a real Chromium: the whole service runs, Telegram is the
emulator, the bot and the notifier are the real ones.

With PAYRESCUE_SCREENSHOTS=1 it refreshes the screenshots shown in README
(docs/console-queue.png, docs/console-conversation.png); otherwise they go to a temporary
directory, so a test run leaves the working tree clean.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from payrescue import handoff_rules, timeline
from payrescue.agents import add_agent
from payrescue.clock import Clock
from payrescue.conversations import WAITING, current_conversation
from payrescue.db.models import (
    CannedAnswer,
    Conversation,
    Message,
    Outbox,
    RecoveryCase,
)
from payrescue.events import Event
from payrescue.keys import BUS
from tests.harness import RunningService, running_service

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORD = "agent password 123"
XSS = "<img src=x onerror=alert(1)>"
WAIT_MS = 10_000


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the browser flow is the same on both; the database tests cover both


@pytest.fixture
async def service(engine) -> AsyncIterator[RunningService]:
    async with running_service(engine=engine, clock=Clock(), default_language="de") as svc:
        yield svc


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("PAYRESCUE_SCREENSHOTS") else tmp_path


@pytest.fixture
def chromium_path() -> str:
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{CHROMIUM} missing in CI: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return str(CHROMIUM)


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=chromium_path,
                                                    args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _prepare(svc: RunningService) -> tuple[dict, int]:
    """A German agent, a canned answer, and a linked member with a failed payment."""
    now = svc.clock.now()
    member = await svc.add_member(name="Mia Muster", language="de")
    async with svc.sessionmaker() as db, db.begin():
        await add_agent(db, email="anna@example.org", name="Anna", role="agent",
                        password=PASSWORD, now=now, language="de")
        db.add(CannedAnswer(shortcut="karte", title="Karte aktualisieren", language="de",
                            body="Hallo {{ first_name }}, bitte aktualisieren Sie Ihre Karte "
                                 "– offen sind {{ amount }}.", created_at=now, updated_at=now))
        db.add(RecoveryCase(member_id=member.id, provider="stripe", invoice_ref="in_e2e",
                            amount_minor=2900, currency="EUR",
                            decline_category="insufficient_funds",
                            decline_code="insufficient_funds", opened_at=now,
                            last_failure_at=now, updated_at=now))
    user = svc.create_user("Mia", language_code="de")
    await svc.link(member, user)
    return user, member.id


async def _member_asks_for_a_human(svc: RunningService, member_id: int) -> int:
    """What the bot's handoff does (payrescue.handoff_rules): queue it, then publish.

    Played here so the console's test does not hang on the bot's trigger words; the bot's
    own tests cover those.
    """
    now = svc.clock.now()
    async with svc.sessionmaker() as db, db.begin():
        conversation = await current_conversation(db, member_id, now)
        case = await db.scalar(select(RecoveryCase).where(RecoveryCase.member_id == member_id))
        await handoff_rules.request_handoff(db, conversation, [handoff_rules.ASKED], now, case)
    await svc.app[BUS].publish(Event("conversation.waiting",
                                     {"conversation_id": conversation.id}))
    return conversation.id


async def _more_handoffs(svc: RunningService) -> None:
    """Two other members waiting, so the queue (and its screenshot) shows the ordering."""
    for name, reasons, priority, amount, minutes in (
        ("Jonas Becker", ["dispute"], 80, 11900, 22),
        ("Emily Clark", ["many_attempts", "large_amount"], 40, 24900, 6),
    ):
        member = await svc.add_member(name=name, language="en" if name[0] == "E" else "de")
        since = svc.clock.now() - timedelta(minutes=minutes)
        async with svc.sessionmaker() as db, db.begin():
            case = RecoveryCase(member_id=member.id, provider="stripe",
                                invoice_ref=f"in_{member.id}", amount_minor=amount,
                                currency="EUR", opened_at=since, last_failure_at=since,
                                updated_at=since)
            db.add(case)
            await db.flush()
            conversation = Conversation(member_id=member.id, case_id=case.id, status=WAITING,
                                        priority=priority, handoff_reasons=reasons,
                                        waiting_since=since, created_at=since,
                                        updated_at=since)
            db.add(conversation)
        await svc.app[BUS].publish(Event("conversation.waiting",
                                         {"conversation_id": conversation.id}))


async def _member_writes(svc: RunningService, conversation_id: int, text: str) -> None:
    """What the bot's relay does with a member's message while a human owns the chat."""
    async with svc.sessionmaker() as db, db.begin():
        conversation = await db.get(Conversation, conversation_id)
        message = Message(conversation_id=conversation_id, member_id=conversation.member_id,
                          sender="member", text=text, created_at=svc.clock.now())
        db.add(message)
    await svc.app[BUS].publish(timeline.created_event(message))


async def _delivered(svc: RunningService, chat_id: int, count: int) -> list[dict]:
    """The member's chat once the agent's reply went from the outbox into Telegram.

    The real notifier does it when the build wires it in; otherwise this plays its part
    (send through the service's own Bot, mark the row sent, publish `outbox.updated`).
    """
    try:
        from bot.notifier import NOTIFIER
    except ImportError:
        NOTIFIER = None  # noqa: N806 - the notifier's key, when it exists
    if NOTIFIER is None or NOTIFIER not in svc.app:
        await _deliver_like_the_notifier(svc)
    return await svc.emulator.wait_for_messages(chat_id, count)


async def _deliver_like_the_notifier(svc: RunningService) -> None:
    async with svc.sessionmaker() as db, db.begin():
        rows = (await db.scalars(select(Outbox).where(Outbox.status == "queued"))).all()
        for row in rows:
            sent = await svc.bot.send_message(row.chat_id, row.payload["text"])
            row.status, row.sent_at = "sent", svc.clock.now()
            row.telegram_message_id = sent.message_id
    for row in rows:
        await svc.app[BUS].publish(Event("outbox.updated", {"outbox_id": row.id,
                                                            "status": "sent"}))


async def _status(svc: RunningService, member_id: int) -> str | None:
    async with svc.sessionmaker() as db:
        return await db.scalar(select(Conversation.status).where(
            Conversation.member_id == member_id).order_by(Conversation.id.desc()).limit(1))


async def test_an_agent_works_a_handoff_in_the_browser(service, browser, shots):
    svc = service
    user, member_id = await _prepare(svc)
    context = await browser.new_context(viewport={"width": 1280, "height": 800},
                                        locale="de-DE")
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)

    # log in
    await page.goto(svc.base_url + "/console/login")
    await page.fill("input[name=email]", "anna@example.org")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/queue")
    assert await page.locator("h1, nav").first.is_visible()

    # the member asks for a human in Telegram; the handoff appears without a reload
    await page.locator("tr.empty").wait_for(timeout=WAIT_MS)
    conversation_id = await _member_asks_for_a_human(svc, member_id)
    row = page.locator(f'#queue-rows tr[data-conversation="{conversation_id}"]')
    await row.wait_for(timeout=WAIT_MS)
    await _more_handoffs(svc)
    await page.locator("#queue-rows tr[data-conversation]").nth(2).wait_for(timeout=WAIT_MS)
    assert "Mia Muster" in await row.inner_text()
    assert "möchte mit dem Team sprechen" in await row.inner_text()
    await page.screenshot(path=str(shots / "console-queue.png"))

    # claim
    await row.locator("button[type=submit]").click()
    await page.wait_for_url("**/console/conversations/*")
    assert await _status(svc, member_id) == "assigned"
    assert "Nicht genug Guthaben" in await page.locator("aside.context").inner_text()

    # reply with Enter: queued, then delivered into the member's Telegram chat
    before = len(svc.emulator.sent_messages(user["id"]))
    await page.fill("#reply", "Guten Tag, ich helfe Ihnen gern weiter.")
    await page.press("#reply", "Enter")
    await page.locator(".line.agent .delivery").first.wait_for(timeout=WAIT_MS)
    sent = await _delivered(svc, user["id"], before + 1)
    assert sent[-1]["text"] == "Guten Tag, ich helfe Ihnen gern weiter."
    await page.locator(".line.agent .delivery.sent").wait_for(timeout=WAIT_MS)

    # the member answers with HTML: it arrives live and stays text
    await _member_writes(svc, conversation_id, XSS)
    member_line = page.locator(".line.member .text", has_text="onerror")
    await member_line.wait_for(timeout=WAIT_MS)
    assert await member_line.inner_text() == XSS
    assert await page.locator("#transcript img").count() == 0

    # a canned answer by typing its shortcut, filled in for the member
    await page.fill("#reply", "")
    await page.type("#reply", "/kar")
    await page.locator("#canned-menu li").first.wait_for(timeout=WAIT_MS)
    await page.press("#reply", "Enter")
    filled = await page.input_value("#reply")
    assert filled == "Hallo Mia, bitte aktualisieren Sie Ihre Karte – offen sind 29,00\xa0€."
    await page.press("#reply", "Enter")
    await page.locator(".line.agent .delivery").nth(1).wait_for(timeout=WAIT_MS)
    await _delivered(svc, user["id"], before + 2)
    await page.locator(".line.agent .delivery.sent").nth(1).wait_for(timeout=WAIT_MS)
    await page.screenshot(path=str(shots / "console-conversation.png"))

    # resolve: the conversation leaves the agent; the bot takes over and asks for a rating
    await page.click("#resolve")
    await page.locator("#status", has_text="erledigt").wait_for(timeout=WAIT_MS)
    assert await _status(svc, member_id) == "resolved"
    assert await page.locator("#reply").count() == 0  # no longer hers to answer
    assert dialogs == []  # no alert() ever ran
    assert errors == []  # no script error, nothing the CSP had to block, no missing file
    await context.close()


async def _signed_in(browser, svc: RunningService, email: str, **options):  # noqa: ANN001, ANN202
    context = await browser.new_context(locale="de-DE", **options)
    page = await context.new_page()
    await page.goto(svc.base_url + "/console/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/queue")
    return context, page


async def test_the_claim_loser_is_told_at_once_and_cannot_answer(service, browser):
    svc = service
    _user, member_id = await _prepare(svc)
    async with svc.sessionmaker() as db, db.begin():
        await add_agent(db, email="lena@example.org", name="Lena", role="agent",
                        password=PASSWORD, now=svc.clock.now(), language="de")
    conversation_id = await _member_asks_for_a_human(svc, member_id)
    anna_context, anna = await _signed_in(browser, svc, "anna@example.org")
    lena_context, lena = await _signed_in(browser, svc, "lena@example.org")
    url = f"{svc.base_url}/console/conversations/{conversation_id}"
    await anna.goto(url)
    await lena.goto(url)
    await anna.locator("#transcript .line.system", has_text="Menschen").wait_for(timeout=WAIT_MS)

    await lena.click("#claim")
    await lena.locator("#reply").wait_for(timeout=WAIT_MS)
    # Anna, still looking at the claim button, learns at once who took it
    await anna.locator("#error", has_text="Lena").wait_for(timeout=WAIT_MS)
    assert await anna.locator("#claim").is_disabled()
    assert await anna.locator("#reply").count() == 0
    await anna.locator("#transcript .line.system",
                       has_text="Lena hat das Gespräch übernommen").wait_for(timeout=WAIT_MS)
    # a claim sent anyway (a stale tab) is refused with the winner's name
    response = await anna.request.post(url + "/claim", headers={
        "X-CSRF-Token": await anna.locator('meta[name="csrf-token"]').get_attribute("content"),
        "Accept": "application/json"})
    assert response.status == 409 and "Lena" in (await response.json())["error"]
    await anna_context.close()
    await lena_context.close()


# The desktop notification is the operating system's: the page's calls are recorded instead.
RECORD_NOTIFICATIONS = """
localStorage.setItem("payrescue-notify", "1");
window.__notes = [];
window.Notification = class {
  constructor(title, options) {
    window.__notes.push([title, options.body]);
    const seen = document.createElement("output");  // something a locator can wait for
    seen.className = "test-notification";
    seen.textContent = title;
    document.body.appendChild(seen);
  }
};
window.Notification.permission = "granted";
window.Notification.requestPermission = async () => "granted";
"""


async def test_a_new_handoff_reaches_an_agent_on_any_page_and_overdue_ticks(service, browser,
                                                                            shots):
    svc = service
    _user, member_id = await _prepare(svc)
    context, page = await _signed_in(browser, svc, "anna@example.org",
                                     viewport={"width": 1280, "height": 800})
    await context.add_init_script(RECORD_NOTIFICATIONS)
    await page.clock.install()
    await page.goto(svc.base_url + "/console/dashboard")
    assert not await page.locator("#waiting-count").is_visible()

    # on the dashboard: the tab title, the navigation and a notification naming the member
    conversation_id = await _member_asks_for_a_human(svc, member_id)
    await page.locator("#waiting-count", has_text="1").wait_for(timeout=WAIT_MS)
    assert (await page.title()).startswith("(1) ")
    await page.locator("output.test-notification").wait_for(timeout=WAIT_MS)
    [(title, body)] = await page.evaluate("window.__notes")
    assert title == "Neu in der Warteschlange: Mia Muster"
    assert body == "Wollte mit dem Team sprechen"  # the handoff reason, in German

    # the queue: waiting times move on and the SLA highlight comes without a reload
    await page.goto(svc.base_url + "/console/queue")
    await page.clock.run_for(1000)  # the page's first look at the queue (a 250 ms debounce)
    await page.locator("#waiting-count", has_text="1").wait_for(timeout=WAIT_MS)
    row = page.locator(f'#queue-rows tr[data-conversation="{conversation_id}"]')
    assert await row.locator(".since").inner_text() == "0 Min."  # German, as the server says
    assert not await row.locator(".overdue-badge").is_visible()
    await page.clock.run_for(16 * 60 * 1000)  # the browser's clock: 16 minutes on
    await row.locator(".since", has_text="16 Min.").wait_for(timeout=WAIT_MS)
    assert "overdue" in (await row.get_attribute("class") or "")
    assert await row.locator(".overdue-badge").is_visible()
    await page.locator("output.test-notification",
                       has_text="Wartet schon zu lange").wait_for(timeout=WAIT_MS)

    # "n" takes the next waiting conversation, "?" lists the shortcuts
    await page.keyboard.press("n")
    await page.wait_for_url(f"**/console/conversations/{conversation_id}")
    await page.keyboard.press("?")
    assert await page.locator("#shortcuts").is_visible()
    await context.close()


async def test_the_console_works_on_a_phone(service, browser, shots):
    svc = service
    user, member_id = await _prepare(svc)
    conversation_id = await _member_asks_for_a_human(svc, member_id)
    await _more_handoffs(svc)
    context, page = await _signed_in(browser, svc, "anna@example.org",
                                     viewport={"width": 390, "height": 844},
                                     is_mobile=True, has_touch=True)
    wide = "document.scrollingElement.scrollWidth"
    await page.locator("#queue-rows tr[data-conversation]").nth(2).wait_for(timeout=WAIT_MS)
    await page.screenshot(path=str(shots / "console-queue-phone.png"))
    assert await page.evaluate(wide) <= 390  # nothing to scroll sideways

    row = page.locator(f'#queue-rows tr[data-conversation="{conversation_id}"]')
    await row.locator("button[type=submit]").click()
    await page.wait_for_url("**/console/conversations/*")
    assert await page.evaluate(wide) <= 390
    transcript = await page.locator("#transcript").bounding_box()
    assert transcript["width"] >= 300  # the chat takes the width
    assert not await page.locator("aside.context dl").first.is_visible()  # folded away
    before = len(svc.emulator.sent_messages(user["id"]))
    await page.fill("#reply", "Hallo vom Handy")
    await page.locator("form.reply button.primary").tap()
    await page.locator(".line.agent .delivery").first.wait_for(timeout=WAIT_MS)
    assert (await _delivered(svc, user["id"], before + 1))[-1]["text"] == "Hallo vom Handy"
    await page.screenshot(path=str(shots / "console-conversation-phone.png"))
    await page.locator("aside.context summary").tap()
    assert await page.locator("aside.context dl").first.is_visible()
    await context.close()
