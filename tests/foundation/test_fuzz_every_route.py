"""Every route of the service, anonymous and signed in, against generated bad input.

The routes come from the router table of the application `init_app` builds (with the bot in
webhook mode, every payment provider configured, metrics on and the demo's pages), so a new
route is fuzzed without touching this file. Hypothesis generates, per route and client,
broken forms and multiparts, non-UTF-8 and NUL-laden text, JSON nested or sized beyond
reason, correctly signed nonsense for the machine endpoints, non-ASCII in every header,
ids beyond 64 bits and dates out of range. Whatever arrives: no 5xx, and no log record
with a traceback.

Hypothesis only generates here (a sync `@given` collects the requests); the requests go out
afterwards through a real HTTP client, so the whole walk stays within a minute per database.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payrescue import agents
from payrescue.demo_page import setup_demo_page
from tests.billing.conftest import sign_generic, sign_stripe
from tests.handoff.conftest import CSRF, PASSWORD, World
from tests.harness import WEBHOOK_SECRET, running_service

EXAMPLES_PER_ROUTE = 40  # per client (anonymous, signed in): about 3,500 requests in all
MP_KEY = "fuzz-memberpress-key-0123456789"
API_SECRET = "fuzz-generic-secret-0123456789"
WHSEC = "whsec_fuzz_0123456789"
METRICS_TOKEN = "fuzz-metrics-token-0123456789"
_PART = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


# --- what the generated requests are made of ---------------------------------------------

_nasty_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "\x00", "a\x00b", "é", "²", "١٢", "𝟙", "\ud800", "0", "-1",
                     "99999999999999999999", str(2**63), str(2**63 - 1), "1e400", "NaN",
                     "0001-01-01", "9999-12-30", "9999-12-31T23:59", "2026-13-45",
                     "<script>alert(1)</script>", "' OR 1=1 --", "%", "_", "../../etc"]),
    st.integers(-(2**70), 2**70).map(str),
)
# real ids often, so handlers are reached with the rest of the bad input
_ids = st.one_of(st.sampled_from(["1", "1", "2", "3"]), st.integers(0, 5).map(str),
                 st.integers(-(2**70), 2**70).map(str), _nasty_text)
_QUERY_KEYS = ["view", "q", "from", "to", "days", "edit", "next", "after", "status",
               "category", "currency", "attribution", "comma", "member", "paid", "note"]
_FORM_KEYS = ["email", "password", "next", "text", "until", "agent_id", "available",
              "shortcut", "language", "title", "body", "id", "current", "new", "again",
              "token", "member_id", "member", "action", "reason"]
_HEADER_NAMES = ["Accept", "Accept-Language", "Last-Event-ID", "X-CSRF-Token", "Origin",
                 "Sec-Fetch-Site", "Stripe-Signature", "PayRescue-Signature",
                 "MEMBERPRESS-WEBHOOK-KEY", "X-Telegram-Bot-Api-Secret-Token",
                 "Authorization", "Content-Type", "Referer", "User-Agent"]
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False)
    | _nasty_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["id", "type", "event", "data", "object", "created",
                                       "occurred_at", "member", "amount", "currency",
                                       "update_id", "message", "text", "chat"]) | st.text(
                          max_size=8), children, max_size=5),
    max_leaves=15,
)


def _header_value(text: str) -> str:
    # what an HTTP client can send at all: no line breaks, no NUL, no lone surrogates
    cleaned = "".join(c for c in text if c not in "\r\n\x00" and not 0xD800 <= ord(c) <= 0xDFFF)
    return cleaned.strip() or "x"


@st.composite
def _body(draw: st.DrawFn, path: str, csrf: str) -> tuple[bytes | None, dict[str, str]]:
    """A body and the headers that go with it."""
    kind = draw(st.sampled_from(["form", "form", "multipart", "broken-multipart", "bytes",
                                 "json", "signed", "deep", "huge", "none"]))
    if kind in ("form", "multipart"):
        fields = draw(st.dictionaries(st.sampled_from(_FORM_KEYS) | st.text(max_size=6),
                                      _nasty_text, max_size=6))
        if draw(st.booleans()):
            fields["csrf_token"] = csrf  # past the CSRF check, into the handler
        if kind == "form":
            encoded = "&".join(f"{quote(k.encode('utf-8', 'surrogatepass'))}="
                               f"{quote(v.encode('utf-8', 'surrogatepass'))}"
                               for k, v in fields.items())
            return encoded.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
        parts = b"".join(
            b"--b0undary\r\nContent-Disposition: form-data; name=\"" + quote(k).encode()
            + b"\"\r\n\r\n" + v.encode("utf-8", "surrogatepass") + b"\r\n"
            for k, v in fields.items())
        return parts + b"--b0undary--\r\n", {
            "Content-Type": "multipart/form-data; boundary=b0undary"}
    if kind == "broken-multipart":
        return draw(st.binary(max_size=60)), {
            "Content-Type": draw(st.sampled_from(["multipart/form-data",
                                                  "multipart/form-data; boundary=x",
                                                  "application/x-www-form-urlencoded; "
                                                  "charset=bogus"]))}
    if kind == "bytes":
        return draw(st.binary(max_size=200)), {"Content-Type": draw(st.sampled_from(
            ["application/x-www-form-urlencoded", "application/json", "text/plain"]))}
    if kind in ("json", "signed"):
        body = json.dumps(draw(_json)).encode()
        headers = {"Content-Type": "application/json"}
        if kind == "signed":  # correctly signed for whichever machine endpoint this is
            headers.update({"Stripe-Signature": sign_stripe(body, WHSEC),
                            "PayRescue-Signature": sign_generic(body, API_SECRET),
                            "MEMBERPRESS-WEBHOOK-KEY": MP_KEY,
                            "X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET})
        return body, headers
    if kind == "deep":
        depth = draw(st.sampled_from([65, 1000, 100_000]))
        return b"[" * depth + b"]" * depth, {"Content-Type": "application/json",
                                             "X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
    if kind == "huge":
        return b"x" * (1024 * 1024 + draw(st.integers(1, 100))), {}
    return None, {}


def _fill(template: str, values: list[str]) -> str:
    parts = iter(values)
    return _PART.sub(lambda _m: quote(next(parts).encode("utf-8", "surrogatepass"), safe=""),
                     template)


def generate(method: str, template: str, csrf: str) -> list[Call]:
    """EXAMPLES_PER_ROUTE requests for one route, generated by Hypothesis."""
    calls: list[Call] = []
    slots = len(_PART.findall(template))

    @settings(max_examples=EXAMPLES_PER_ROUTE, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(values=st.lists(_ids, min_size=slots, max_size=slots),
           query=st.dictionaries(st.sampled_from(_QUERY_KEYS) | st.text(max_size=5),
                                 _nasty_text, max_size=4),
           headers=st.dictionaries(st.sampled_from(_HEADER_NAMES),
                                   _nasty_text.map(_header_value), max_size=4),
           body=_body(template, csrf), with_csrf_header=st.booleans())
    def collect(values: list[str], query: dict[str, str], headers: dict[str, str],
                body: tuple[bytes | None, dict[str, str]], with_csrf_header: bool) -> None:
        payload, body_headers = body if method == "POST" else (None, {})
        if with_csrf_header and csrf:
            headers = {**headers, "X-CSRF-Token": csrf}
        calls.append(Call(method, _fill(template, values), query,
                          {**headers, **body_headers}, payload))

    collect()
    return calls


def routes_of(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path template) for every route the application serves."""
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        if template is None:  # the static files: one plain GET is enough
            template = info.get("prefix", "") + "/{name}"
        methods = ["GET", "POST"] if route.method == "*" else [route.method]
        for method in methods:
            if method != "HEAD":
                yield method, template


