"""Actions on the payment beside the case: retry the charge (Stripe, through the official
library against the stand-in), pause the reminders, settle outside the system — each on
the member's timeline."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from payrescue import dunning
from payrescue.config import Settings
from payrescue.db.models import Message, Outbox, RecoveryCase
from tests.billing.conftest import STRIPE_KEY, standin  # noqa: F401 - the stand-in fixture
from tests.handoff.conftest import log_in

JSON = {"Accept": "application/json"}


@pytest.fixture
def settings(settings: Settings, standin) -> Settings:  # noqa: ANN001, F811
    server, _state = standin
    return settings.model_copy(update={
        "stripe_api_key": SecretStr(STRIPE_KEY),
        "stripe_api_base": str(server.make_url("")).rstrip("/")})


async def _claimed(make_client, world):  # noqa: ANN001, ANN202
    await world.agent()
    conversation_id = await world.conversation(chat_id=5001)
    client = await make_client()
    token = await log_in(client)
    await client.post(f"/console/conversations/{conversation_id}/claim",
                      data={"csrf_token": token})
    return client, token, conversation_id


async def _entries(world, kind: str) -> list[Message]:  # noqa: ANN001
    async with world.sessionmaker() as db:
        return list(await db.scalars(select(Message).where(Message.kind == kind)))


async def test_retry_pays_the_open_invoice_through_stripe(make_client, world, standin):  # noqa: F811
    _server, state = standin
    client, token, conversation_id = await _claimed(make_client, world)
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert 'id="retry-charge"' in page
    response = await client.post(f"/console/conversations/{conversation_id}/case/retry",
                                 data={"csrf_token": token}, headers=JSON)
    assert (await response.json())["ok"] is True
    assert state.paid_invoices == ["in_5001"]
    [entry] = await _entries(world, "case.retry")
    assert entry.agent_id is not None and entry.data is None
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert "Anna asked the payment provider to retry the charge now" in page

    state.decline_pay = True  # declined at once: recorded, the webhook brings the details
    await client.post(f"/console/conversations/{conversation_id}/case/retry",
                      data={"csrf_token": token}, headers=JSON)
    assert (await _entries(world, "case.retry"))[1].data == {"declined": True,
                                                             "code": "card_declined"}


async def test_pause_holds_the_reminders_for_n_days(make_client, world, settings):
    client, token, conversation_id = await _claimed(make_client, world)
    response = await client.post(f"/console/conversations/{conversation_id}/case/pause",
                                 data={"days": "5", "csrf_token": token}, headers=JSON)
    assert (await response.json())["ok"] is True
    for days in ("0", "61", "x"):
        response = await client.post(f"/console/conversations/{conversation_id}/case/pause",
                                     data={"days": days, "csrf_token": token}, headers=JSON)
        assert response.status == 409
    [entry] = await _entries(world, "case.paused")
    assert entry.data["days"] == 5
    async with world.sessionmaker() as db:
        case = await db.scalar(select(RecoveryCase))
        assert case.reminders_paused_until == world.clock.now() + timedelta(days=5)
    for later, queued in ((timedelta(0), 0), (timedelta(days=5, hours=1), 1)):  # then it goes
        async with world.sessionmaker() as db:
            await dunning.reconcile(db, settings, world.clock.now() + later)
            await db.commit()
            assert await db.scalar(select(func.count()).select_from(Outbox)) == queued
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert "Anna paused the reminders for 5 days" in page


async def test_settled_outside_closes_the_case_as_recovered_by_the_agent(make_client, world,
                                                                          bus):
    client, token, conversation_id = await _claimed(make_client, world)
    empty = await client.post(f"/console/conversations/{conversation_id}/case/settle",
                              data={"reason": "  ", "csrf_token": token}, headers=JSON)
    assert empty.status == 409
    async with bus.subscribe() as events:
        response = await client.post(f"/console/conversations/{conversation_id}/case/settle",
                                     data={"reason": "Überweisung am 3. Mai",
                                           "csrf_token": token}, headers=JSON)
        assert (await response.json())["ok"] is True
        topics = [(await events.get()) for _ in range(2)]
    assert [(e.topic, e.data.get("change")) for e in topics] == [
        ("message.created", None), ("case.changed", "recovered")]
    async with world.sessionmaker() as db:
        case = await db.scalar(select(RecoveryCase))
    assert (case.status, case.attribution, case.recovered_amount_minor) == (
        "recovered", "agent", 2900)
    [entry] = await _entries(world, "case.settled")
    assert entry.data == {"reason": "Überweisung am 3. Mai"}
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert "marked the case as paid outside PayRescue" in page
    assert 'id="case-actions"' not in page  # nothing left to do on a closed case
    again = await client.post(f"/console/conversations/{conversation_id}/case/settle",
                              data={"reason": "twice", "csrf_token": token}, headers=JSON)
    assert again.status == 409
