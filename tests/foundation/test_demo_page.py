"""The demo's billing page drives the whole loop: failed payment → bot → "pay" → thanks."""

from __future__ import annotations

import re

import aiohttp

from payrescue.clock import FakeClock
from payrescue.demo_page import setup_demo_page
from tests.conversations.helpers import linked_member
from tests.harness import running_service

DEMO_SECRET = "demo-generic-secret-for-the-test-0123456789"


def _form_token(page: str) -> str:
    match = re.search(r'name="token" value="([^"]+)"', page)
    assert match, "the page has a form token"
    return match.group(1)


async def test_fail_then_pay_through_the_demo_pages(engine, tmp_path) -> None:
    async with running_service(engine=engine, clock=FakeClock(), data_dir=tmp_path,
                               generic_api_secret=DEMO_SECRET,
                               extend_app=setup_demo_page) as svc:
        member, chat = await linked_member(svc, language="de")
        async with aiohttp.ClientSession(svc.base_url) as http:
            page = await (await http.get("/demo")).text()
            assert "Anna Schmidt" in page
            fired = await http.post("/demo/simulate", allow_redirects=False, data={
                "token": _form_token(page), "member_id": str(member.id),
                "reason": "expired_card", "action": "failed-payment"})
            assert fired.status == 303
            shown = await (await http.get(fired.headers["Location"])).text()
            assert f"failed-payment sent for member {member.id}" in shown
            messages = await svc.emulator.wait_for_messages(chat, 2)
            notice = messages[-1]
            assert "abgelaufen" in notice["plain_text"]
            link = notice["reply_markup"]["inline_keyboard"][0][0]["url"]
            assert link.startswith(svc.settings.public_url("/u/"))

            account = await http.get(link.removeprefix(svc.base_url))
            assert "/demo/account/" in str(account.url)
            body = await account.text()
            assert "29,00\xa0€" in body
            paid = await http.post("/demo/account/pay", allow_redirects=False, data={
                "token": _form_token(body), "member": str(member.id)})
            assert paid.status == 303
            thanks = (await svc.emulator.wait_for_messages(chat, 3))[-1]
            assert "Vielen Dank" in thanks["plain_text"]

            forged = await http.post("/demo/simulate", data={
                "token": "forged", "member_id": str(member.id), "action": "recovered"})
            assert forged.status == 403
