"""docs/billing.md and the code agree on the provider events: every event type the code reads
has a row in its provider's table (what to enable, what PayRescue does with it), every row
names a type the code reads, and `payrescue simulate event` can send each one."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from payrescue.billing import memberpress, simulate, stripe_events
from payrescue.billing import signals as s
from payrescue.config import load_settings
from payrescue.db.models import RecoveryCase
from tests.conftest import TEST_SECRET

DOCS = Path(__file__).parents[2] / "docs" / "billing.md"
_ROW = re.compile(r"^\| `([a-z0-9_.-]+)` \| (.+) \|$")


def documented(section: str) -> dict[str, str]:
    """The event rows of one `## section` of docs/billing.md: type → what it does."""
    text = DOCS.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [_ROW.match(line) for line in body.splitlines()]
    return {m[1]: m[2] for m in rows if m}


@pytest.mark.parametrize(("section", "code"), [("Stripe", stripe_events.EVENT_TYPES),
                                               ("MemberPress", memberpress.EVENT_TYPES)])
def test_the_docs_table_lists_exactly_the_events_the_code_reads(section, code):
    table = documented(section)
    assert sorted(set(code) - table.keys()) == [], "read, but not documented"
    assert sorted(table.keys() - set(code)) == [], "documented, but not read"
    assert all(len(what) > 20 for what in table.values()), "say what the service does"


_NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_TARGET = simulate.Target("anna@example.org", "cus_sim_1", "sub_sim_1", "in_sim_1", 2900, "EUR")
_MP_TARGET = simulate.Target("max@example.org", "56", "77", "901", 2900, "EUR", attempt=2)


@pytest.mark.parametrize("event_type", sorted(stripe_events.EVENT_TYPES))
def test_simulate_sends_every_stripe_event_the_service_reads(event_type):
    [body] = simulate.build_events("stripe", "event", _TARGET, "expired_card", _NOW,
                                   event_type=event_type)
    signal = stripe_events.parse(json.dumps(body).encode())
    assert signal.event_type == event_type
    assert signal.kind != s.IGNORED
    assert signal.member.customer_id == "cus_sim_1"


@pytest.mark.parametrize("event_type", sorted(memberpress.EVENT_TYPES))
def test_simulate_sends_every_memberpress_event_the_service_reads(event_type, tmp_path):
    settings = load_settings(data_dir=tmp_path, secret_key=TEST_SECRET,
                             memberpress_webhook_key="k" * 16)
    [body] = simulate.build_events("memberpress", "event", _MP_TARGET, "", _NOW,
                                   event_type=event_type)
    signal = memberpress.parse(json.dumps(body).encode(), settings, _NOW)
    assert signal.event_type == event_type
    assert signal.kind != s.IGNORED


def test_simulate_refuses_an_event_the_service_does_not_read():
    with pytest.raises(simulate.SimulationError, match="does not read"):
        simulate.build_events("stripe", "event", _TARGET, "", _NOW, event_type="customer.created")


async def test_simulate_event_takes_the_real_path(client, session, clock, billing_settings):
    base = str(client.make_url("/")).rstrip("/")

    async def fire(event_type: str | None, action: str = "event") -> list[int]:
        results = await simulate.trigger(session, billing_settings, action=action,
                                         event_type=event_type, email="sim@example.org",
                                         base_url=base, now=clock.now(), provider="stripe")
        await session.commit()  # see what the service wrote
        return [status for _name, status, _text in results]

    assert await fire(None, "failed-payment") == [200, 200]
    assert await fire("invoice.marked_uncollectible") == [200]
    case = await session.scalar(select(RecoveryCase))
    assert (case.status, case.decline_category) == ("lost", "insufficient_funds")
