"""The recovery-case state machine on its own, plus attribution and decline categories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from payrescue.billing import cases, declines
from payrescue.billing.cases import Failure
from payrescue.db.models import Conversation, Member, Message, Outbox, RecoveryCase

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _failure(at: datetime, attempt: int | None = None, code: str | None = None) -> Failure:
    return Failure(invoice_ref="in_1", occurred_at=at, amount_minor=2900, currency="eur",
                   attempt_count=attempt, decline_code=code)


def _case() -> RecoveryCase:
    return cases.new_case(1, None, "stripe", _failure(T0, 1, "expired_card"), T0)


def test_new_case_is_open_with_its_category():
    case = _case()
    assert (case.status, case.attempt_count, case.currency) == ("open", 1, "EUR")
    assert case.decline_category == declines.EXPIRED_CARD


def test_further_failure_counts_attempts_and_takes_the_newer_code():
    case = _case()
    change = cases.apply_failure(case, _failure(T0 + timedelta(days=3), None,
                                                "insufficient_funds"), T0)
    assert change == cases.FAILED_AGAIN
    assert case.attempt_count == 2 and case.decline_category == declines.INSUFFICIENT_FUNDS


def test_older_failure_arriving_late_keeps_newer_details():
    case = cases.new_case(1, None, "stripe", _failure(T0 + timedelta(days=3), 2, "lost_card"), T0)
    assert cases.apply_failure(case, _failure(T0, 1, "expired_card"), T0) is None
    assert case.decline_category == declines.FRAUD and case.opened_at == T0


def test_success_older_than_the_last_failure_does_not_close():
    case = _case()
    cases.apply_failure(case, _failure(T0 + timedelta(days=3), 2), T0)
    assert cases.apply_recovery(case, T0 + timedelta(days=1), 2900, cases.BOT, T0) is None
    assert case.status == cases.OPEN
    assert cases.apply_recovery(case, T0 + timedelta(days=4), None, cases.BOT, T0) == "recovered"
    assert (case.status, case.recovered_amount_minor, case.attribution) == (
        "recovered", 2900, "bot")


def test_failure_older_than_the_recovery_does_not_reopen():
    case = _case()
    cases.apply_recovery(case, T0 + timedelta(days=2), 2900, cases.NO_CONTACT, T0)
    assert cases.apply_failure(case, _failure(T0 + timedelta(days=1), 2), T0) is None
    assert case.status == cases.RECOVERED


def test_loss_and_holds():
    case = _case()
    assert cases.set_held(case, True, T0) == cases.HELD
    assert cases.set_held(case, True, T0) is None
    assert cases.apply_loss(case, T0 - timedelta(days=1), T0) is None  # ended before it opened
    assert cases.apply_loss(case, T0 + timedelta(days=20), T0) == cases.LOST
    assert cases.apply_recovery(case, T0 + timedelta(days=21), 1, cases.BOT, T0) is None


def test_decline_code_arriving_later_sets_the_category_once():
    case = cases.new_case(1, None, "stripe", _failure(T0), T0)
    assert case.decline_category == declines.UNKNOWN
    assert cases.apply_decline(case, "do_not_honor", "card_declined", T0, T0) == cases.UPDATED
    assert case.decline_category == declines.ISSUER_DECLINED
    assert cases.apply_decline(case, "do_not_honor", "card_declined", T0, T0) is None


@pytest.mark.parametrize(("codes", "category"), [
    (("expired_card", "card_declined"), declines.EXPIRED_CARD),
    ((None, "incorrect_cvc"), declines.WRONG_DETAILS),
    (("stolen_card", None), declines.FRAUD),
    ((None, "processing_error"), declines.PROCESSING_ERROR),
    (("AM04", None), declines.INSUFFICIENT_FUNDS),
    ((None, "debit_not_authorized"), declines.MANDATE_REFUSED),
    ((None, None), declines.UNKNOWN),
    (("something_new", None), declines.UNKNOWN),
])
def test_decline_table(codes, category):
    assert declines.classify(*codes) == category


def test_every_category_says_what_it_means():
    fraud = declines.category(declines.FRAUD)
    assert not fraud.reveal_to_member and fraud.needs_human
    assert declines.category(declines.PROCESSING_ERROR).provider_retries
    assert declines.category(declines.EXPIRED_CARD).member_must_act
    assert declines.category("no-such-name").name == declines.UNKNOWN
    for item in declines.CATEGORIES.values():
        assert item.template == f"dunning/{item.name}" and item.explanation()


async def test_attribution_no_contact_bot_agent(session, clock):
    member = Member(email="a@example.org", created_at=clock.now())
    session.add(member)
    await session.flush()
    case = cases.new_case(member.id, None, "stripe", _failure(clock.now()), clock.now())
    session.add(case)
    await session.flush()
    assert await cases.attribution_for(session, case) == cases.NO_CONTACT

    session.add(Outbox(member_id=member.id, chat_id=1, kind="reminder", payload={},
                       status="sent", not_before=clock.now(), sent_at=clock.now(),
                       case_id=case.id, created_at=clock.now()))
    await session.flush()
    assert await cases.attribution_for(session, case) == cases.BOT

    conversation = Conversation(member_id=member.id, status="assigned", handoff_reasons=[],
                                created_at=clock.now(), updated_at=clock.now())
    session.add(conversation)
    await session.flush()
    session.add(Message(conversation_id=conversation.id, member_id=member.id,
                        sender="agent", text="Hallo",
                        created_at=clock.now() + timedelta(hours=1)))
    await session.flush()
    assert await cases.attribution_for(session, case) == cases.AGENT
