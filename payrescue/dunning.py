"""The dunning plan and its reconciler: make the outbox match what each case calls for.

A case's plan is fixed by its opening time: one message per `settings.dunning_days` entry
(day 0 = at once) and a final notice on `settings.dunning_final_day`. `reconcile()` looks at
the cases and queues the latest step that is due and not yet queued (after an outage the
member gets one current message, not a pile of stale ones), delays it past the member's quiet
hours, and, for closed or held cases, cancels what is still queued. Every message carries a
`dedupe_key`, so running the reconciler twice (or in two processes) queues nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import outbox
from payrescue.billing import declines
from payrescue.config import Settings
from payrescue.db.models import Member, Outbox, PaymentEvent, RecoveryCase, Subscription
from payrescue.hours import quiet_until
from payrescue.i18n import (
    _,
    choose_language,
    format_date,
    format_money,
    template_environment,
    use_language,
)

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
OPEN, RECOVERED, LOST = "open", "recovered", "lost"
REMINDER_KINDS = ("reminder",)
CLOSED_LOOKBACK = timedelta(days=14)  # closed cases older than this need nothing more
# Callback data of the reminders' buttons (handled by bot/routers/notifications.py).
WHY_PREFIX = "case:why:"
HUMAN_PREFIX = "case:human:"


@dataclass(frozen=True)
class Step:
    index: int
    due: datetime
    template: str  # failed | reminder | final


def plan(case: RecoveryCase, settings: Settings) -> list[Step]:
    """The case's reminders: at failure, after each configured day, and the final notice."""
    days = sorted(set(settings.dunning_days))
    steps = [
        Step(i, case.opened_at + timedelta(days=day), "failed" if i == 0 else "reminder")
        for i, day in enumerate(days)
    ]
    final = case.opened_at + timedelta(days=settings.dunning_final_day)
    steps.append(Step(len(steps), final, "final"))
    return steps


def member_zone(member: Member, settings: Settings) -> ZoneInfo:
    if member.time_zone:
        try:
            return ZoneInfo(member.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("member has an unknown time zone", extra={"member_id": member.id})
    return settings.zone


def send_time(member: Member, settings: Settings, moment: datetime) -> datetime:
    """`moment`, or the end of the member's quiet hours if it falls inside them."""
    return quiet_until(moment, settings.quiet, member_zone(member, settings))


@cache
def _environment() -> Environment:
    return template_environment(FileSystemLoader(TEMPLATES))


def render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context).strip()


def language_of(member: Member, settings: Settings) -> str:
    code = member.telegram.language_code if member.telegram else None
    return choose_language(member.language, code, settings.default_language)


# --- the reconciler -----------------------------------------------------------------------


async def reconcile(session: AsyncSession, settings: Settings, now: datetime) -> list[int]:
    """Bring the outbox in line with every case; commits; returns the ids of queued rows."""
    queued: list[int] = []
    for case in await _cases_to_check(session, now):
        member = await session.get(Member, case.member_id)
        if member is None:
            continue
        if case.status == OPEN and not case.held:
            row = await _due_step(session, settings, case, member, now)
        else:
            await _cancel_reminders(session, case, "held" if case.held else case.status)
            row = await _closing_messages(session, settings, case, member, now)
        queued += [r.id for r in row if r is not None]
    queued += await _pre_dunning(session, settings, now)
    await session.commit()
    return queued


async def _cases_to_check(session: AsyncSession, now: datetime) -> list[RecoveryCase]:
    since = now - CLOSED_LOOKBACK
    result = await session.scalars(
        select(RecoveryCase).where(
            or_(
                RecoveryCase.status == OPEN,
                RecoveryCase.recovered_at >= since,
                RecoveryCase.lost_at >= since,
            )
        ).order_by(RecoveryCase.id)
    )
    return list(result)


def _may_contact(member: Member) -> bool:
    return (
        member.telegram is not None
        and member.erased_at is None
        and not member.opted_out
        and not member.unreachable
    )


def paused(case: RecoveryCase, now: datetime) -> bool:
    """An agent paused the reminders (e.g. the member promised to pay on Friday); the step
    due meanwhile goes out when the pause ends."""
    return case.reminders_paused_until is not None and now < case.reminders_paused_until


async def _due_step(
    session: AsyncSession, settings: Settings, case: RecoveryCase, member: Member, now: datetime
) -> list[Outbox | None]:
    due = [step for step in plan(case, settings) if step.due <= now]
    if not due or not _may_contact(member) or paused(case, now):
        return []
    step = due[-1]
    if case.dunning_stage > step.index:
        return []
    case.dunning_stage = step.index + 1
    row = await outbox.queue_message(
        session,
        member,
        "reminder",
        await reminder_payload(session, settings, case, member, step.template, now),
        now,
        priority=outbox.PRIORITY_REMINDER,
        not_before=send_time(member, settings, now),
        case_id=case.id,
        dedupe_key=f"dunning:{case.id}:{step.index}",
        dunning_step=step.index,
    )
    if row is not None:
        log.info("reminder queued", extra={"case_id": case.id, "step": step.index})
    return [row]


async def _cancel_reminders(session: AsyncSession, case: RecoveryCase, reason: str) -> None:
    pending = await session.scalars(
        select(Outbox.id).where(
            Outbox.case_id == case.id,
            Outbox.kind.in_(REMINDER_KINDS),
            Outbox.status == outbox.QUEUED,
        )
    )
    await outbox.cancel_queued(session, list(pending), f"case {reason}")


