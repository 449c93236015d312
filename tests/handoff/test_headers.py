"""Security headers on every page the service serves, and the console's Origin check."""

from __future__ import annotations

from payrescue.app import init_app
from payrescue.config import load_settings
from tests.conftest import TEST_SECRET
from tests.handoff.conftest import log_in

FRAMING_AND_SNIFFING = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}


def _assert_protected(response, *, console: bool) -> None:  # noqa: ANN001
    for name, value in FRAMING_AND_SNIFFING.items():
        assert response.headers.get(name) == value, (response.url, name)
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp if console \
        else "default-src 'none'" in csp
    assert "Referrer-Policy" in response.headers


async def test_member_pages_error_pages_and_redirects_carry_the_headers(make_client):
    client = await make_client()
    link = await client.get("/u/not-a-real-token")  # the member's "link does not work" page
    assert "text/html" in link.headers["Content-Type"]
    _assert_protected(link, console=False)
    assert link.headers["Referrer-Policy"] == "no-referrer"  # the page's own, stricter one
    _assert_protected(await client.get("/no/such/page"), console=False)
    _assert_protected(await client.get("/console/no/such/page"), console=True)
    redirect = await client.get("/console/queue", allow_redirects=False)
    assert redirect.status == 303
    _assert_protected(redirect, console=True)
    _assert_protected(await client.get("/console/conversations/99999999999999999999"),
                      console=True)
    assert "Strict-Transport-Security" not in link.headers  # plain http here


async def test_https_public_url_adds_hsts_everywhere(aiohttp_client, tmp_path, database_url,
                                                     engine, clock, bus):
    settings = load_settings(data_dir=tmp_path, database_url=database_url,
                             secret_key=TEST_SECRET, public_base_url="https://rescue.example")
    client = await aiohttp_client(init_app(settings, clock=clock, bus=bus, engine=engine,
                                           with_bot=False))
    for path in ("/healthz", "/console/login", "/u/x", "/nothing-here"):
        response = await client.get(path)
        assert response.headers["Strict-Transport-Security"].startswith("max-age="), path


async def test_a_console_post_from_another_site_is_refused_even_with_the_token(
        make_client, world):
    await world.agent()
    conversation_id = await world.conversation()
    client = await make_client()
    token = await log_in(client)
    path = f"/console/conversations/{conversation_id}/claim"
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):
        response = await client.post(path, data={"csrf_token": token}, headers=headers,
                                     allow_redirects=False)
        assert response.status == 403, headers
    own = f"http://{client.host}:{client.port}"
    response = await client.post(path, data={"csrf_token": token}, allow_redirects=False,
                                 headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert response.status == 303
