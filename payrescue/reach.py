"""Which channel reaches a member: the core's decision, so every sender agrees.

Telegram is the first channel: a member linked to the bot and not blocking it gets
Telegram. Otherwise (never linked, blocked the bot, erased the chat) e-mail, when the
e-mail channel is configured (`Settings.email_enabled`) and the address is not known to be
dead (`Member.email_problem`). The dunning plan is per case, not per channel: each step is
queued once under a channel-free dedupe key, so a member who links mid-case gets the next
step on Telegram and never one step twice. `PAYRESCUE_EMAIL_POLICY=also_first` adds an
e-mail copy of the first notice for members on Telegram.
"""

from __future__ import annotations

from payrescue.config import Settings
from payrescue.db.models import Member
from payrescue.outbox import EMAIL, TELEGRAM

__all__ = ["EMAIL", "TELEGRAM", "channel_for", "email_reachable", "extra_channels"]


def email_reachable(member: Member, settings: Settings) -> bool:
    return (settings.email_enabled and bool(member.email) and member.email_problem is None
            and member.erased_at is None)


def channel_for(member: Member, settings: Settings) -> str | None:
    """The channel this member's next message goes by; None: no way to reach them."""
    if member.erased_at is not None:
        return None
    if member.telegram is not None and not member.unreachable:
        return TELEGRAM
    if email_reachable(member, settings):
        return EMAIL
    return None


def extra_channels(member: Member, settings: Settings, step: int) -> list[str]:
    """Channels that get a copy of dunning step `step` besides `channel_for`'s."""
    if (step == 0 and settings.email_policy == "also_first"
            and channel_for(member, settings) == TELEGRAM and email_reachable(member, settings)):
        return [EMAIL]
    return []
