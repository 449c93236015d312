"""An e-mail address that is no address, in a payment event: the member is kept (the failed
payment is not lost), marked not reachable by e-mail, and a later good address clears it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from payrescue.db.models import Member, RecoveryCase
from tests.billing.conftest import (
    invoice,
    mp_member,
    mp_transaction,
    post_generic,
    post_mp,
    post_stripe,
    stripe_event,
)

BAD = "kai at example"


async def _post(provider: str, client: Any, clock: Any, email: str, n: int = 1) -> int:
    now = clock.now()
    if provider == "stripe":
        response = await post_stripe(client, stripe_event(
            "invoice.payment_failed", invoice(f"in_{n}", email=email, customer="cus_Kai"), now))
    elif provider == "memberpress":
        response = await post_mp(client, mp_transaction(
            "recurring-transaction-failed", 900 + n, created=now,
            member=mp_member(email=email)))
    else:
        response = await post_generic(client, {
            "id": f"e{n}", "type": "failed", "occurred_at": now.isoformat(),
            "invoice": f"inv-{n}", "amount": 1500, "currency": "EUR",
            "member": {"email": email, "id": "crm-kai", "name": "Kai"},
            "subscription": {"id": "plan-7"}})
    return response.status


@pytest.mark.parametrize("provider", ["stripe", "memberpress", "generic"])
async def test_a_bad_address_keeps_the_member_unreachable_by_email(provider, client, session,
                                                                   clock) -> None:
    assert await _post(provider, client, clock, BAD) == 200
    case = await session.scalar(select(RecoveryCase))
    assert case is not None and case.status == "open"  # the failed payment is not lost
    member = await session.get(Member, case.member_id)
    assert (member.email, member.email_problem) == (BAD, "invalid")


async def test_a_changed_address_is_checked_again(client, session, clock) -> None:
    """MemberPress's member-account-updated: a good address makes the member reachable by
    e-mail again; a bad one marks them."""
    assert await _post("memberpress", client, clock, BAD) == 200
    member = await session.scalar(select(Member))
    assert member.email_problem == "invalid"
    for email, problem in (("kai@example.org", None), ("kai@@example", "invalid")):
        update = {"event": "member-account-updated", "type": "member", "data": {
            "id": 56, "email": email, "first_name": "Kai", "last_name": "Kaputt"}}
        assert (await post_mp(client, update)).status == 200
        await session.refresh(member)
        assert (member.email, member.email_problem) == (email, problem)
