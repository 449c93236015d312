"""The dunning plan and its reconciler: make the outbox match what each case calls for.

A case's plan is fixed by its opening time: one message per `settings.dunning_days` entry
(day 0 = at once) and a final notice on `settings.dunning_final_day`. `reconcile()` looks at
the cases and queues the latest step that is due and not yet queued (after an outage the
member gets one current message, not a pile of stale ones), delays it past the member's quiet
hours, and, for closed or held cases, cancels what is still queued. Every message carries a
`dedupe_key`, so running the reconciler twice (or in two processes) queues nothing twice.

Each message goes by the channel `payrescue.reach` chooses when it is queued (Telegram, else
e-mail); the rules above (plan, quiet hours, opt-out, stop on recovery, the gateway-fault
hold) are the same for both, and the dedupe key names the step, not the channel.
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
from markupsafe import Markup
from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import handoff_rules, outbox, reach
from payrescue.billing import declines
from payrescue.billing.cases import was_refunded
from payrescue.config import Settings
from payrescue.conversations import current_conversation
from payrescue.db.models import Member, Outbox, PaymentEvent, RecoveryCase, Subscription
from payrescue.events import Event
from payrescue.hours import quiet_until
from payrescue.i18n import (
    _,
    choose_language,
    current_language,
    format_date,
    format_money,
    member_text_environment,
    plain_text,
    render_member_text,
    texts_dir,
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
def _environment(texts: Path | None) -> Environment:
    return member_text_environment(FileSystemLoader(TEMPLATES), texts)


def render(template: str, **context: Any) -> Markup:
    """A member message: the owner's text for it (PAYRESCUE_TEXTS_DIR) or ours."""
    return render_member_text(_environment(texts_dir()), template, **context)


def language_of(member: Member, settings: Settings) -> str:
    code = member.telegram.language_code if member.telegram else None
    return choose_language(member.language, code, settings.default_language)


# --- the reconciler -----------------------------------------------------------------------


async def reconcile(session: AsyncSession, settings: Settings, now: datetime) -> list[Event]:
    """Bring the outbox in line with every case; commits; returns the events to publish
    (`outbox.queued` per queued row, and the console's news of handoffs the plan opened)."""
    queued: list[int] = []
    events: list[Event] = []
    for case in await _cases_to_check(session, now):
        member = await session.get(Member, case.member_id)
        if member is None:
            continue
        if case.status == OPEN and not case.held:
            row = await _due_step(session, settings, case, member, now)
            if row and row[0] is not None and row[0].dunning_step == 0:
                events += await _hand_to_person(session, case, member, now)
            row += await _after_block(session, settings, case, member, now)
        else:
            await _cancel_reminders(session, case, "held" if case.held else case.status)
            row = await _closing_messages(session, settings, case, member, now)
        queued += [r.id for r in row if r is not None]
    queued += await _pre_dunning(session, settings, now)
    await session.commit()
    return [*(Event("outbox.queued", {"outbox_id": row_id}) for row_id in queued), *events]


async def _hand_to_person(session: AsyncSession, case: RecoveryCase, member: Member,
                          now: datetime) -> list[Event]:
    """A card the bank blocked, a refused mandate: the first message says a person will get
    in touch, so the conversation goes to the team's queue with that message."""
    reason = handoff_rules.case_handoff_reason(case)
    if reason is None:
        return []
    conversation = await current_conversation(session, member.id, now)
    await handoff_rules.request_handoff(session, conversation, [reason], now, case)
    log.info("case needs a person: handed over", extra={"case_id": case.id})
    return handoff_rules.handoff_events(conversation)


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


def _may_contact(member: Member, settings: Settings) -> bool:
    return not member.opted_out and reach.channel_for(member, settings) is not None


def email_subject(template: str) -> str:
    """The subject line of a member e-mail (`email/subject/<template>.j2`, which an owner may
    replace like any member text), in the current language: plain text on one line."""
    return " ".join(plain_text(render(f"email/subject/{template}.j2")).split())


def paused(case: RecoveryCase, now: datetime) -> bool:
    """An agent paused the reminders (e.g. the member promised to pay on Friday); the step
    due meanwhile goes out when the pause ends."""
    return case.reminders_paused_until is not None and now < case.reminders_paused_until


