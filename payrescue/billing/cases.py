"""The recovery-case state machine: the one place where a case changes status.

    (none) ──failure──▶ open ──success──▶ recovered ──refunded──▶ lost
                         │  ◀─failure (newer than the close)─┘
                         ├──subscription ends──▶ lost
                         └──provider gives up (void, uncollectible, unpaid)──▶ lost
                              ──the invoice paid after all──▶ recovered

A refunded case keeps when it was paid (`recovered_at`): it was won back, and the money
went back; it counts as lost, and the member is told nothing more.

Deliveries repeat and come out of order, so every rule compares the event's own time
(`occurred_at`, the provider's `created`) with the case: a success older than the case's last
failure does not close it, a failure older than a recorded success does not reopen it.
The `apply_*` functions are pure (a case object in, the change name out, or None when the
event changes nothing) and are tested on their own; `ingest` wraps them in a transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.billing import declines
from payrescue.db.models import Conversation, Handoff, Message, Outbox, RecoveryCase
from payrescue.i18n import _, lazy_gettext

OPEN, RECOVERED, LOST = "open", "recovered", "lost"
STATUSES = (OPEN, RECOVERED, LOST)

# what the bus hears (`case.changed` → `change`)
OPENED, FAILED_AGAIN = "opened", "failed_again"
ACTION_REQUIRED, CARD_EXPIRING, HELD, RELEASED = (
    "action_required", "card_expiring", "held", "released")
UPDATED = "updated"  # a detail changed (decline code arrived, next attempt moved)

# who won the member back
NO_CONTACT, BOT, AGENT = "no_contact", "bot", "agent"
# what an agent or owner reads for the stored words (exports, the console)
_STATUS_LABELS = {"open": lazy_gettext("open"), "recovered": lazy_gettext("recovered"),
                  "lost": lazy_gettext("lost")}
_ATTRIBUTION_LABELS = {NO_CONTACT: lazy_gettext("without contact"), BOT: lazy_gettext("Bot"),
                       AGENT: lazy_gettext("Team")}


def status_label(status: str) -> str:
    return _(_STATUS_LABELS[status]) if status in _STATUS_LABELS else status


_SUBSCRIPTION_LABELS = {
    "active": lazy_gettext("active"), "trialing": lazy_gettext("in its trial"),
    "past_due": lazy_gettext("payment overdue"), "unpaid": lazy_gettext("unpaid"),
    "paused": lazy_gettext("paused"), "canceled": lazy_gettext("ended"),
    "incomplete": lazy_gettext("not yet started"),
    "incomplete_expired": lazy_gettext("never started"),
}


def subscription_status_label(status: str) -> str:
    """A subscription's status as the billing system names it, in the reader's language."""
    return _(_SUBSCRIPTION_LABELS[status]) if status in _SUBSCRIPTION_LABELS else status


def attribution_label(attribution: str | None) -> str:
    if not attribution:
        return ""
    label = _ATTRIBUTION_LABELS.get(attribution)
    return _(label) if label else attribution


@dataclass
class Failure:
    """One failed attempt, as the provider reported it."""

    invoice_ref: str
    occurred_at: datetime
    amount_minor: int
    currency: str
    attempt_count: int | None = None
    decline_code: str | None = None
    error_code: str | None = None
    billing_reason: str | None = None
    action_required: bool = False
    hosted_invoice_url: str | None = None
    update_url: str | None = None
    next_attempt_at: datetime | None = None

    @property
    def category(self) -> str:
        return declines.classify(self.decline_code, self.error_code)


def new_case(member_id: int, subscription_id: int | None, provider: str, failure: Failure,
             now: datetime) -> RecoveryCase:
    case = RecoveryCase(
        member_id=member_id, subscription_id=subscription_id, provider=provider,
        invoice_ref=failure.invoice_ref, status=OPEN, attempt_count=failure.attempt_count or 1,
        opened_at=failure.occurred_at, last_failure_at=failure.occurred_at, held=False,
        dunning_stage=0, amount_minor=failure.amount_minor, currency=failure.currency.upper(),
        decline_category=declines.UNKNOWN, action_required=False, updated_at=now,
    )
    _take_details(case, failure)
    return case


def apply_failure(case: RecoveryCase, failure: Failure, now: datetime) -> str | None:
    """A further failure of the same invoice; None when it is older than what we know."""
    if case.status != OPEN:
        closed_at = case.recovered_at or case.lost_at
        if closed_at is not None and failure.occurred_at <= closed_at:
            return None  # a late copy of an attempt before the success or the end
        case.status, case.recovered_at, case.recovered_amount_minor = OPEN, None, None
        case.attribution, case.lost_at = None, None
    elif failure.occurred_at < case.last_failure_at:
        # an older attempt arriving late still counts, but must not overwrite newer details
        case.attempt_count = max(case.attempt_count, failure.attempt_count or 0)
        case.opened_at = min(case.opened_at, failure.occurred_at)
        case.updated_at = now
        return None
    elif failure.occurred_at == case.last_failure_at and failure.attempt_count is None:
        return None
    previous = case.attempt_count
    case.attempt_count = max(failure.attempt_count or previous + 1, previous)
    case.last_failure_at = failure.occurred_at
    case.amount_minor, case.currency = failure.amount_minor, failure.currency.upper()
    _take_details(case, failure)
    case.updated_at = now
    return ACTION_REQUIRED if failure.action_required else FAILED_AGAIN


def _take_details(case: RecoveryCase, failure: Failure) -> None:
    if failure.decline_code or failure.error_code:
        case.decline_code = failure.decline_code or failure.error_code
        case.decline_category = failure.category
    case.action_required = failure.action_required or (
        case.action_required and failure.decline_code is None and failure.error_code is None)
    if failure.action_required:
        case.decline_category = declines.AUTHENTICATION_REQUIRED
    case.billing_reason = failure.billing_reason or case.billing_reason
    case.hosted_invoice_url = failure.hosted_invoice_url or case.hosted_invoice_url
    case.update_url = failure.update_url or case.update_url
    case.next_attempt_at = failure.next_attempt_at


def apply_decline(case: RecoveryCase, decline_code: str | None, error_code: str | None,
                  occurred_at: datetime, now: datetime) -> str | None:
    """The decline code of an attempt, arriving apart from the failure (Stripe's
    payment_intent.payment_failed / charge.failed, or a look-up that succeeded late)."""
    if case.status != OPEN or not (decline_code or error_code):
        return None
    if case.decline_code and occurred_at < case.last_failure_at:
        return None  # the code of an older attempt; the newer one is already known
    code = decline_code or error_code
    category = declines.classify(decline_code, error_code)
    if case.decline_code == code and case.decline_category == category:
        return None
    case.decline_code, case.decline_category = code, category
    case.updated_at = now
    return UPDATED


def apply_next_attempt(case: RecoveryCase, next_attempt_at: datetime | None,
                       occurred_at: datetime, now: datetime) -> str | None:
    if case.status != OPEN or occurred_at < case.last_failure_at:
        return None
    if case.next_attempt_at == next_attempt_at:
        return None
    case.next_attempt_at = next_attempt_at
    case.updated_at = now
    return UPDATED


def apply_recovery(case: RecoveryCase, occurred_at: datetime, amount_minor: int | None,
                   attribution: str, now: datetime, *, after_give_up: bool = False
                   ) -> str | None:
    """Paid: closes the case unless the success is older than the case's last failure.
    `after_give_up`: the provider had stopped collecting (the case is lost), and the invoice
    was paid after all — recovered, if the payment came after the loss."""
    if after_give_up and case.status == LOST and case.lost_at is not None \
            and occurred_at >= case.lost_at:
        case.status, case.lost_at = OPEN, None
    if case.status != OPEN or occurred_at < case.last_failure_at:
        return None
    case.status = RECOVERED
    case.recovered_at = occurred_at
    case.recovered_amount_minor = amount_minor if amount_minor is not None else case.amount_minor
    case.attribution = attribution
    case.held = False
    case.next_attempt_at = None
    case.updated_at = now
    return RECOVERED


def apply_loss(case: RecoveryCase, occurred_at: datetime, now: datetime) -> str | None:
    """The subscription ended: an open case opened before that is lost."""
    if case.status != OPEN or occurred_at < case.opened_at:
        return None
    case.status = LOST
    case.lost_at = occurred_at
    case.next_attempt_at = None
    case.updated_at = now
    return LOST


def apply_refund(case: RecoveryCase, occurred_at: datetime, now: datetime) -> str | None:
    """The payment that recovered the case was given back: it was not saved after all."""
    if case.status != RECOVERED:
        return None
    case.status = LOST
    case.lost_at = max(occurred_at, case.recovered_at or occurred_at)
    case.attribution = None
    case.updated_at = now
    return LOST


def was_refunded(case: RecoveryCase) -> bool:
    return case.status == LOST and case.recovered_at is not None


def set_held(case: RecoveryCase, held: bool, now: datetime) -> str | None:
    if case.status != OPEN or case.held == held:
        return None
    case.held = held
    case.updated_at = now
    return HELD if held else RELEASED


# --- queries -------------------------------------------------------------------------------


async def open_cases(session: AsyncSession, *, member_id: int | None = None,
                     subscription_id: int | None = None,
                     provider: str | None = None) -> list[RecoveryCase]:
    query = select(RecoveryCase).where(RecoveryCase.status == OPEN)
    if member_id is not None:
        query = query.where(RecoveryCase.member_id == member_id)
    if subscription_id is not None:
        query = query.where(RecoveryCase.subscription_id == subscription_id)
    if provider is not None:
        query = query.where(RecoveryCase.provider == provider)
    result = await session.scalars(query.order_by(RecoveryCase.last_failure_at.desc())
                                   .with_for_update())
    return list(result)


async def attribution_for(session: AsyncSession, case: RecoveryCase) -> str:
    """Who won the member back: an agent who talked to them since the case opened, else the
    bot if one of its messages for this member was delivered, else nobody (no_contact)."""
    agent_spoke = exists().where(
        Message.member_id == case.member_id, Message.sender == "agent",
        Message.created_at >= case.opened_at,
    )
    agent_claimed = exists().where(
        Handoff.conversation_id == Conversation.id, Conversation.member_id == case.member_id,
        Handoff.agent_id.is_not(None), Handoff.first_response_at.is_not(None),
        Handoff.requested_at >= case.opened_at,
    )
    if await session.scalar(select(agent_spoke | agent_claimed)):
        return AGENT
    bot_sent = exists().where(
        Outbox.member_id == case.member_id, Outbox.status == "sent", Outbox.kind != "alert",
        (Outbox.case_id == case.id) | (Outbox.sent_at >= case.opened_at),
    )
    if await session.scalar(select(bot_sent)):
        return BOT
    return NO_CONTACT
