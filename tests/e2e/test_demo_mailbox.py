"""`make demo` for a member without Telegram, as a newcomer tries it: a failed payment → the
German e-mail in the demo mailbox (with its QR code) → a reply from the mailbox's reply box
through PayRescue's own SMTP receiver → in the console's queue; the payment recovers → the
thank-you e-mail."""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.demo_process import free_port_pair, payrescue, start_demo

MIA = "mia.muster@demo.payrescue.test"


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - the local demo
        return response.status, response.read()


def _mails(base: str, count: int, timeout: float = 60) -> list[str]:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = _get(base + "/demo/mailbox")[1].decode()
        found = re.findall(r'href="/demo/mailbox/(\d+)">([^<]+)</a>', page)
        if len(found) >= count:
            return [subject for _n, subject in sorted(found)]
        time.sleep(0.3)
    raise AssertionError(f"fewer than {count} e-mails in the demo mailbox")


def test_a_member_without_telegram_in_the_demo(tmp_path: Path) -> None:
    port = free_port_pair()
    demo = start_demo(tmp_path, PAYRESCUE_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        assert f"{base}/demo/mailbox" in demo.line("Mailbox:")
        failed = payrescue(tmp_path, "simulate", "failed-payment", "--demo", "--member", MIA,
                           "--reason", "expired_card", PAYRESCUE_PORT=str(port))
        assert failed.returncode == 0, failed.stderr
        assert _mails(base, 1) == ["Ihre Zahlung hat leider nicht geklappt"]

        status, page = _get(base + "/demo/mailbox/1")
        html = page.decode()
        assert status == 200
        assert "Hallo Mia," in html and "Zahlungsdaten aktualisieren" in html
        assert "Lieber im Chat klären? Schreiben Sie uns auf Telegram." in html
        assert re.search(r"https://t\.me/payrescue_demo_bot\?start=[\w-]+", html)
        assert _get(base + "/demo/mailbox/1/cid/telegram-qr")[1].startswith(b"\x89PNG")

        token = re.search(r'name="token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        form = urllib.parse.urlencode({"token": token, "text": "Kann ich pausieren?"}).encode()
        with urllib.request.urlopen(base + "/demo/mailbox/1/reply", data=form,  # noqa: S310
                                    timeout=30) as response:
            assert "Your reply was sent" in response.read().decode()
        with sqlite3.connect(tmp_path / "data" / "demo" / "payrescue.sqlite3") as db:
            [(text, status, reasons)] = db.execute(
                "SELECT m.text, c.status, c.handoff_reasons FROM messages m "
                "JOIN conversations c ON c.id = m.conversation_id WHERE m.kind = 'email'")
        assert (text, status) == ("Kann ich pausieren?", "waiting")
        assert "wrote_by_email" in reasons

        # the e-mail's button → the billing system's card page → pay → the thank-you e-mail
        update = re.search(r'href="(http://127\.0\.0\.1:\d+/u/[\w-]+)"', html).group(1)  # type: ignore[union-attr]
        with urllib.request.urlopen(update, timeout=30) as account:  # noqa: S310
            page = account.read().decode()
            assert "/demo/account/" in account.url
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page))
        with urllib.request.urlopen(base + "/demo/account/pay", timeout=30,  # noqa: S310
                                    data=urllib.parse.urlencode(fields).encode()):
            pass
        assert _mails(base, 2)[1] == "Vielen Dank – Ihre Zahlung ist angekommen"
    finally:
        assert demo.stop() == 0
