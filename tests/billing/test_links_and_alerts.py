"""Update links (signed, tracked, sent on to the right page) and the gateway-fault alarm."""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from payrescue.billing import cases
from payrescue.billing.alerts import raise_configuration_alert, release_alert
from payrescue.billing.links import create_update_link
from payrescue.db import create_engine
from payrescue.db.models import Alert, Member, Outbox, PaymentEvent, RecoveryCase, UpdateLink
from tests.billing.conftest import (
    billing_app,
    invoice,
    mp_transaction,
    post_mp,
    post_stripe,
    stripe_event,
)
from tests.billing.stripe_standin import payment_intent


async def _link_for_first_case(session, settings, clock) -> tuple[RecoveryCase, str]:  # noqa: ANN001
    case = await session.scalar(select(RecoveryCase))
    url = await create_update_link(session, case, settings, clock.now())
    await session.commit()
    return case, url


async def test_stripe_link_opens_a_fresh_portal_session_and_is_counted(
        client, session, clock, billing_settings, standin):
    _, state = standin
    await post_stripe(client, stripe_event("invoice.payment_failed", invoice(), clock.now()))
    member = await session.scalar(select(Member))
    member.language = "de"
    await session.commit()
    case, url = await _link_for_first_case(session, billing_settings, clock)
    assert url.startswith("http://127.0.0.1:8080/u/") and "@" not in url

    path = url.removeprefix("http://127.0.0.1:8080")
    first = await client.get(path, allow_redirects=False)
    second = await client.get(path, allow_redirects=False)

    assert first.status == 302
    assert first.headers["Location"].startswith("https://billing.stripe.com/p/session/test_")
    assert first.headers["Location"] != second.headers["Location"]  # created at click time
    request = state.portal_requests[0]
    assert request["customer"] == "cus_Anna"
    assert request["flow_data[type]"] == "payment_method_update"
    assert request["locale"] == "de"
    link = await session.scalar(select(UpdateLink))
    await session.refresh(link)
    assert link.open_count == 2 and link.first_opened_at == clock.now()


