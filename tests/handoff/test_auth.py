"""Log-in, log-out, lock-out, password change, roles, CSRF and security headers."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from argon2 import PasswordHasher

from payrescue import agents
from payrescue.db.models import Agent
from payrescue.keys import SESSIONMAKER
from tests.handoff.conftest import PASSWORD, csrf_of, log_in

PAGES = ["/console/queue", "/console/queue/rows", "/console/canned", "/console/password",
         "/console/conversations/1", "/console/media/1"]
STREAMS = ["/console/stream/queue", "/console/stream/conversations/1",
           "/console/api/conversations/1/canned"]
POSTS = ["/console/availability", "/console/canned", "/console/canned/1/delete",
         "/console/password"] + [f"/console/conversations/1/{action}" for action in (
             "claim", "reply", "note", "typing", "resolve", "hand-back", "to-queue", "transfer",
             "snooze", "update-link")]


async def test_every_route_refuses_a_visitor_without_a_session(make_client, world):
    await world.conversation()
    client = await make_client()
    for path in PAGES:
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/console/login?next="), path
    for path in STREAMS:
        response = await client.get(path, headers={"Accept": "text/event-stream"})
        assert response.status == 401, path
    token = await csrf_of(client)
    for path in POSTS:
        response = await client.post(path, data={"csrf_token": token}, allow_redirects=False)
        assert response.status == 401, path


async def test_a_post_without_csrf_token_is_refused(make_client, world):
    await world.agent()
    conversation_id = await world.conversation()
    client = await make_client()
    token = await log_in(client)
    for forged in ({}, {"csrf_token": "forged"}):
        response = await client.post(f"/console/conversations/{conversation_id}/claim",
                                     data=forged, allow_redirects=False)
        assert response.status == 403
    response = await client.post(f"/console/conversations/{conversation_id}/claim",
                                 headers={"X-CSRF-Token": token, "Accept": "application/json"})
    assert response.status == 200
    # the login form is protected too (no login CSRF)
    fresh = await make_client()
    response = await fresh.post("/console/login", data={"email": "anna@example.org",
                                                        "password": PASSWORD})
    assert response.status == 403


async def test_log_in_log_out_and_cookie_flags(make_client, world):
    await world.agent()
    client = await make_client()
    token = await csrf_of(client)
    response = await client.post("/console/login", allow_redirects=False, data={
        "email": "Anna@Example.org ", "password": PASSWORD, "csrf_token": token,
        "next": "https://evil.example/"})
    assert response.status == 303
    assert response.headers["Location"] == "/console/queue"  # never off-site
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert (await client.get("/console/queue")).status == 200
    token = await csrf_of(client, "/console/queue")
    await client.post("/console/logout", data={"csrf_token": token})
    response = await client.get("/console/queue", allow_redirects=False)
    assert response.status == 303


async def _try(client, email: str, password: str):  # noqa: ANN202
    token = await csrf_of(client)
    return await client.post("/console/login", allow_redirects=False, data={
        "email": email, "password": password, "csrf_token": token})


def _error_of(page: str) -> str:
    return page.split('role="alert">', 1)[1].split("</p>", 1)[0]


async def test_lock_out_after_five_wrong_passwords_answers_like_a_wrong_password(
        make_client, world):
    await world.agent()
    client = await make_client()
    unknown = await _try(client, "nobody@example.org", PASSWORD)
    for _attempt in range(5):
        response = await _try(client, "anna@example.org", "wrong password")
        assert response.status == 401
    locked = await _try(client, "anna@example.org", PASSWORD)
    assert locked.status == 401  # even the right password waits out the lock
    # the locked account answers exactly like an address that does not exist
    assert _error_of(await locked.text()) == _error_of(await unknown.text()) \
        == "E-mail address or password is wrong."
    assert "locked for 15 minutes" in await locked.text()  # the rule, told to everyone
    await world.clock.advance(16 * 60)
    await log_in(client)


async def test_unknown_e_mail_gets_the_same_answer(make_client, world):
    client = await make_client()
    response = await _try(client, "nobody@example.org", PASSWORD)
    assert response.status == 401
    assert "E-mail address or password is wrong." in await response.text()


async def test_thirty_parallel_guesses_get_five_tries_and_the_right_one_is_refused(
        make_client, world):
    agent_id = await world.agent()
    browsers = [await make_client() for _ in range(31)]
    tokens = [await csrf_of(browser) for browser in browsers]

    async def guess(browser, token, password):  # noqa: ANN001, ANN202
        return (await browser.post("/console/login", allow_redirects=False, data={
            "email": "anna@example.org", "password": password, "csrf_token": token})).status

    statuses = await asyncio.gather(*(
        guess(browser, token, f"wrong guess {n}")
        for n, (browser, token) in enumerate(zip(browsers[:30], tokens[:30], strict=True))))
    assert set(statuses) <= {401, 429}
    assert await guess(browsers[30], tokens[30], PASSWORD) in {401, 429}
    async with world.sessionmaker() as db:
        agent = await db.get(Agent, agent_id)
    assert agent.locked_until is not None


async def test_too_many_tries_from_one_client_are_slowed_down(make_client, world):
    client = await make_client()
    statuses = [(await _try(client, f"guess{n}@example.org", "whatever")).status
                for n in range(21)]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429
    assert "Too many sign-in attempts" in await (await _try(client, "x@example.org", "y")).text()
    await world.clock.advance(5 * 60)
    assert (await _try(client, "again@example.org", "whatever")).status == 401


async def test_password_checks_run_outside_the_event_loop(make_client, world, monkeypatch):
    agent_id = await world.agent()
    threads = []

    class Recording(PasswordHasher):
        def verify(self, *args):  # noqa: ANN002, ANN202
            threads.append(threading.get_ident())
            return super().verify(*args)

    monkeypatch.setattr(agents, "_hasher", Recording(time_cost=1, memory_cost=1024,
                                                     parallelism=1))
    async with world.sessionmaker() as db, db.begin():  # a hash by the recording hasher
        (await db.get(Agent, agent_id)).password_hash = agents.hash_password(PASSWORD)
    await log_in(await make_client())
    await _try(await make_client(), "nobody@example.org", "whatever")
    assert len(threads) == 2
    assert threading.get_ident() not in threads


async def test_a_copied_cookie_is_worthless_after_log_out(make_client, world):
    await world.agent()
    client = await make_client()
    token = await log_in(client)
    stolen = {c.key: c.value for c in client.session.cookie_jar}
    await client.post("/console/logout", data={"csrf_token": token})
    thief = await make_client()
    thief.session.cookie_jar.update_cookies(stolen)
    response = await thief.get("/console/queue", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/console/login")


async def test_sessions_end_when_idle_and_at_their_absolute_end(make_client, world):
    await world.agent()
    client = await make_client()
    await log_in(client)
    await world.clock.advance(119 * 60)
    assert (await client.get("/console/queue", allow_redirects=False)).status == 200
    await world.clock.advance(121 * 60)  # two hours without a request
    assert (await client.get("/console/queue", allow_redirects=False)).status == 303
    await log_in(client)
    for _hour in range(11):  # busy all day: each request keeps it alive …
        await world.clock.advance(60 * 60)
        assert (await client.get("/console/queue", allow_redirects=False)).status == 200
    await world.clock.advance(60 * 60)  # … until 12 hours after the log-in
    assert (await client.get("/console/queue", allow_redirects=False)).status == 303


async def test_sign_out_everywhere_ends_every_browser(make_client, world):
    await world.agent()
    laptop, phone = await make_client(), await make_client()
    token = await log_in(laptop)
    await log_in(phone)
    response = await laptop.post("/console/sign-out-everywhere", data={"csrf_token": token},
                                 allow_redirects=False)
    assert response.status == 303
    for browser in (laptop, phone):
        assert (await browser.get("/console/queue", allow_redirects=False)).status == 303


async def test_password_change_ends_other_sessions(make_client, world):
    await world.agent()
    laptop, phone = await make_client(), await make_client()
    token = await log_in(laptop)
    await log_in(phone)
    response = await laptop.post("/console/password", data={
        "current": PASSWORD, "new": "a brand new secret", "again": "a brand new secret",
        "csrf_token": token})
    assert response.status == 200
    assert (await laptop.get("/console/queue")).status == 200
    assert (await phone.get("/console/queue", allow_redirects=False)).status == 303
    # the laptop's cookie from before the change is dead too
    assert 'name="csrf_token"' in await (await laptop.get("/console/password")).text()
    await log_in(await make_client(), password="a brand new secret")


async def test_password_change_refuses_a_short_one(make_client, world):
    await world.agent()
    client = await make_client()
    token = await log_in(client)
    response = await client.post("/console/password", data={
        "current": PASSWORD, "new": "short", "again": "short", "csrf_token": token})
    assert response.status == 400
    assert "at least 10 characters" in await response.text()


async def test_agents_cannot_reach_admin_pages(make_client, world):
    await world.agent()
    await world.agent("root@example.org", name="Root", role="admin")
    agent, admin = await make_client(), await make_client()
    await log_in(agent)
    await log_in(admin, "root@example.org")
    assert (await agent.get("/console/canned")).status == 403
    assert (await admin.get("/console/canned")).status == 200
    assert "/console/canned" not in await (await agent.get("/console/queue")).text()


async def test_security_headers_and_local_assets_only(make_client, world):
    client = await make_client()
    response = await client.get("/console/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = await response.text()
    assert "<script>" not in page and "http://" not in page and "https://" not in page
    assert (await client.get("/console/static/console.js")).status == 200


@pytest.mark.parametrize("language, greeting", [("de", "Warteschlange"), ("en", "Queue")])
async def test_the_console_speaks_the_agent_s_language(make_client, world, language, greeting):
    await world.agent(language=language)
    client = await make_client()
    await log_in(client)
    assert greeting in await (await client.get("/console/queue")).text()


async def test_availability_toggle(make_client, world, app_state=None):
    agent_id = await world.agent()
    client = await make_client()
    token = await log_in(client)
    await client.post("/console/availability", data={"available": "1", "csrf_token": token})
    async with world.sessionmaker() as db:
        from payrescue.db.models import Agent

        assert (await db.get(Agent, agent_id)).available is True
    assert SESSIONMAKER  # the app shares the test's database


async def test_the_lock_counts_every_parallel_try_in_the_database(world):
    """Below the rate limit: 30 tries racing on the database, each in its own transaction,
    get exactly five chances between them."""
    agent_id = await world.agent()

    async def charge():  # noqa: ANN202
        async with world.sessionmaker() as db, db.begin():
            return await agents.charge_login_attempt(db, "Anna@example.org", world.clock.now())

    attempts = await asyncio.gather(*(charge() for _ in range(30)))
    assert sum(attempt is not None for attempt in attempts) == agents.MAX_FAILED_LOGINS
    async with world.sessionmaker() as db:
        agent = await db.get(Agent, agent_id)
    assert agent.locked_until == world.clock.now() + timedelta(minutes=agents.LOCK_MINUTES)
