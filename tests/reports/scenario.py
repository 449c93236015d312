"""A hand-made fortnight in Europe/Berlin across the switch to summer time (29 March 2026).

The period is Monday 23 March – Sunday 5 April 2026, local days: from 22 March 23:00 UTC
(midnight CET) to 5 April 22:00 UTC (midnight CEST). Every figure below is worked out by hand
in `tests/reports/test_figures.py` from the rows seeded here; the comments say which figure
each row is meant to move.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import (
    Agent,
    Conversation,
    Handoff,
    Member,
    RecoveryCase,
    Subscription,
    TelegramLink,
    UpdateLink,
)

FIRST_DAY, LAST_DAY = date(2026, 3, 23), date(2026, 4, 5)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


SEEDED = utc("2026-01-01T00:00")


async def seed(session: AsyncSession) -> None:
    """Insert the scenario; ids are fixed so the cases list can be checked too."""
    session.add_all(_members() + _agents())
    await session.flush()
    session.add_all(_subscriptions())
    await session.flush()
    session.add_all(_cases())
    await session.flush()
    session.add_all(_links() + _conversations())
    await session.flush()
    session.add_all(_handoffs())
    await session.flush()
    if session.bind.dialect.name == "postgresql":
        # rows came with fixed ids: move the sequences on so later inserts get fresh ones
        for table in ("members", "agents", "subscriptions", "recovery_cases", "update_links",
                      "conversations", "handoffs", "telegram_links"):
            await session.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"(SELECT max(id) FROM {table}))"))
    await session.commit()


def _members() -> list[Member]:
    def member(i: int, language: str | None) -> Member:
        return Member(id=i, email=f"m{i}@example.org", name=f"Member {i}", language=language,
                      created_at=SEEDED)

    # m3 has no saved language but a German Telegram app; m4 neither → the default (en)
    members = [member(1, "de"), member(2, "en"), member(3, None), member(4, None),
               member(5, "en")]
    return members + [TelegramLink(member_id=3, chat_id=3003, telegram_user_id=3003,
                                   language_code="de-DE", linked_at=SEEDED)]


def _agents() -> list[Agent]:
    return [
        Agent(id=1, email="petra@example.org", name="Petra", password_hash="x", role="agent",
              created_at=SEEDED),
        Agent(id=2, email="jonas@example.org", name="Jonas", password_hash="x", role="admin",
              created_at=SEEDED),
    ]


def _subscriptions() -> list[Subscription]:
    def sub(i: int, member_id: int, amount: int, *, started: str = "2026-01-01T00:00",
            ended: str | None = None, every: tuple[str, int] | None = None) -> Subscription:
        interval, count = every or (None, None)
        return Subscription(id=i, member_id=member_id, provider="stripe", external_id=f"sub_{i}",
                            amount_minor=amount, currency="EUR", started_at=utc(started),
                            ended_at=utc(ended) if ended else None, created_at=SEEDED,
                            interval=interval, interval_count=count)

    # s1–s5 active when the period starts; s6 starts inside it; s7 ended before it.
    # s1 bills 87.00 a quarter and s3 348.00 a year: 29.00 a month each, like the others
    return [sub(1, 1, 8700, every=("month", 3)), sub(2, 2, 4900),
            sub(3, 3, 34800, every=("year", 1)), sub(4, 4, 1500),
            sub(5, 5, 2900), sub(6, 1, 990, started="2026-03-25T00:00"),
            sub(7, 2, 990, ended="2026-03-01T00:00")]


def _case(i: int, member_id: int, subscription_id: int | None, opened: str, amount: int,
          category: str, *, currency: str = "EUR", recovered: str | None = None,
          attribution: str | None = None, recovered_amount: int | None = None,
          lost: str | None = None) -> RecoveryCase:
    status = "recovered" if recovered else "lost" if lost else "open"
    return RecoveryCase(
        id=i, member_id=member_id, subscription_id=subscription_id, provider="stripe",
        invoice_ref=f"in_{i}", status=status, amount_minor=amount, currency=currency,
        decline_category=category, opened_at=utc(opened), last_failure_at=utc(opened),
        recovered_at=utc(recovered) if recovered else None,
        recovered_amount_minor=recovered_amount, attribution=attribution,
        lost_at=utc(lost) if lost else None, updated_at=utc(opened),
    )


def _cases() -> list[RecoveryCase]:
    return [
        # 00:30 local on the first day: inside, though 22 March in UTC
        _case(1, 1, 1, "2026-03-22T23:30", 2900, "insufficient_funds",
              recovered="2026-03-24T11:30", attribution="bot"),
        _case(2, 2, 2, "2026-03-25T10:00", 4900, "expired_card",
              recovered="2026-03-25T12:00", attribution="no_contact"),
        # recovered 00:30 CEST on Monday 30 March: the second week, thanks to summer time
        _case(3, 3, 3, "2026-03-28T20:00", 2900, "insufficient_funds",
              recovered="2026-03-29T22:30", attribution="agent", recovered_amount=3100),
        _case(4, 4, 4, "2026-03-30T08:00", 1500, "issuer_declined", currency="USD",
              lost="2026-04-03T08:00"),
        _case(5, 5, 5, "2026-04-01T09:00", 2900, "expired_card"),
        # 23:30 CEST on the last day: inside
        _case(6, 1, None, "2026-04-05T21:30", 2900, "insufficient_funds"),
        # opened before the period, recovered inside it (same subscription as case 2)
        _case(7, 2, 2, "2026-03-10T10:00", 4900, "insufficient_funds",
              recovered="2026-03-23T10:00", attribution="bot"),
        # opened before, lost inside; no subscription on record
        _case(8, 3, None, "2026-03-01T10:00", 1000, "fraud", lost="2026-03-26T12:00"),
        # 23:30 on 22 March local: outside; recovered 00:30 on 6 April local: outside
        _case(9, 5, 5, "2026-03-22T22:30", 9900, "insufficient_funds",
              recovered="2026-04-05T22:30", attribution="bot"),
        # 00:30 on 6 April local: outside
        _case(10, 4, 4, "2026-04-05T22:30", 1500, "insufficient_funds"),
    ]


def _links() -> list[UpdateLink]:
    def link(i: int, case_id: int, created: str, opened: str | None) -> UpdateLink:
        return UpdateLink(id=i, token_id=f"t{i}", case_id=case_id, created_at=utc(created),
                          expires_at=utc("2026-06-01T00:00"),
                          first_opened_at=utc(opened) if opened else None,
                          open_count=1 if opened else 0)

    return [
        link(1, 1, "2026-03-23T09:00", "2026-03-24T10:00"),  # opened before recovery
        link(2, 2, "2026-03-25T10:05", None),
        link(3, 3, "2026-03-29T08:00", "2026-03-30T21:00"),  # opened after recovery
        link(4, 5, "2026-04-01T09:05", "2026-04-01T10:00"),
        link(5, 7, "2026-03-11T10:00", "2026-03-12T10:00"),  # sent before the period
    ]


def _conversations() -> list[Conversation]:
    def conversation(i: int, member_id: int, rating: int | None, resolved: str | None,
                     status: str = "bot", comment: str | None = None) -> Conversation:
        return Conversation(id=i, member_id=member_id,
                            status="resolved" if resolved else status,
                            handoff_reasons=[], rating=rating, rating_comment=comment,
                            resolved_at=utc(resolved) if resolved else None,
                            created_at=SEEDED, updated_at=SEEDED)

    return [
        conversation(1, 3, 5, "2026-03-30T09:00"),
        conversation(2, 4, 4, "2026-03-31T08:00"),
        conversation(3, 5, 2, "2026-04-01T11:00", comment="Das hat <b>zu</b> lange gedauert"),
        conversation(4, 1, None, None, status="waiting"),  # handoff 4 waits for a person
        conversation(5, 2, 1, "2026-03-20T10:00"),  # rated before the period
    ]


def _handoffs() -> list[Handoff]:
    def handoff(i: int, conversation_id: int, reasons: list[str], requested: str,
                responded: str | None, ended: str | None, agent_id: int | None) -> Handoff:
        return Handoff(id=i, conversation_id=conversation_id, reasons=reasons,
                       requested_at=utc(requested),
                       first_response_at=utc(responded) if responded else None,
                       ended_at=utc(ended) if ended else None, agent_id=agent_id,
                       outcome="resolved" if ended else None,
                       claimed_at=utc(responded) if responded else None)

    return [
        # Saturday 21:30 CET → Monday 09:30 CEST: 30 business minutes, resolved 11:00 (2 h)
        handoff(1, 1, ["asked_for_human"], "2026-03-28T20:30", "2026-03-30T07:30",
                "2026-03-30T09:00", 1),
        # Monday 16:00 → Tuesday 09:10: 60 + 10 business minutes; resolved Tuesday 10:00
        handoff(2, 2, ["large_amount", "asked_for_human"], "2026-03-30T14:00",
                "2026-03-31T07:10", "2026-03-31T08:00", 2),
        handoff(3, 3, ["not_understood"], "2026-04-01T10:00", "2026-04-01T10:05",
                "2026-04-01T11:00", 1),
        handoff(4, 4, ["not_understood"], "2026-04-02T12:00", None, None, None),  # waiting
        handoff(5, 1, ["asked_for_human"], "2026-03-24T08:00", "2026-03-24T08:02",
                "2026-03-24T08:30", 1),
        handoff(6, 2, ["asked_for_human"], "2026-03-22T22:00", "2026-03-23T08:00",
                "2026-03-23T09:00", 2),  # 23:00 local on 22 March: outside
    ]
