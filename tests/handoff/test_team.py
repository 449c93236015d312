"""Admins end other people's sessions, disable and enable accounts, and see the provider
events that could not be read."""

from __future__ import annotations

from payrescue import agents
from payrescue.billing import rejected
from tests.handoff.conftest import PASSWORD, csrf_of, log_in


async def _stolen_copy(make_client, client):  # noqa: ANN001, ANN202
    thief = await make_client()
    thief.session.cookie_jar.update_cookies({c.key: c.value for c in client.session.cookie_jar})
    return thief


async def test_disabling_ends_every_session_and_refuses_the_next_log_in(make_client, world):
    anna_id = await world.agent()
    await world.agent("root@example.org", name="Root", role="admin")
    anna, admin = await make_client(), await make_client()
    await log_in(anna)
    thief = await _stolen_copy(make_client, anna)
    token = await log_in(admin, "root@example.org")
    page = await (await admin.get("/console/team")).text()
    assert "anna@example.org" in page
    response = await admin.post(f"/console/team/{anna_id}/disable", data={"csrf_token": token},
                                allow_redirects=False)
    assert response.status == 303
    for browser in (anna, thief):
        assert (await browser.get("/console/queue", allow_redirects=False)).status == 303
    login_token = await csrf_of(anna)
    refused = await anna.post("/console/login", data={
        "email": "anna@example.org", "password": PASSWORD, "csrf_token": login_token})
    assert refused.status == 401
    assert "E-mail address or password is wrong." in await refused.text()
    await admin.post(f"/console/team/{anna_id}/enable", data={"csrf_token": token})
    await log_in(anna)


async def test_the_cli_s_disable_ends_a_replayed_cookie(make_client, world):
    await world.agent()
    client = await make_client()
    await log_in(client)
    thief = await _stolen_copy(make_client, client)
    assert (await thief.get("/console/queue", allow_redirects=False)).status == 200
    async with world.sessionmaker() as db, db.begin():  # what `payrescue agents disable` does
        await agents.set_disabled(db, "anna@example.org", world.clock.now())
    assert (await thief.get("/console/queue", allow_redirects=False)).status == 303


async def test_an_admin_signs_someone_out_everywhere(make_client, world):
    anna_id = await world.agent()
    await world.agent("root@example.org", name="Root", role="admin")
    anna, admin = await make_client(), await make_client()
    await log_in(anna)
    token = await log_in(admin, "root@example.org")
    await admin.post(f"/console/team/{anna_id}/sign-out", data={"csrf_token": token})
    assert (await anna.get("/console/queue", allow_redirects=False)).status == 303
    assert (await admin.get("/console/queue", allow_redirects=False)).status == 200
    await log_in(anna)  # not disabled: a new log-in works


async def test_admins_cannot_disable_themselves_and_agents_cannot_manage(make_client, world):
    await world.agent()
    root_id = await world.agent("root@example.org", name="Root", role="admin")
    agent, admin = await make_client(), await make_client()
    agent_token = await log_in(agent)
    token = await log_in(admin, "root@example.org")
    response = await admin.post(f"/console/team/{root_id}/disable", data={"csrf_token": token})
    assert response.status == 409
    assert (await agent.get("/console/team")).status == 403
    response = await agent.post(f"/console/team/{root_id}/disable",
                                data={"csrf_token": agent_token})
    assert response.status == 403


async def test_unreadable_events_show_a_banner_to_admins_until_seen(make_client, world):
    await world.agent()
    await world.agent("root@example.org", name="Root", role="admin", language="de")
    async with world.sessionmaker() as db, db.begin():
        for number in range(2):
            await rejected.record(db, "stripe", b'{"id": "evt_%d"}' % number,
                                  "invoice.currency: expected a three-letter code",
                                  world.clock.now())
    agent, admin = await make_client(), await make_client()
    await log_in(agent)
    await log_in(admin, "root@example.org")
    assert "/console/rejected-events" not in await (await agent.get("/console/queue")).text()
    page = await (await admin.get("/console/queue")).text()
    assert "2 Zahlungsereignisse aus Ihrem Abrechnungssystem" in page
    listing = await (await admin.get("/console/rejected-events")).text()
    assert "evt_1" in listing and "invoice.currency: expected a three-letter code" in listing
    assert "/console/rejected-events" not in await (await admin.get("/console/queue")).text()
    assert (await agent.get("/console/rejected-events")).status == 403


async def _held_alarm(world) -> tuple[int, int]:  # noqa: ANN001
    """A gateway alarm holding one member's reminders, as billing raises it."""
    from payrescue.db.models import Alert, Member, RecoveryCase

    now = world.clock.now()
    async with world.sessionmaker() as db, db.begin():
        member = Member(email="held@example.org", name="Held Member", created_at=now)
        db.add(member)
        await db.flush()
        case = RecoveryCase(member_id=member.id, provider="stripe", invoice_ref="in_held",
                            amount_minor=2900, currency="EUR", held=True, opened_at=now,
                            last_failure_at=now, updated_at=now,
                            decline_category="processing_error")
        db.add(case)
        await db.flush()
        alert = Alert(kind="gateway_fault", provider="stripe", raised_at=now,
                      details={"count": 5, "window_minutes": 10, "case_ids": [case.id]})
        db.add(alert)
    return alert.id, case.id


