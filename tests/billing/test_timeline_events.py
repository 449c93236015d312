"""Case events land on the member's timeline as they happen: the failure, the link being
opened and used, the recovery."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from payrescue.billing.links import create_update_link
from payrescue.db.models import Member, Message, RecoveryCase
from tests.billing.conftest import invoice, post_stripe, stripe_event


async def _timeline(session, member_id: int) -> list[tuple[str, str, str]]:  # noqa: ANN001
    rows = await session.execute(
        select(Message.sender, Message.channel, Message.kind)
        .where(Message.member_id == member_id).order_by(Message.id))
    return [tuple(row) for row in rows]


async def test_failure_link_and_recovery_are_on_the_timeline(client, session, clock,
                                                              billing_settings):
    await post_stripe(client, stripe_event("invoice.payment_failed", invoice(), clock.now()))
    member_id = await session.scalar(select(Member.id))
    case = await session.scalar(select(RecoveryCase))
    assert await _timeline(session, member_id) == [("system", "billing", "case.opened")]
    opened = await session.scalar(select(Message))
    assert opened.case_id == case.id and opened.data == {"amount_minor": case.amount_minor,
                                                         "currency": case.currency}

    url = await create_update_link(session, case, billing_settings, clock.now())
    await session.commit()
    await client.get(url.removeprefix("http://127.0.0.1:8080"), allow_redirects=False)
    await clock.advance(timedelta(minutes=5).total_seconds())
    await post_stripe(client, stripe_event("invoice.paid", invoice(paid=True), clock.now()))

    assert await _timeline(session, member_id) == [
        ("system", "billing", "case.opened"), ("system", "billing", "link.opened"),
        ("system", "billing", "link.completed"), ("system", "billing", "case.recovered")]
