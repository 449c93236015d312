"""The inputs from the hardening probe that used to answer 500: each gets a 4xx now."""

from __future__ import annotations

import pytest

from tests.handoff.conftest import csrf_of, log_in

HUGE = str(2**64 + 1)


async def test_broken_forms_and_odd_tokens_on_the_log_in_are_400_or_403(make_client, world):
    client = await make_client()
    token = await csrf_of(client)
    for body, content_type in (
            (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
            (b"garbage", "multipart/form-data"),
            (b"email=\xff\xfe&csrf_token=" + token.encode(), "application/x-www-form-urlencoded"),
            (b"email=a", "application/x-www-form-urlencoded; charset=bogus")):
        response = await client.post("/console/login", data=body,
                                      headers={"Content-Type": content_type})
        assert response.status == 400, body
    response = await client.post("/console/login", data={"email": "a@example.org",
                                                         "password": "x", "csrf_token": "é"})
    assert response.status == 403
    response = await client.post("/console/login", data={
        "email": "anna\x00@example.org", "password": "x", "csrf_token": token})
    assert response.status == 400


async def test_ids_beyond_the_database_s_integers_are_404(make_client, world):
    await world.agent()
    client = await make_client()
    token = await log_in(client)
    for path in (f"/console/conversations/{HUGE}", f"/console/media/{HUGE}",
                 f"/console/api/conversations/{HUGE}/canned",
                 f"/console/conversations/{2**31}", "/console/conversations/²"):
        assert (await client.get(path)).status == 404, path
    for action in ("claim", "resolve", "typing", "transfer", "reply", "note"):
        response = await client.post(f"/console/conversations/{HUGE}/{action}",
                                     data={"csrf_token": token})
        assert response.status == 404, action
    stream = await client.get(f"/console/stream/conversations/{HUGE}",
                              headers={"Accept": "text/event-stream"})
    assert stream.status == 404
    conversation_id = await world.conversation()
    await client.post(f"/console/conversations/{conversation_id}/claim",
                      data={"csrf_token": token})
    response = await client.post(f"/console/conversations/{conversation_id}/transfer",
                                 data={"csrf_token": token, "agent_id": HUGE},
                                 headers={"Accept": "application/json"})
    assert response.status == 409
    assert (await client.get(f"/console/canned?edit={HUGE}")).status in (200, 403)


@pytest.mark.parametrize("query", ["from=0001-01-01&to=0001-01-02",
                                   "from=9999-12-30&to=9999-12-31", "days=9999"])
async def test_dashboard_and_csv_with_absurd_dates_are_400(make_client, world, query):
    await world.agent(role="admin")
    client = await make_client()
    await log_in(client)
    for path in ("/console/dashboard", "/console/dashboard/figures.csv",
                 "/console/dashboard/cases.csv"):
        assert (await client.get(f"{path}?{query}")).status == 400, path


async def test_nul_in_a_note_a_reply_or_a_search_is_400(make_client, world):
    await world.agent()
    conversation_id = await world.conversation()
    client = await make_client()
    token = await log_in(client)
    await client.post(f"/console/conversations/{conversation_id}/claim",
                      data={"csrf_token": token})
    for action in ("note", "reply"):
        response = await client.post(f"/console/conversations/{conversation_id}/{action}",
                                     data={"csrf_token": token, "text": "hi\x00there"})
        assert response.status == 400, action
    assert (await client.get("/console/queue?q=a%00b")).status == 400


async def test_a_lost_database_is_503_and_logged_once(aiohttp_client, tmp_path, caplog):
    from payrescue.app import init_app
    from payrescue.config import load_settings
    from tests.conftest import TEST_SECRET

    gone = "postgresql+asyncpg://postgres@127.0.0.1:9/payrescue"  # nothing listens there
    settings = load_settings(data_dir=tmp_path, database_url=gone, secret_key=TEST_SECRET)
    client = await aiohttp_client(init_app(settings, with_bot=False))
    token = await csrf_of(client)  # the log-in page itself needs no database
    for _attempt in range(3):
        response = await client.post("/console/login", data={
            "email": "anna@example.org", "password": "whatever", "csrf_token": token})
        assert response.status == 503
    outage = [r for r in caplog.records if r.getMessage().startswith("database unavailable")]
    assert len(outage) == 1