async def test_an_admin_releases_the_held_reminders_from_the_banner(make_client, world):
    from payrescue.db.models import Alert, RecoveryCase

    alert_id, case_id = await _held_alarm(world)
    await world.agent()
    await world.agent("root@example.org", name="Root", role="admin")
    anna, admin = await make_client(), await make_client()
    anna_token = await log_in(anna)
    token = await log_in(admin, "root@example.org")
    page = await (await admin.get("/console/queue")).text()
    assert "reminder to 1 member is on hold" in page
    assert f'action="/console/alerts/{alert_id}/release"' in page
    assert "on hold" not in await (await anna.get("/console/queue")).text()
    refused = await anna.post(f"/console/alerts/{alert_id}/release",
                              data={"csrf_token": anna_token}, allow_redirects=False)
    assert refused.status in (303, 403)
    response = await admin.post(f"/console/alerts/{alert_id}/release",
                                data={"csrf_token": token}, allow_redirects=False)
    assert response.status == 303
    async with world.sessionmaker() as db:
        assert not (await db.get(RecoveryCase, case_id)).held
        alert = await db.get(Alert, alert_id)
        assert alert.released_at is not None and alert.released_by.startswith("agent ")
    assert "on hold" not in await (await admin.get("/console/queue")).text()
    assert (await admin.post("/console/alerts/999999/release", data={"csrf_token": token},
                             allow_redirects=False)).status == 404


def _link_path(page: str) -> str:
    code = page.split('id="password-link"', 1)[1].split("<code>", 1)[1].split("</code>", 1)[0]
    assert code.startswith("http://127.0.0.1:8080/console/set-password/")
    return code.removeprefix("http://127.0.0.1:8080")


async def _set_password(client, path: str, password: str):  # noqa: ANN001, ANN202
    token = await csrf_of(client, path)
    return await client.post(path, data={"new": password, "again": password,
                                         "csrf_token": token}, allow_redirects=False)


async def test_an_admin_invites_a_person_who_sets_their_password_once(make_client, world):
    await world.agent("root@example.org", name="Root", role="admin")
    admin, lena = await make_client(), await make_client()
    token = await log_in(admin, "root@example.org")
    page = await (await admin.post("/console/team/invite", data={
        "name": "Lena Koch", "email": "Lena@Example.org", "role": "agent", "language": "de",
        "csrf_token": token})).text()
    path = _link_path(page)
    assert "lena@example.org" in page and "Lena" not in path
    twice = await admin.post("/console/team/invite", data={
        "name": "L", "email": "lena@example.org", "role": "agent", "language": "de",
        "csrf_token": token})
    assert twice.status == 409

    welcome = await (await lena.get(path)).text()
    assert "Lena Koch" in welcome
    response = await _set_password(lena, path, "lenas new password")
    assert response.status == 303
    await log_in(lena, "lena@example.org", "lenas new password")
    again = await make_client()
    assert (await again.get(path)).status == 410  # once only
    assert (await _set_password(again, path, "another password!")).status == 410
    assert (await again.get("/console/set-password/not-a-token")).status == 410


async def test_reset_ends_sessions_and_the_old_password(make_client, world):
    anna_id = await world.agent()
    await world.agent("root@example.org", name="Root", role="admin")
    anna, admin = await make_client(), await make_client()
    await log_in(anna)
    token = await log_in(admin, "root@example.org")
    page = await (await admin.post(f"/console/team/{anna_id}/reset-password",
                                   data={"csrf_token": token})).text()
    path = _link_path(page)
    assert (await anna.get("/console/queue", allow_redirects=False)).status == 303
    login_token = await csrf_of(anna)
    refused = await anna.post("/console/login", data={
        "email": "anna@example.org", "password": PASSWORD, "csrf_token": login_token})
    assert refused.status == 401
    assert (await _set_password(anna, path, "short")).status == 400
    assert (await _set_password(anna, path, "annas fresh password")).status == 303
    await log_in(anna, "anna@example.org", "annas fresh password")


async def test_an_admin_sets_role_language_and_limit(make_client, world):
    anna_id = await world.agent()
    root_id = await world.agent("root@example.org", name="Root", role="admin")
    admin, anna = await make_client(), await make_client()
    token = await log_in(admin, "root@example.org")
    response = await admin.post(f"/console/team/{anna_id}/edit", allow_redirects=False, data={
        "role": "admin", "language": "de", "max_open": "8", "csrf_token": token})
    assert response.status == 303
    async with world.sessionmaker() as db:
        anna_row = await db.get(agents.Agent, anna_id)
    assert (anna_row.role, anna_row.language, anna_row.max_open) == ("admin", "de", 8)
    for bad in ({"role": "boss"}, {"max_open": "0"}, {"max_open": "51"}, {"language": "fr"}):
        form = {"role": "agent", "language": "en", "max_open": "5", "csrf_token": token} | bad
        assert (await admin.post(f"/console/team/{anna_id}/edit", data=form)).status == 400
    own = await admin.post(f"/console/team/{root_id}/edit", data={
        "role": "agent", "language": "en", "max_open": "5", "csrf_token": token})
    assert own.status == 409  # an admin never locks themselves out of the team page
    agent_token = await log_in(anna)  # an agent now promoted; demote her and she loses it
    await admin.post(f"/console/team/{anna_id}/edit", data={
        "role": "agent", "language": "de", "max_open": "8", "csrf_token": token})
    refused = await anna.post("/console/team/invite", data={
        "name": "X", "email": "x@example.org", "role": "admin", "language": "en",
        "csrf_token": agent_token}, allow_redirects=False)
    assert refused.status in (303, 403)