async def test_tampered_and_expired_links_show_a_friendly_page(
        client, session, clock, billing_settings):
    await post_mp(client, mp_transaction("transaction-failed", 11, created=clock.now()))
    member = await session.scalar(select(Member))
    member.language = "de"
    await session.commit()
    _, url = await _link_for_first_case(session, billing_settings, clock)
    path = url.removeprefix("http://127.0.0.1:8080")

    opened = await client.get(path, allow_redirects=False)
    assert opened.status == 302
    assert opened.headers["Location"] == (
        "https://members.example.org/account/?action=update&sub=77")

    last = path[-1]
    tampered = await client.get(path[:-1] + ("A" if last != "A" else "B"),
                                headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert tampered.status == 404
    page = await tampered.text()
    assert "This link doesn&#39;t work" in page or "This link doesn't work" in page
    assert 'href="https://t.me/payrescue_test_bot?start=newlink"' in page

    await clock.advance(timedelta(days=8).total_seconds())
    expired = await client.get(path)
    assert expired.status == 410
    assert "abgelaufen" in await expired.text()  # the member's language, not the browser's
    link = await session.scalar(select(UpdateLink))
    await session.refresh(link)
    assert link.open_count == 1


async def test_action_required_link_goes_to_the_hosted_invoice(
        client, session, clock, billing_settings):
    await post_stripe(client, stripe_event("invoice.payment_action_required", invoice(),
                                           clock.now()))
    _, url = await _link_for_first_case(session, billing_settings, clock)
    response = await client.get(url.removeprefix("http://127.0.0.1:8080"),
                                allow_redirects=False)
    assert response.headers["Location"] == "https://invoice.stripe.com/i/acct_test/in_1Abc"


async def test_portal_failure_shows_try_again_page(client, session, clock, billing_settings,
                                                   standin):
    _, state = standin
    await post_stripe(client, stripe_event("invoice.payment_failed", invoice(), clock.now()))
    _, url = await _link_for_first_case(session, billing_settings, clock)
    state.fail_with = 500
    response = await client.get(url.removeprefix("http://127.0.0.1:8080"))
    assert response.status == 503
    # the member of a German Stripe account (account_country DE) reads German
    assert "erneut versuchen" in (await response.text()).lower()


def _processing_error_failure(number: int, clock):  # noqa: ANN001, ANN202
    intent = payment_intent(f"pi_{number}", decline_code=None, code="processing_error")
    return stripe_event("invoice.payment_failed", invoice(
        f"in_{number}", customer=f"cus_{number}", email=f"m{number}@example.org",
        subscription=f"sub_{number}", basil=False, payment_intent=intent), clock.now())


async def test_gateway_fault_alarm_holds_reminders_until_released(client, session, clock, bus):
    async with bus.subscribe() as queue:
        for number in range(4):
            await post_stripe(client, _processing_error_failure(number, clock))
            await clock.advance(60)
        assert await session.scalar(select(func.count()).select_from(Alert)) == 0
        await post_stripe(client, _processing_error_failure(4, clock))
        topics = [queue.get_nowait().topic for _ in range(queue.qsize())]

    alert = await session.scalar(select(Alert))
    assert alert.kind == "gateway_fault" and alert.details["count"] == 5
    assert "alert.raised" in topics
    held = list(await session.scalars(select(RecoveryCase).where(RecoveryCase.held)))
    assert len(held) == 5
    message = await session.scalar(select(Outbox).where(Outbox.kind == "alert"))
    assert (message.chat_id, message.priority, message.status) == (-100500, 0, "queued")
    assert "5" in message.payload["text"]

    released = await release_alert(session, alert.id, "admin@example.org", clock.now())
    await session.commit()
    assert {e.data.get("change") for e in released.events if e.topic == "case.changed"} == {
        "released"}
    assert await session.scalar(select(func.count()).select_from(RecoveryCase)
                                .where(RecoveryCase.held)) == 0


async def test_provider_retries_succeeding_release_the_alarm(client, session, clock):
    for number in range(5):
        await post_stripe(client, _processing_error_failure(number, clock))
    for number in range(5):
        paid = invoice(f"in_{number}", customer=f"cus_{number}", email=f"m{number}@example.org",
                       subscription=f"sub_{number}", paid=True)
        await post_stripe(client, stripe_event("invoice.paid", paid,
                                               clock.now() + timedelta(hours=1)))
    alert = await session.scalar(select(Alert))
    assert alert.released_by == "provider retries"


async def test_one_successful_retry_releases_the_reminders_of_the_others(client, session,
                                                                         clock):
    for number in range(5):
        await post_stripe(client, _processing_error_failure(number, clock))
    paid = invoice("in_0", customer="cus_0", email="m0@example.org", subscription="sub_0",
                   paid=True)
    await post_stripe(client, stripe_event("invoice.paid", paid, clock.now() + timedelta(hours=1)))
    alert = await session.scalar(select(Alert))
    assert alert.released_by == "provider retries"
    still_open = list(await session.scalars(select(RecoveryCase).where(
        RecoveryCase.status == "open")))
    assert len(still_open) == 4 and not any(case.held for case in still_open)


async def test_configuration_error_alarms_at_once(client, session, clock):
    intent = payment_intent("pi_cfg", decline_code=None, code="api_key_expired")
    await post_stripe(client, stripe_event("invoice.payment_failed", invoice(
        basil=False, payment_intent=intent), clock.now()))
    alert = await session.scalar(select(Alert))
    assert alert.kind == "provider_configuration"
    case = await session.scalar(select(RecoveryCase))
    assert case.held


def _outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "payrescue.billing.http" and r.levelno == logging.WARNING]