async def _closing_messages(
    session: AsyncSession, settings: Settings, case: RecoveryCase, member: Member, now: datetime
) -> list[Outbox | None]:
    """Recovered: thank-you and stale buttons edited away; lost: a kind last word."""
    if case.status not in (RECOVERED, LOST) or member.telegram is None or member.erased_at:
        return []
    rows = await _remove_old_buttons(session, case, member, now)
    contacted = case.dunning_stage > 0
    if not contacted or member.opted_out or member.unreachable:
        return rows
    template = "recovered" if case.status == RECOVERED else "lost"
    with use_language(language_of(member, settings)):
        context = await case_context(session, settings, case, member, now)
        text = render(f"dunning/{template}.j2", **context)
        markup = _human_button(case) if case.status == LOST else None
    payload: dict[str, Any] = {"text": text, "parse_mode": "HTML"}
    if markup:
        payload["reply_markup"] = markup
    rows.append(await outbox.queue_message(
        session, member, "bot", payload, now,
        priority=outbox.PRIORITY_BOT,
        not_before=send_time(member, settings, now) if case.status == LOST else now,
        case_id=case.id,
        dedupe_key=f"dunning:{case.id}:{template}",
    ))
    return rows


async def _remove_old_buttons(
    session: AsyncSession, case: RecoveryCase, member: Member, now: datetime
) -> list[Outbox | None]:
    sent = await session.scalars(
        select(Outbox).where(
            Outbox.case_id == case.id,
            Outbox.kind.in_(REMINDER_KINDS),
            Outbox.status == outbox.SENT,
            Outbox.telegram_message_id.is_not(None),
        )
    )
    rows: list[Outbox | None] = []
    for reminder in sent:
        rows.append(await outbox.queue_message(
            session, member, "edit",
            {"message_id": reminder.telegram_message_id},  # no reply_markup: remove it
            now,
            priority=outbox.PRIORITY_EDIT,
            case_id=case.id,
            dedupe_key=f"unbutton:{reminder.id}",
            method="editMessageReplyMarkup",
        ))
    return rows


async def _pre_dunning(session: AsyncSession, settings: Settings, now: datetime) -> list[int]:
    """One "please update before it expires" per expiring card the provider told us about."""
    events = await session.scalars(
        select(PaymentEvent).where(
            PaymentEvent.kind == "card_expiring",
            PaymentEvent.member_id.is_not(None),
            PaymentEvent.received_at >= now - timedelta(days=settings.pre_dunning_days),
        )
    )
    queued: list[int] = []
    for event in events:
        member = await session.get(Member, event.member_id)
        if member is None or not _may_contact(member):
            continue
        month = (event.occurred_at or event.received_at).strftime("%Y-%m")
        with use_language(language_of(member, settings)):
            text = render("dunning/card_expiring.j2", first_name=member.first_name)
        row = await outbox.queue_message(
            session, member, "reminder", {"text": text, "parse_mode": "HTML"}, now,
            priority=outbox.PRIORITY_REMINDER,
            not_before=send_time(member, settings, now),
            dedupe_key=f"card_expiring:{member.id}:{month}",
        )
        if row is not None:
            queued.append(row.id)
    return queued


# --- message content ----------------------------------------------------------------------


async def case_context(
    session: AsyncSession, settings: Settings, case: RecoveryCase, member: Member, now: datetime
) -> dict[str, Any]:
    subscription = (
        await session.get(Subscription, case.subscription_id) if case.subscription_id else None
    )
    zone = member_zone(member, settings)
    category = declines.category(case.decline_category)
    next_attempt = None
    if case.next_attempt_at and case.next_attempt_at > now:
        next_attempt = format_date(case.next_attempt_at, zone)
    return {
        "first_name": member.first_name or _("there"),
        "plan": (subscription.plan_name if subscription else None) or _("your membership"),
        "amount": format_money(case.amount_minor, case.currency),
        "next_attempt": next_attempt,
        "category": category.name,
        "explanation": category.explanation(),
    }


async def reminder_payload(
    session: AsyncSession,
    settings: Settings,
    case: RecoveryCase,
    member: Member,
    template: str,
    now: datetime,
) -> dict[str, Any]:
    """The failed-payment message (or a reminder) with its three buttons, ready to queue."""
    from payrescue.billing.links import create_update_link

    with use_language(language_of(member, settings)):
        context = await case_context(session, settings, case, member, now)
        text = render(f"dunning/{template}.j2", **context)
        url = await create_update_link(session, case, settings, now)
        keyboard = [
            [{"text": _("Update payment method"), "url": url}],
            [{"text": _("Why did this fail?"), "callback_data": f"{WHY_PREFIX}{case.id}"}],
            [{"text": _("Talk to a person"), "callback_data": f"{HUMAN_PREFIX}{case.id}"}],
        ]
    return {"text": text, "parse_mode": "HTML", "reply_markup": {"inline_keyboard": keyboard}}


def _human_button(case: RecoveryCase) -> dict[str, Any]:
    return {"inline_keyboard": [[
        {"text": _("Talk to a person"), "callback_data": f"{HUMAN_PREFIX}{case.id}"}
    ]]}


async def explain(session: AsyncSession, settings: Settings, case: RecoveryCase,
                  member: Member, now: datetime) -> str:
    """"Why did this fail?" for one case, in the current language."""
    context = await case_context(session, settings, case, member, now)
    return render("dunning/_facts.j2", **context)
