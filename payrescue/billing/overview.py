"""One place that shows the payment truth: a member's subscriptions, each with its status and
its cases, each case with its events in provider-time order.

Read by `payrescue cases` (table or JSON) and the console's member panel. Which event belongs
to which case is decided by the same replay that derived the cases (`history.replay`), so
what is shown is what the state was derived from, never a second guess.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.billing import history
from payrescue.db.models import Member, PaymentEvent, RecoveryCase, Subscription

MAX_MEMBERS = 500  # without --member: the most recent members with a subscription


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _event(row: PaymentEvent) -> dict[str, Any]:
    return {"occurred_at": _when(row.occurred_at), "type": row.event_type, "kind": row.kind,
            "event_id": row.event_id, "outcome": row.outcome}


def _case(case: RecoveryCase, events: list[PaymentEvent]) -> dict[str, Any]:
    return {"id": case.id, "invoice": case.invoice_ref, "status": case.status,
            "amount_minor": case.amount_minor, "currency": case.currency,
            "attempts": case.attempt_count, "decline_category": case.decline_category,
            "opened_at": _when(case.opened_at), "recovered_at": _when(case.recovered_at),
            "lost_at": _when(case.lost_at), "attribution": case.attribution,
            "events": [_event(row) for row in events]}


async def member_overview(session: AsyncSession, member: Member) -> dict[str, Any]:
    subscriptions = list(await session.scalars(
        select(Subscription).where(Subscription.member_id == member.id)
        .order_by(Subscription.id)))
    stored = list(await session.scalars(
        select(RecoveryCase).where(RecoveryCase.member_id == member.id)
        .order_by(RecoveryCase.opened_at, RecoveryCase.id)))
    shown: set[int] = set()
    out = []
    for sub in subscriptions:
        entry = await _subscription(session, member, sub, stored)
        shown |= {case["id"] for case in entry["cases"]}
        out.append(entry)
    lone = [_case(c, []) for c in stored if c.id not in shown]  # one-off invoices
    return {"id": member.id, "email": member.email, "name": member.name,
            "subscriptions": out, "cases_without_subscription": lone}


async def _subscription(session: AsyncSession, member: Member, sub: Subscription,
                        stored: list[RecoveryCase]) -> dict[str, Any]:
    _, rows = await history.history(session, sub.provider, sub.external_id, None)
    by_id = {row.event_id: row for row in rows}
    facts = sorted((history.fact_of(row) for row in rows), key=history.order_key)
    result = history.replay(facts, member_id=member.id, subscription_id=sub.id,
                            provider=sub.provider, now=member.created_at)
    mine = [c for c in stored if c.subscription_id == sub.id]
    cases, placed = [], set()
    for derived in result.cases:
        row = next((c for c in mine if c.invoice_ref in derived.refs), None)
        if row is None:
            continue
        events = [by_id[f.event_id] for f in facts
                  if result.belongs.get(f.event_id) is derived]
        placed |= {e.event_id for e in events}
        cases.append(_case(row, events))
    return {"provider": sub.provider, "subscription": sub.external_id,
            "plan": sub.plan_name, "status": sub.status, "ended_at": _when(sub.ended_at),
            "cases": cases,
            "other_events": [_event(by_id[f.event_id]) for f in facts
                             if f.event_id not in placed]}


async def overview(session: AsyncSession, email: str | None = None) -> list[dict[str, Any]]:
    """Every member with a subscription or a case (or the one with `email`)."""
    query = select(Member)
    if email is not None:
        query = query.where(Member.email == email.strip().lower())
    else:
        has_any = select(Subscription.member_id).union(select(RecoveryCase.member_id))
        query = query.where(Member.id.in_(has_any)).order_by(Member.id.desc()).limit(MAX_MEMBERS)
    members = list(await session.scalars(query))
    return [await member_overview(session, m) for m in sorted(members, key=lambda m: m.id)]


def as_table(members: list[dict[str, Any]]) -> str:
    """Plain text for a terminal: one block per member."""
    lines: list[str] = []
    for member in members:
        lines.append(f"{member['email']}  ({member['name'] or '-'})")
        for sub in member["subscriptions"]:
            ended = f", ended {sub['ended_at']}" if sub["ended_at"] else ""
            lines.append(f"  {sub['provider']} {sub['subscription']}  {sub['plan'] or '-'}  "
                         f"{sub['status']}{ended}")
            for case in sub["cases"]:
                lines.extend(_case_lines(case, "    "))
            for event in sub["other_events"]:
                lines.append(f"    · {event['occurred_at']}  {event['type']}")
        for case in member["cases_without_subscription"]:
            lines.extend(_case_lines(case, "  "))
        lines.append("")
    return "\n".join(lines)


def _case_lines(case: dict[str, Any], indent: str) -> list[str]:
    closed = case["recovered_at"] or case["lost_at"]
    head = (f"{indent}case {case['id']} {case['invoice']}: {case['status']}, "
            f"{case['amount_minor']} {case['currency']}, {case['attempts']} attempt(s), "
            f"opened {case['opened_at']}" + (f", closed {closed}" if closed else "")
            + (f", {case['attribution']}" if case["attribution"] else ""))
    return [head] + [f"{indent}  {e['occurred_at']}  {e['type']}" for e in case["events"]]
