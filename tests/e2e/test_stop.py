"""Stopping the service while an agent has the console open: the live streams end at once
(the browser reconnects by itself), instead of holding the stop up for aiohttp's whole
shutdown timeout (a minute: past `docker stop`'s grace, which then kills the process)."""

from __future__ import annotations

import http.cookiejar
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.demo_process import free_port_pair, start_demo

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def test_an_open_console_does_not_hold_up_the_stop(tmp_path: Path) -> None:
    port = free_port_pair()
    demo = start_demo(tmp_path, PAYRESCUE_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    browser = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    try:
        with browser.open(base + "/console/login", timeout=30) as page:
            token = CSRF.search(page.read().decode()).group(1)  # type: ignore[union-attr]
        form = urllib.parse.urlencode({"email": "admin@demo.payrescue.test", "csrf_token": token,
                                       "password": demo.password}).encode()
        with browser.open(base + "/console/login", data=form, timeout=30) as page:
            assert "/console/login" not in page.url  # signed in
        stream = urllib.request.Request(  # noqa: S310 - the local demo
            base + "/console/stream/queue", headers={"Accept": "text/event-stream"})
        streams = [browser.open(stream, timeout=30) for _tab in range(2)]  # two tabs
        assert all(s.status == 200 for s in streams)
    except BaseException:
        demo.stop()
        raise
    started = time.monotonic()
    assert demo.stop() == 0
    assert time.monotonic() - started < 10
    for stream in streams:
        stream.read()  # ended by the server, not left hanging
        stream.close()
