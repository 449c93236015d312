"""The gateway-fault alarm: when payments fail on our side, the owner hears of it and the
members are not blamed.

Many "processing error" failures in a short window (default 5 in 10 minutes), or one
failure the provider blames on our account's configuration, raise an `Alert`: a Telegram
message to the admin chat (an outbox row, priority 0), a banner in the console (through
`alert.raised`), and `held=True` on the affected cases so no reminder goes out. The hold ends
when an admin releases the alert (`release_alert`) or when the provider's own retries have
paid one of the held cases (the gateway works again).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import timeline
from payrescue.billing import cases, declines
from payrescue.config import Settings
from payrescue.db.models import Alert, Outbox, RecoveryCase
from payrescue.events import Event
from payrescue.i18n import _, use_language

log = logging.getLogger(__name__)

GATEWAY_FAULT = "gateway_fault"
CONFIGURATION = "provider_configuration"
KINDS = (GATEWAY_FAULT, CONFIGURATION)
RELEASED_BY_RETRIES = "provider retries"


@dataclass
class Released:
    alert: Alert
    events: list[Event] = field(default_factory=list)  # publish after the commit


async def active_alert(session: AsyncSession, kind: str, provider: str) -> Alert | None:
    """The alert of this kind that is up, if any. On PostgreSQL, transactions of several
    service processes take turns from here to their commit (an advisory lock), so two of them
    cannot both find none and raise one each."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(_lock_key(kind, provider))))
    return await session.scalar(
        select(Alert).where(Alert.kind == kind, Alert.provider == provider,
                            Alert.released_at.is_(None))
        .order_by(Alert.id.desc()).limit(1).with_for_update())


