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