async def _due_step(
    session: AsyncSession, settings: Settings, case: RecoveryCase, member: Member, now: datetime
) -> list[Outbox | None]:
    due = [step for step in plan(case, settings) if step.due <= now]
    if not due or not _may_contact(member, settings) or await _ended(session, case) \
            or paused(case, now):
        return []
    step = due[-1]
    if case.dunning_stage > step.index:
        return []
    case.dunning_stage = step.index + 1
    channel = reach.channel_for(member, settings)
    rows: list[Outbox | None] = []
    for key, ch in [(f"dunning:{case.id}:{step.index}", channel),
                    *((f"dunning:{case.id}:{step.index}:{extra}", extra)
                      for extra in reach.extra_channels(member, settings, step.index))]:
        if ch == outbox.EMAIL:
            payload = await email_payload(session, settings, case, member, step.template, now)
        else:
            payload = await reminder_payload(session, settings, case, member, step.template, now)
        row = await outbox.queue_message(
            session, member, "reminder", payload, now,
            priority=outbox.PRIORITY_REMINDER,
            not_before=send_time(member, settings, now),
            case_id=case.id,
            dedupe_key=key,
            dunning_step=step.index,
            channel=ch or outbox.TELEGRAM, settings=settings,
        )
        if row is not None:
            log.info("reminder queued",
                     extra={"case_id": case.id, "step": step.index, "channel": ch})
        rows.append(row)
    return rows


async def _after_block(
    session: AsyncSession, settings: Settings, case: RecoveryCase, member: Member, now: datetime
) -> list[Outbox | None]:
    """The member blocked the bot when the latest step went out (Telegram's 403): that step
    again by e-mail, once, if e-mail reaches them."""
    if member.opted_out or reach.channel_for(member, settings) != outbox.EMAIL:
        return []
    blocked = await session.scalar(
        select(Outbox).where(Outbox.case_id == case.id, Outbox.kind == "reminder",
                             Outbox.channel == outbox.TELEGRAM,
                             Outbox.error == outbox.BLOCKED_REASON,
                             Outbox.dunning_step.is_not(None))
        .order_by(Outbox.dunning_step.desc()).limit(1))
    if blocked is None or blocked.dunning_step != case.dunning_stage - 1:
        return []  # a later step went out (or is due) anyway
    key = f"dunning:{case.id}:{blocked.dunning_step}:after-block"
    if await session.scalar(select(Outbox.id).where(Outbox.dedupe_key == key)) is not None:
        return []  # checked first: the payload would make a new update link every time
    step = plan(case, settings)[blocked.dunning_step]
    return [await outbox.queue_message(
        session, member, "reminder",
        await email_payload(session, settings, case, member, step.template, now), now,
        priority=outbox.PRIORITY_REMINDER, not_before=send_time(member, settings, now),
        case_id=case.id, dedupe_key=key, dunning_step=step.index, channel=outbox.EMAIL,
        settings=settings)]


async def _ended(session: AsyncSession, case: RecoveryCase) -> bool:
    """Nothing is ever sent about a subscription that has ended."""
    if case.subscription_id is None:
        return False
    subscription = await session.get(Subscription, case.subscription_id)
    return subscription is not None and subscription.status == "canceled"


async def _subscribed(session: AsyncSession, member: Member) -> bool:
    """A member whose every subscription has ended needs no card warning."""
    statuses = set(await session.scalars(
        select(Subscription.status).where(Subscription.member_id == member.id)))
    return not statuses or statuses != {"canceled"}


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
    if case.status not in (RECOVERED, LOST) or member.erased_at:
        return []
    rows = await _remove_old_buttons(session, case, member, now) if member.telegram else []
    channel = reach.channel_for(member, settings)
    if not await _was_told(session, case) or member.opted_out or channel is None:
        return rows
    if was_refunded(case):  # the business gave the payment back: no word of ours fits
        return rows
    template = "recovered" if case.status == RECOVERED else "lost"
    if channel == outbox.EMAIL:
        payload = await email_payload(session, settings, case, member, template, now,
                                      with_link=False)
        rows.append(await outbox.queue_message(
            session, member, "bot", payload, now,
            priority=outbox.PRIORITY_BOT,
            not_before=send_time(member, settings, now) if case.status == LOST else now,
            case_id=case.id,
            dedupe_key=f"dunning:{case.id}:{template}",
            channel=outbox.EMAIL, settings=settings,
        ))
        return rows
    with use_language(language_of(member, settings)):
        context = await case_context(session, settings, case, member, now)
        text = render(f"dunning/{template}.j2", **context)
        markup = human_keyboard(case) if case.status == LOST else None
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