def _lock_key(kind: str, provider: str) -> int:
    digest = hashlib.blake2b(f"payrescue-alert:{kind}:{provider}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


async def check_gateway_fault(session: AsyncSession, settings: Settings, provider: str,
                              now: datetime) -> list[Event]:
    """Raise the alarm once the threshold is reached; while it is up, hold new cases too."""
    since = now - timedelta(minutes=settings.gateway_fault_window_minutes)
    recent = list(await session.scalars(select(RecoveryCase).where(
        RecoveryCase.provider == provider, RecoveryCase.status == cases.OPEN,
        RecoveryCase.decline_category == declines.PROCESSING_ERROR,
        RecoveryCase.last_failure_at >= since)))
    alert = await active_alert(session, GATEWAY_FAULT, provider)
    if alert is None and len(recent) < settings.gateway_fault_threshold:
        return []
    events: list[Event] = []
    if alert is None:
        alert, events = await _raise(
            session, settings, GATEWAY_FAULT, provider, now,
            {"count": len(recent), "window_minutes": settings.gateway_fault_window_minutes})
    events += await _hold(session, alert, recent, now)
    return events


async def raise_configuration_alert(session: AsyncSession, settings: Settings, provider: str,
                                    case: RecoveryCase, code: str, now: datetime) -> list[Event]:
    """The provider blames our account (an expired key, test mode in live …): alarm at once."""
    alert = await active_alert(session, CONFIGURATION, provider)
    events: list[Event] = []
    if alert is None:
        alert, events = await _raise(session, settings, CONFIGURATION, provider, now,
                                     {"code": code[:100]})
    events += await _hold(session, alert, [case], now)
    return events


async def _raise(session: AsyncSession, settings: Settings, kind: str, provider: str,
                 now: datetime, details: dict) -> tuple[Alert, list[Event]]:
    alert = Alert(kind=kind, provider=provider, details={**details, "case_ids": []},
                  raised_at=now)
    session.add(alert)
    await session.flush()
    log.warning("alert raised", extra={"alert_id": alert.id, "kind": kind, "provider": provider})
    events = [Event("alert.raised", {"alert_id": alert.id})]
    if settings.admin_chat_id is None:
        log.warning("no admin chat configured; the alert shows in the console only",
                    extra={"alert_id": alert.id})
        return alert, events
    row = Outbox(
        member_id=None, chat_id=settings.admin_chat_id, kind="alert", priority=0,
        method="sendMessage", payload={"text": admin_text(alert, settings), "parse_mode": "HTML"},
        status="queued", attempts=0, not_before=now, dedupe_key=f"alert:{alert.id}",
        created_at=now)
    session.add(row)
    await session.flush()
    return alert, [*events, Event("outbox.queued", {"outbox_id": row.id})]


def admin_text(alert: Alert, settings: Settings) -> str:
    """The owner's Telegram message, in the business's default language."""
    with use_language(settings.default_language):
        if alert.kind == GATEWAY_FAULT:
            head = _("Payment gateway fault: {count} payments failed with a processing error "
                     "within {minutes} minutes ({provider}).").format(
                count=alert.details.get("count", 0),
                minutes=alert.details.get("window_minutes", 0), provider=alert.provider)
        else:
            head = _("The payment provider ({provider}) reports a configuration problem with "
                     "your account ({code}).").format(provider=alert.provider,
                                                      code=alert.details.get("code", ""))
        tail = _("Reminders to the affected members are on hold, so nobody is blamed for our "
                 "fault. Once it is fixed, send them with the button on any console page (or "
                 "`payrescue alerts release {id}`); they also go out by themselves as soon as "
                 "one of the provider's own retries succeeds.").format(
            id=alert.id)
    return f"⚠️ <b>{head}</b>\n\n{tail}"


async def _hold(session: AsyncSession, alert: Alert, targets: list[RecoveryCase],
                now: datetime) -> list[Event]:
    held_ids = list(alert.details.get("case_ids", []))
    events = []
    for case in targets:
        if case.id not in held_ids:
            held_ids.append(case.id)
        if cases.set_held(case, True, now) is not None:
            timeline.case_event(session, case.member_id, case.id,
                                timeline.CASE_PREFIX + cases.HELD, now)
            events.append(Event("case.changed", {"case_id": case.id, "change": cases.HELD}))
    alert.details = {**alert.details, "case_ids": held_ids}
    await session.flush()
    return events


async def release_alert(session: AsyncSession, alert_id: int, by: str,
                        now: datetime) -> Released:
    """An admin (or the provider's retries) ends the alarm: held reminders may go out again.

    The caller commits and then publishes `Released.events`. Raises LookupError for an
    unknown alert; releasing twice changes nothing the second time.
    """
    alert = await session.scalar(select(Alert).where(Alert.id == alert_id).with_for_update())
    if alert is None:
        raise LookupError(f"no alert {alert_id}")
    if alert.released_at is not None:
        return Released(alert)
    alert.released_at, alert.released_by = now, by[:200]
    events = [Event("alert.released", {"alert_id": alert.id})]
    held_ids = alert.details.get("case_ids", [])
    if held_ids:
        for case in await session.scalars(
                select(RecoveryCase).where(RecoveryCase.id.in_(held_ids)).with_for_update()):
            if await _held_by_another(session, case, alert):
                continue
            if cases.set_held(case, False, now) is not None:
                timeline.case_event(session, case.member_id, case.id,
                                    timeline.CASE_PREFIX + cases.RELEASED, now)
                events.append(Event("case.changed",
                                    {"case_id": case.id, "change": cases.RELEASED}))
    await session.flush()
    log.info("alert released", extra={"alert_id": alert.id})
    return Released(alert, events)


async def _held_by_another(session: AsyncSession, case: RecoveryCase, alert: Alert) -> bool:
    others = await session.scalars(select(Alert).where(
        Alert.released_at.is_(None), Alert.id != alert.id))
    return any(case.id in other.details.get("case_ids", []) for other in others)


async def release_when_recovered(session: AsyncSession, now: datetime) -> list[Event]:
    """Release every active alert once a provider retry paid one of its held cases: the
    gateway works again, so the members whose payment is still open get their reminders."""
    events: list[Event] = []
    for alert in list(await session.scalars(select(Alert).where(Alert.released_at.is_(None)))):
        held_ids = alert.details.get("case_ids", [])
        if not held_ids:
            continue
        paid_again = await session.scalar(select(RecoveryCase.id).where(
            RecoveryCase.id.in_(held_ids), RecoveryCase.status == cases.RECOVERED).limit(1))
        if paid_again is not None:
            events += (await release_alert(session, alert.id, RELEASED_BY_RETRIES, now)).events
    return events
