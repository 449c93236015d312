"""Messages follow the payment truth, not the arrival: the whole service, Stripe events posted
out of order, the member's chat in the emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.notifier import Notifier
from payrescue.clock import FakeClock
from payrescue.db.models import RecoveryCase, Subscription
from payrescue.keys import BUS
from payrescue.outage import keep_running
from tests.billing.conftest import WHSEC, invoice, sign_stripe, stripe_event, subscription
from tests.conversations.helpers import (
    advance,
    linked_member,
    outbox_rows,
    stop_notifier,
    wait_for_rows,
)
from tests.harness import RunningService, running_service

DAY = timedelta(days=1)


@pytest.fixture
async def svc(engine: AsyncEngine, clock: FakeClock, tmp_path: Path
              ) -> AsyncIterator[RunningService]:
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               stripe_webhook_secret=WHSEC) as service:
        yield service


async def _post(svc: RunningService, event: dict[str, Any]) -> str:
    body = json.dumps(event).encode()
    async with aiohttp.ClientSession() as http, http.post(
            f"{svc.base_url}/webhooks/stripe", data=body,
            headers={"Stripe-Signature": sign_stripe(body)}) as response:
        assert response.status == 200
        return (await response.json())["status"]


def _failed(email: str, at: datetime, attempt: int = 1) -> dict[str, Any]:
    return stripe_event("invoice.payment_failed", invoice(
        "in_A", customer="cus_A", email=email, subscription="sub_A", attempt_count=attempt,
        next_attempt=at + 3 * DAY), at)


def _paid(email: str, at: datetime) -> dict[str, Any]:
    return stripe_event("invoice.paid", invoice("in_A", customer="cus_A", email=email,
                                                subscription="sub_A", paid=True), at)


async def _case(svc: RunningService) -> RecoveryCase:
    async with svc.sessionmaker() as session:
        return await session.scalar(select(RecoveryCase))


async def test_subscription_deleted_before_its_failures_arrive_tells_the_member_nothing(
        svc) -> None:
    member, chat = await linked_member(svc)
    greeted = len(svc.emulator.sent_messages(chat))
    t0 = svc.clock.now() - 2 * DAY
    deleted = stripe_event("customer.subscription.deleted", subscription(
        "sub_A", status="canceled", customer="cus_A", ended_at=t0 + DAY), t0 + DAY)
    assert await _post(svc, deleted) == "parked"  # nobody knows cus_A yet: kept, not dropped
    assert await _post(svc, _failed(member.email, t0)) == "processed"

    case = await _case(svc)
    assert (case.status, case.lost_at) == ("lost", t0 + DAY)
    async with svc.sessionmaker() as session:
        sub = await session.scalar(select(Subscription))
        assert (sub.status, sub.ended_at) == ("canceled", t0 + DAY)
    # every step of the plan falls due: still no "your access stays active", no reminder,
    # and no "your membership has ended" to someone never told of a problem
    await advance(svc, case, seconds=13 * DAY.total_seconds())
    await asyncio.sleep(0.2)
    assert len(svc.emulator.sent_messages(chat)) == greeted
    assert await outbox_rows(svc, member_id=member.id, kind="reminder") == []


async def test_a_notice_queued_then_withdrawn_is_no_contact_so_no_thanks(
        engine, tmp_path) -> None:
    # 23:00 in Berlin: the failure notice waits for the morning (quiet hours)
    clock = FakeClock(datetime(2026, 1, 5, 22, 0, tzinfo=UTC))
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               stripe_webhook_secret=WHSEC) as svc:
        member, chat = await linked_member(svc)
        greeted = len(svc.emulator.sent_messages(chat))
        await _post(svc, _failed(member.email, clock.now() - timedelta(minutes=5)))
        [notice] = await wait_for_rows(svc, 1, kind="reminder")
        assert notice.not_before > clock.now()
        await _post(svc, _paid(member.email, clock.now()))
        await wait_for_rows(svc, 1, kind="reminder", status="cancelled")
        case = await _case(svc)
        assert case.status == "recovered"
        await advance(svc, case, to=datetime(2026, 1, 6, 9, 0, tzinfo=UTC))
        await asyncio.sleep(0.2)
        # the member never heard of the failure: no "thank you, your payment came in"
        assert len(svc.emulator.sent_messages(chat)) == greeted
        assert [r for r in await outbox_rows(svc, member_id=member.id) if r.kind == "bot"] == []


async def test_the_notifier_withdraws_a_reminder_the_case_no_longer_calls_for(svc) -> None:
    member, chat = await linked_member(svc)
    greeted = len(svc.emulator.sent_messages(chat))
    await stop_notifier(svc)
    await _post(svc, _failed(member.email, svc.clock.now()))
    [notice] = await wait_for_rows(svc, 1, kind="reminder")
    # the payment lands between queueing and sending (written before the reconciler ran)
    async with svc.sessionmaker() as session, session.begin():
        case = await session.get(RecoveryCase, notice.case_id)
        case.status, case.recovered_at = "recovered", svc.clock.now()
    notifier = Notifier(svc.bot, svc.sessionmaker, svc.app[BUS], svc.clock, svc.settings)
    runner = asyncio.create_task(keep_running(notifier))
    try:
        [withdrawn] = await wait_for_rows(svc, 1, kind="reminder", status="cancelled")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert withdrawn.id == notice.id
    assert len(svc.emulator.sent_messages(chat)) == greeted