async def test_database_down_answers_503_and_stores_nothing(billing_settings, clock, bus,
                                                            backend, tmp_path, caplog):
    url = (f"sqlite+aiosqlite:///{tmp_path}/missing/dir/db.sqlite3" if backend == "sqlite"
           else "postgresql+asyncpg://postgres@127.0.0.1:1/test")
    engine = create_engine(url)
    try:
        app = billing_app(billing_settings, engine, clock, bus)
        async with TestClient(TestServer(app)) as down:
            burst = [stripe_event("invoice.payment_failed", invoice(f"in_{n}"), clock.now())
                     for n in range(8)]  # arriving together, they would share a batch
            responses = await asyncio.gather(*(post_stripe(down, e) for e in burst))
            assert [r.status for r in responses] == [503] * 8
            assert all(["retry" in (await r.json())["error"] for r in responses])
    finally:
        await engine.dispose()
    [line] = _outage_lines(caplog)  # one line for the outage, not one per refused event
    assert line.startswith("database unavailable")


# SQLite only: its database comes back by creating the file, PostgreSQL's needs a server restart
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_log_says_once_how_many_events_were_refused_when_the_database_is_back(
        billing_settings, clock, bus, backend, tmp_path, sqlite_template, caplog):  # noqa: ANN001
    missing = tmp_path / "not-yet"
    engine = create_engine(f"sqlite+aiosqlite:///{missing}/db.sqlite3")
    try:
        async with TestClient(TestServer(billing_app(billing_settings, engine, clock, bus))) as c:
            for n in range(5):  # a provider retrying while the database is away
                event = stripe_event("invoice.payment_failed", invoice(f"in_{n}"), clock.now())
                assert (await post_stripe(c, event)).status == 503
            missing.mkdir()
            shutil.copy(sqlite_template, missing / "db.sqlite3")
            event = stripe_event("invoice.payment_failed", invoice("in_0"), clock.now())
            assert (await post_stripe(c, event)).status == 200
            event = stripe_event("invoice.payment_failed", invoice("in_1"), clock.now())
            assert (await post_stripe(c, event)).status == 200
    finally:
        await engine.dispose()
    assert [line.split(":")[0] for line in _outage_lines(caplog)] == [
        "database unavailable", "database back"]
    assert "5 payment events were answered 503" in _outage_lines(caplog)[1]


async def test_full_service_routes_webhooks(billing_settings, engine, clock, bus, session):
    from payrescue.app import init_app

    app = init_app(billing_settings, clock=clock, bus=bus, engine=engine, with_bot=False)
    async with TestClient(TestServer(app)) as full:
        response = await post_stripe(full, stripe_event("invoice.payment_failed", invoice(),
                                                        clock.now()))
        assert response.status == 200, await response.text()
    assert await session.scalar(select(func.count()).select_from(PaymentEvent)) == 1


# SQLite has one writer at a time: the race cannot happen there
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_two_processes_raising_the_same_alarm_at_once_raise_one(
        sessionmaker, session, clock, billing_settings):  # noqa: ANN001
    """Two service processes (two transactions) blaming the configuration at the same
    moment: one alert, one admin message."""
    member = Member(email="anna@example.org", created_at=clock.now(), member_since=clock.now())
    session.add(member)
    await session.flush()
    failures = [cases.Failure(f"in_{n}", clock.now(), 2900, "eur") for n in (1, 2)]
    session.add_all([cases.new_case(member.id, None, "stripe", f, clock.now()) for f in failures])
    await session.commit()

    async def raise_in_own_transaction(invoice_ref: str) -> None:
        async with sessionmaker() as own, own.begin():
            case = await own.scalar(select(RecoveryCase).where(
                RecoveryCase.invoice_ref == invoice_ref))
            await raise_configuration_alert(own, billing_settings, "stripe", case,
                                            "api_key_expired", clock.now())

    await asyncio.gather(raise_in_own_transaction("in_1"), raise_in_own_transaction("in_2"))

    alerts = list(await session.scalars(select(Alert)))
    assert len(alerts) == 1
    assert sorted(alerts[0].details["case_ids"]) == sorted(
        await session.scalars(select(RecoveryCase.id)))
    assert await session.scalar(select(func.count()).select_from(Outbox)) == 1