async def _was_told(session: AsyncSession, case: RecoveryCase) -> bool:
    """Whether a message of this case reached the member: a closing word ("thanks, it came
    in", "your membership has ended") only makes sense after one. A step that was queued
    and then cancelled (the case closed first) told them nothing. A row the notifier holds
    right now counts: it is being sent, and its "sent" is written a moment later; should it
    be withdrawn instead, the closing word is withdrawn too, since a chat's next row is sent
    only after the one before is finished and this is asked again then (`still_wanted`)."""
    return bool(await session.scalar(select(
        exists().where(Outbox.case_id == case.id, Outbox.kind.in_(REMINDER_KINDS),
                       Outbox.status.in_((outbox.SENT, outbox.SENDING))))))


async def still_wanted(session: AsyncSession, row: Outbox) -> bool:
    """Just before the notifier sends a dunning message: does the case still call for it?

    Between queueing and sending a late event may have changed the past (the payment came
    first, the subscription had ended): a reminder goes only for an open, unheld case of a
    subscription that has not ended; a closing word only while the case is closed that way
    and the member was told of it. Other rows (agent replies, button edits) are not ours."""
    if not (row.dedupe_key or "").startswith("dunning:") or row.case_id is None:
        return True
    case = await session.get(RecoveryCase, row.case_id, populate_existing=True)
    if case is None:
        return False
    subscription = (await session.get(Subscription, case.subscription_id)
                    if case.subscription_id else None)
    if row.kind in REMINDER_KINDS:
        ended = subscription is not None and subscription.status == "canceled"
        return case.status == OPEN and not case.held and not ended
    closing = (row.dedupe_key or "").rsplit(":", 1)[-1]
    return closing == case.status and await _was_told(session, case)


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


