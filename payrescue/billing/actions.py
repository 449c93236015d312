"""What an agent does to a payment case from the console, each recorded on the member's
timeline: retry the charge now, pause the reminders, settle the case outside the system.

(Sending a fresh update link is an agent reply: `handoff.conversation.update_link_view`.)
The caller commits, then publishes `case.changed` when a change is returned.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import stripe
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import timeline
from payrescue.billing import cases
from payrescue.billing.stripe_api import StripeApi, StripeUnavailable
from payrescue.db.models import RecoveryCase

log = logging.getLogger(__name__)
MAX_PAUSE_DAYS = 60
MAX_REASON = 300
RETRY, PAUSED, SETTLED = "case.retry", "case.paused", "case.settled"


class ActionError(Exception):
    """The action is not possible for this case; the message is meant for the agent."""


def _open(case: RecoveryCase) -> None:
    if case.status != cases.OPEN:
        raise ActionError("not open")


def _record(session: AsyncSession, case: RecoveryCase, kind: str, agent_id: int,
            now: datetime, data: dict | None = None) -> None:
    row = timeline.case_event(session, case.member_id, case.id, kind, now, data)
    row.agent_id, row.channel = agent_id, timeline.CONSOLE


def can_retry(case: RecoveryCase, api: StripeApi | None) -> bool:
    """Only Stripe invoices, and only with an API key configured."""
    return api is not None and case.provider == "stripe" and case.status == cases.OPEN


async def retry_charge(session: AsyncSession, api: StripeApi | None, case: RecoveryCase,
                       agent_id: int, now: datetime) -> None:
    """Ask Stripe to pay the open invoice now with the customer's current payment method.

    The outcome arrives as usual through the webhook (`invoice.paid` closes the case, a
    failure counts as a new attempt); here only the request is recorded.
    """
    _open(case)
    if api is None or not can_retry(case, api):
        raise ActionError("retry unavailable")
    try:
        await api.client.v1.invoices.pay_async(case.invoice_ref)
    except stripe.CardError as exc:  # declined at once: the webhook brings the details
        log.info("retry declined", extra={"case_id": case.id})
        _record(session, case, RETRY, agent_id, now, {"declined": True,
                                                      "code": exc.code or ""})
        return
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"invoice pay: {type(exc).__name__}") from exc
    _record(session, case, RETRY, agent_id, now)


def pause_reminders(session: AsyncSession, case: RecoveryCase, days: int, agent_id: int,
                    now: datetime) -> datetime:
    _open(case)
    if not 1 <= days <= MAX_PAUSE_DAYS:
        raise ActionError("days out of range")
    case.reminders_paused_until = now + timedelta(days=days)
    case.updated_at = now
    _record(session, case, PAUSED, agent_id, now,
            {"days": days, "until": case.reminders_paused_until.isoformat()})
    return case.reminders_paused_until


def settle_outside(session: AsyncSession, case: RecoveryCase, reason: str, agent_id: int,
                   now: datetime) -> str:
    """Paid another way (a bank transfer): the case closes as recovered by the agent."""
    _open(case)
    reason = reason.strip()[:MAX_REASON]
    if not reason:
        raise ActionError("reason required")
    change = cases.apply_recovery(case, max(now, case.last_failure_at), case.amount_minor,
                                  cases.AGENT, now)
    if change is None:
        raise ActionError("not open")
    _record(session, case, SETTLED, agent_id, now, {"reason": reason})
    return change
