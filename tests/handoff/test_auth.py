"""Log-in, log-out, lock-out, password change, roles, CSRF and security headers."""

from __future__ import annotations

import pytest

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


async def test_wrong_password_and_lock_out_with_a_clear_message(make_client, world):
    await world.agent()
    client = await make_client()
    for _attempt in range(5):
        token = await csrf_of(client)
        response = await client.post("/console/login", data={
            "email": "anna@example.org", "password": "wrong password", "csrf_token": token})
        assert response.status == 401
    assert "locked for 15 more minutes" in await response.text()
    token = await csrf_of(client)
    response = await client.post("/console/login", data={
        "email": "anna@example.org", "password": PASSWORD, "csrf_token": token})
    assert response.status == 401  # even the right password waits out the lock
    await world.clock.advance(16 * 60)
    await log_in(client)


async def test_unknown_e_mail_gets_the_same_answer(make_client, world):
    client = await make_client()
    token = await csrf_of(client)
    response = await client.post("/console/login", data={
        "email": "nobody@example.org", "password": PASSWORD, "csrf_token": token})
    assert response.status == 401
    assert "E-mail address or password is wrong." in await response.text()


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