# the card-expiry events that say the card has expired already (the others: it soon will)
CARD_EXPIRED_EVENTS = frozenset({"after-cc-expires-reminder"})


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
        if member is None or not _may_contact(member, settings) \
                or not await _subscribed(session, member):
            continue
        month = (event.occurred_at or event.received_at).strftime("%Y-%m")
        expired = event.event_type in CARD_EXPIRED_EVENTS
        url = await session.scalar(select(Subscription.update_url).where(
            Subscription.member_id == member.id, Subscription.update_url.is_not(None)).limit(1))
        channel = reach.channel_for(member, settings) or outbox.TELEGRAM
        language = language_of(member, settings)
        with use_language(language):
            payload = (card_expiring_email(member.first_name, url, expired)
                       if channel == outbox.EMAIL
                       else card_expiring_payload(member.first_name, url, expired))
        row = await outbox.queue_message(
            session, member, "reminder", payload, now,
            priority=outbox.PRIORITY_REMINDER,
            not_before=send_time(member, settings, now),
            dedupe_key=f"card_{'expired' if expired else 'expiring'}:{member.id}:{month}",
            channel=channel,
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
        "first_name": member.first_name or None,  # templates greet without a name then
        "plan": (subscription.plan_name if subscription else None) or None,
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
        keyboard = case_keyboard(case, url, why=True)
    return {"text": text, "parse_mode": "HTML", "reply_markup": keyboard}


def update_label(category: str | None) -> str:
    """The link button's words for a case's decline category: what the page it opens lets
    the member do (the messages name the button by these words, so they must match)."""
    if declines.category(category).name == declines.AUTHENTICATION_REQUIRED:
        return _("Confirm the payment")
    return _("Update payment method")


def case_keyboard(case: RecoveryCase, url: str, *, why: bool) -> dict[str, Any]:
    """The buttons every message about an open case carries, so each next step it names is
    one tap away: the update link, (the explanation), a person."""
    rows = [[{"text": update_label(case.decline_category), "url": url}]]
    if why:
        rows.append([{"text": _("Why did this fail?"), "callback_data": f"{WHY_PREFIX}{case.id}"}])
    rows.append([{"text": _("Talk to a person"), "callback_data": f"{HUMAN_PREFIX}{case.id}"}])
    return {"inline_keyboard": rows}


async def email_payload(
    session: AsyncSession,
    settings: Settings,
    case: RecoveryCase,
    member: Member,
    template: str,
    now: datetime,
    *,
    with_link: bool = True,
) -> dict[str, Any]:
    """What `payrescue.email_message` turns into the e-mail for this step: the same text as on
    Telegram (rendered here, in the member's language), its subject, the update link and
    its button's words (the same as the Telegram button's, which the text names)."""
    from payrescue.billing.links import create_update_link

    language = language_of(member, settings)
    with use_language(language):
        context = await case_context(session, settings, case, member, now)
        url = await create_update_link(session, case, settings, now) if with_link else None
        return {**email_content(template, context, url), "case_id": case.id}


def email_content(template: str, context: dict[str, Any], url: str | None) -> dict[str, Any]:
    """A dunning step's e-mail in the current language: subject, body (the step's text, as on
    Telegram) and the button's link (None: no button, as under a thank-you)."""
    return {"template": template, "language": current_language(),
            "subject": email_subject(template),
            "body": render(f"dunning/{template}.j2", **context, email=True), "update_url": url,
            "button_text": update_label(context.get("category")) if url else None}


def card_expiring_email(first_name: str | None, url: str | None, expired: bool = False
                        ) -> dict[str, Any]:
    """"Your card expires soon" (or "has expired") by e-mail, in the current language; the
    button adds the new card when the billing system gave us a page for it."""
    return {"template": "card_expiring", "language": current_language(),
            "subject": email_subject("card_expired" if expired else "card_expiring"),
            "body": render("dunning/card_expiring.j2", first_name=first_name or None, url=url,
                           expired=expired, email=True),
            "update_url": url, "button_text": _("Add my new card") if url else None}


async def send_fresh_link(session: AsyncSession, settings: Settings, case: RecoveryCase,
                          member: Member, now: datetime) -> tuple[Outbox | None, str | None]:
    """A member whose link expired asks for a new one (the expired page's button): the
    current reminder with a fresh link, on the member's channel, at most once a day.
    Returns the queued row (None: already sent today) and the channel (None: unreachable)."""
    channel = reach.channel_for(member, settings)
    if channel is None or member.opted_out or case.status != OPEN:
        return None, None
    if channel == outbox.EMAIL:
        payload = await email_payload(session, settings, case, member, "reminder", now)
    else:
        payload = await reminder_payload(session, settings, case, member, "reminder", now)
    row = await outbox.queue_message(
        session, member, "bot", payload, now, priority=outbox.PRIORITY_BOT, case_id=case.id,
        dedupe_key=f"fresh-link:{case.id}:{now:%Y-%m-%d}", channel=channel,
        settings=settings)
    return row, channel


def human_keyboard(case: RecoveryCase | None = None) -> dict[str, Any]:
    """Just "Talk to a person" (case id 0 when there is no case: it only asks for a person)."""
    return {"inline_keyboard": [[
        {"text": _("Talk to a person"), "callback_data": f"{HUMAN_PREFIX}{case.id if case else 0}"}
    ]]}


def card_expiring_payload(first_name: str | None, url: str | None, expired: bool = False
                          ) -> dict[str, Any]:
    """"Your card expires soon" (or "has expired", MemberPress's after-expiry reminder), with
    a button to add the new one (or to reach a person when the billing system gave us no page
    for it). Not tied to a case: the human button's case id 0 only asks for a person."""
    text = render("dunning/card_expiring.j2", first_name=first_name or None, url=url,
                  expired=expired)
    rows = [[{"text": _("Add my new card"), "url": url}]] if url else []
    rows.append([{"text": _("Talk to a person"), "callback_data": f"{HUMAN_PREFIX}0"}])
    return {"text": text, "parse_mode": "HTML", "reply_markup": {"inline_keyboard": rows}}


async def explain(session: AsyncSession, settings: Settings, case: RecoveryCase,
                  member: Member, now: datetime) -> tuple[Markup, dict[str, Any]]:
    """"Why did this fail?" for one case, in the current language, with the buttons its
    next step names (the member may ask this long after the reminder's buttons scrolled
    away)."""
    from payrescue.billing.links import create_update_link

    context = await case_context(session, settings, case, member, now)
    url = await create_update_link(session, case, settings, now)
    return render("dunning/_facts.j2", **context), case_keyboard(case, url, why=False)
