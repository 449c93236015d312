"""Signed payment-update links: `PUBLIC_BASE_URL/u/<token>`.

The token (payrescue.tokens, purpose "update") is opaque, signed, bound to one case and
expires after `update_link_days`; its random id is stored in `update_links`, so opening is
counted without ever logging the token. Where it leads is decided when it is opened: a fresh
Stripe Billing Portal session (they live minutes, so never in a message), the invoice's
hosted page when the bank wants 3-D Secure, or the URL MemberPress / the generic API gave.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import timeline, tokens
from payrescue.billing import cases
from payrescue.config import Settings
from payrescue.db.models import Member, Message, RecoveryCase, Subscription, UpdateLink
from payrescue.i18n import choose_language

PURPOSE = "update"
_EPOCH = datetime(1970, 1, 2, tzinfo=UTC)


async def create_update_link(session: AsyncSession, case: RecoveryCase, settings: Settings,
                             now: datetime) -> str:
    """A new link for this case; the caller commits. Returns the public URL."""
    token = tokens.issue(settings.secret, PURPOSE, case.id,
                         timedelta(days=settings.update_link_days), now)
    parsed = tokens.verify(settings.secret, PURPOSE, token, now)
    session.add(UpdateLink(token_id=parsed.token_id, case_id=case.id, created_at=now,
                           expires_at=parsed.expires_at, open_count=0))
    await session.flush()
    return settings.public_url(f"/u/{token}")


class Refusal(enum.Enum):
    INVALID = "invalid"  # tampered, unknown or not a token at all
    EXPIRED = "expired"


@dataclass
class Opened:
    case: RecoveryCase | None
    member: Member | None
    language: str
    refusal: Refusal | None = None
    entry: Message | None = None  # the opening on the member's timeline (publish it)


async def open_link(session: AsyncSession, token: str, settings: Settings,
                    now: datetime, fallback_language: str) -> Opened:
    """Verify the token and count the opening; a refused token names the member's language
    when the token is genuine but old."""
    try:
        parsed = tokens.verify(settings.secret, PURPOSE, token, now)
    except tokens.TokenExpired:
        # genuine but old: read it as of a moment it was valid, only to learn the language
        stale = tokens.verify(settings.secret, PURPOSE, token, _EPOCH)
        case = await session.get(RecoveryCase, stale.subject_id)
        member = await session.get(Member, case.member_id) if case else None
        return Opened(None, None, _language(member, settings, fallback_language),
                      Refusal.EXPIRED)
    except tokens.TokenError:
        return Opened(None, None, fallback_language, Refusal.INVALID)
    link = await session.scalar(select(UpdateLink).where(
        UpdateLink.token_id == parsed.token_id, UpdateLink.case_id == parsed.subject_id))
    case = await session.get(RecoveryCase, parsed.subject_id) if link else None
    if link is None or case is None:
        return Opened(None, None, fallback_language, Refusal.INVALID)
    member = await session.get(Member, case.member_id)
    link.open_count += 1
    link.first_opened_at = link.first_opened_at or now
    entry = timeline.case_event(session, case.member_id, case.id, timeline.LINK_OPENED, now)
    await session.flush()
    return Opened(case, member, _language(member, settings, fallback_language), entry=entry)


async def expired_case(session: AsyncSession, token: str, settings: Settings,
                       now: datetime) -> tuple[RecoveryCase, Member] | None:
    """The open case and member of a genuine link that has expired (None otherwise): the
    expired page offers them a fresh link."""
    try:
        tokens.verify(settings.secret, PURPOSE, token, now)
    except tokens.TokenExpired:
        stale = tokens.verify(settings.secret, PURPOSE, token, _EPOCH)
    except tokens.TokenError:
        return None
    else:
        return None  # still valid: nothing to renew
    case = await session.get(RecoveryCase, stale.subject_id)
    member = await session.get(Member, case.member_id) if case else None
    if case is None or member is None or case.status != cases.OPEN:
        return None
    return case, member


def _language(member: Member | None, settings: Settings, fallback: str) -> str:
    if member is None:
        return fallback
    telegram = member.telegram.language_code if member.telegram else None
    return choose_language(member.language, telegram, fallback or settings.default_language)


@dataclass
class Destination:
    url: str | None = None  # redirect here
    portal_customer: str | None = None  # or open a Stripe Billing Portal session for them
    settled: bool = False  # nothing to pay any more


async def destination(session: AsyncSession, opened: Opened) -> Destination:
    case, member = opened.case, opened.member
    if case is None or member is None:
        return Destination()
    if case.status != cases.OPEN:
        return Destination(settled=True)
    if case.action_required and case.hosted_invoice_url:
        return Destination(url=case.hosted_invoice_url)
    if case.provider == "stripe" and member.stripe_customer_id:
        return Destination(portal_customer=member.stripe_customer_id)
    url = case.update_url
    if url is None and case.subscription_id is not None:
        subscription = await session.get(Subscription, case.subscription_id)
        url = subscription.update_url if subscription else None
    return Destination(url=url or case.hosted_invoice_url)
