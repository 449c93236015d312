"""What the bot writes in the team group, in the team's language: topic titles, the first
post of a topic (payment context, who holds the conversation, buttons), mirrored lines.

These are texts for agents, not for members, so they are plain text built here from the
gettext catalogs (never HTML: a member's words go in as they are, and Telegram shows them
as text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue import handoff_rules, timeline
from payrescue.conversations import ASSIGNED, BOT, RESOLVED, WAITING
from payrescue.db.models import Agent, Conversation, Message
from payrescue.i18n import _, format_money
from payrescue.member_context import MemberContext, member_context

CLAIM, LINK, RESOLVE, BACK = "team:claim:", "team:link:", "team:resolve:", "team:back:"
ACTIONS = (CLAIM, LINK, RESOLVE, BACK)
MAX_TITLE = 128  # Telegram's limit for a topic name
MAX_POST = 4096
LAST_WORDS = 300  # characters of the member's last message in the first post


@dataclass
class FirstPost:
    text: str
    reply_markup: dict[str, Any] | None


def unknown_member(member_id: int) -> str:
    """A member without a name (erased, or never given)."""
    return _("Member %(id)s") % {"id": member_id}


def who(context: MemberContext) -> str:
    return context.member.first_name or unknown_member(context.member.id)


def amount(context: MemberContext) -> str | None:
    case = context.case
    return format_money(case.amount_minor, case.currency) if case is not None else None


def title(context: MemberContext, conversation: Conversation) -> str:
    """Member's first name · main reason · amount (never the e-mail address)."""
    reasons = sorted(conversation.handoff_reasons or [],
                     key=lambda r: -handoff_rules.priority([r]))
    parts = [who(context)]
    if reasons:
        parts.append(handoff_rules.badge(reasons[0]))
    if amount(context):
        parts.append(amount(context))
    return " · ".join(parts)[:MAX_TITLE]


def _link_state(context: MemberContext) -> str:
    link = context.link
    if link is None:
        return _("no update link sent yet")
    if link.completed_at is not None:
        return _("update link used, payment method updated")
    if link.first_opened_at is not None:
        return _("update link opened, not completed")
    return _("update link sent, not opened yet")


def _holder_line(conversation: Conversation, holder: Agent | None) -> str:
    if conversation.status == WAITING:
        return _("⏳ Waiting for someone to claim it.")
    if conversation.status == ASSIGNED:
        return _("✋ Taken by %(name)s.") % {"name": holder.name if holder else "?"}
    if conversation.status == RESOLVED:
        return _("✅ Resolved. The member is asked for a rating.")
    if conversation.status == BOT:
        return _("🤖 Back with the bot.")
    return ""


def keyboard(conversation: Conversation) -> dict[str, Any] | None:
    """Claim while it waits; a fresh link, resolve and back to the bot while it is open."""
    cid = conversation.id
    if conversation.status not in (WAITING, ASSIGNED):
        return None
    first = [{"text": _("Claim"), "callback_data": f"{CLAIM}{cid}"}] \
        if conversation.status == WAITING else []
    return {"inline_keyboard": [
        [*first, {"text": _("Send fresh link"), "callback_data": f"{LINK}{cid}"}],
        [{"text": _("Resolve"), "callback_data": f"{RESOLVE}{cid}"},
         {"text": _("Back to bot"), "callback_data": f"{BACK}{cid}"}],
    ]}


async def first_post(session: AsyncSession, conversation: Conversation, note_prefix: str,
                     context: MemberContext | None = None) -> tuple[str, FirstPost]:
    """(topic title, first post) for the conversation as it is now."""
    context = context or await member_context(session, conversation)
    holder = (await session.get(Agent, conversation.assigned_agent_id)
              if conversation.assigned_agent_id else None)
    lines = [_("%(name)s needs a person.") % {"name": who(context)}]
    reasons = [handoff_rules.badge(r) for r in conversation.handoff_reasons or []]
    if reasons:
        lines.append(_("Why: %(reasons)s") % {"reasons": ", ".join(reasons)})
    case = context.case
    if case is not None:
        lines.append(_("Plan: %(plan)s · %(amount)s") % {
            "plan": context.plan or _("unknown plan"), "amount": amount(context)})
        lines.append(_("Declined: %(words)s") % {"words": context.decline_words})
        lines.append(_("Failed attempts: %(count)s") % {"count": case.attempt_count})
        lines.append(_("Link: %(state)s") % {"state": _link_state(context)})
    else:
        lines.append(_("No open payment case."))
    last = await session.scalar(
        select(Message.text).where(Message.conversation_id == conversation.id,
                                   Message.sender == timeline.MEMBER,
                                   Message.text.is_not(None))
        .order_by(Message.id.desc()).limit(1))
    if last:
        quoted = last if len(last) <= LAST_WORDS else last[:LAST_WORDS] + "…"
        lines.append(_("Last message: %(text)s") % {"text": quoted})
    lines.append("")
    lines.append(_holder_line(conversation, holder))
    if conversation.status in (WAITING, ASSIGNED):
        lines.append(_("Write here to answer the member; start with %(prefix)s for an "
                       "internal note.") % {"prefix": note_prefix})
    return title(context, conversation), FirstPost("\n".join(lines)[:MAX_POST],
                                                   keyboard(conversation))


def line_text(line: Message, member_name: str, agent_name: str | None) -> str:
    """One mirrored timeline line as the topic shows it."""
    words = line.text or ""
    if line.sender == timeline.MEMBER:
        head = member_name
    elif line.sender == timeline.NOTE:
        head = _("Note by %(name)s") % {"name": agent_name or "?"}
    else:
        head = agent_name or "?"
    if line.file_id and not words:
        words = _("[%(kind)s]") % {"kind": line.kind}
    return f"{head}: {words}" if words else head