# --- the walk ----------------------------------------------------------------------------


class Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


async def _send(client: aiohttp.ClientSession, base: str, call: Call) -> int | None:
    try:
        async with client.request(call.method, base + call.path, params=call.query,
                                  headers=call.headers,
                                  data=io.BytesIO(call.body) if call.body is not None else None,
                                  allow_redirects=False) as response:
            if response.content_type != "text/event-stream":  # a live stream never ends
                await response.read()
            return response.status
    except ValueError:  # a header or URL the client itself refuses to send
        return None


async def _csrf(client: aiohttp.ClientSession, url: str) -> str:
    return CSRF.search(await (await client.get(url)).text()).group(1)


async def _sign_in(client: aiohttp.ClientSession, base: str) -> str:
    token = await _csrf(client, base + "/console/login")
    response = await client.post(base + "/console/login", allow_redirects=False, data={
        "email": "root@example.org", "password": PASSWORD, "csrf_token": token})
    assert response.status == 303, await response.text()
    return await _csrf(client, base + "/console/queue")


@pytest.fixture(autouse=True)
def quick_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    from argon2 import PasswordHasher

    monkeypatch.setattr(agents, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024,
                                                          parallelism=1))


async def test_no_route_answers_5xx_or_logs_a_traceback(engine, clock, tmp_path):
    async with running_service(
            engine=engine, clock=clock, webhook=True, data_dir=tmp_path,
            extend_app=setup_demo_page, stripe_webhook_secret=WHSEC,
            memberpress_webhook_key=MP_KEY, generic_api_secret=API_SECRET,
            metrics_token=METRICS_TOKEN) as svc:
        world = World(svc.sessionmaker, clock)
        await world.agent("root@example.org", name="Root", role="admin")
        await world.agent()
        await world.conversation()
        tracebacks = Tracebacks()
        logging.getLogger().addHandler(tracebacks)
        failures: list[str] = []
        timeout = aiohttp.ClientTimeout(total=20)
        try:
            async with aiohttp.ClientSession(timeout=timeout, cookie_jar=_jar()) as anonymous, \
                    aiohttp.ClientSession(timeout=timeout, cookie_jar=_jar()) as agent:
                routes = sorted(set(routes_of(svc.app)))
                assert ("POST", "/telegram/webhook") in routes  # the whole service
                for method, template in routes:
                    await clock.advance(301)  # a new rate-limit window for the log-ins
                    csrf = await _sign_in(agent, svc.base_url)  # the last route may log out
                    # a visitor's token too: the log-in form needs one
                    visitor = await _csrf(anonymous, svc.base_url + "/console/login")
                    for client, token in ((anonymous, visitor), (agent, csrf)):
                        for call in generate(method, template, token):
                            status = await _send(client, svc.base_url, call)
                            if status is not None and status >= 500:
                                failures.append(f"{status} {call.method} {call.path} "
                                                f"{call.query} {call.headers} "
                                                f"{(call.body or b'')[:120]!r}")
        finally:
            logging.getLogger().removeHandler(tracebacks)
    assert not failures, "\n".join(failures[:20])
    assert not tracebacks.records, [
        (r.name, r.getMessage(), r.exc_info[1]) for r in tracebacks.records[:10]]


def _jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)  # keeps cookies of an IP address such as 127.0.0.1
