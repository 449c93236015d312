"""The schema: one typed class per table.

Status values are plain strings checked by the domain modules that own them
(`payrescue.billing.cases`, `payrescue.conversations`, `bot.notifier`), so a new state
needs no enum migration on PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from payrescue.db.types import UTCDateTime

# Named constraints, so migrations can drop and alter them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class Member(Base):
    """A paying member of the business. Personal fields become NULL when erased."""

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(5))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    memberpress_member_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    unreachable: Mapped[bool] = mapped_column(Boolean, default=False)  # blocked the bot
    # None: e-mail may be tried; "invalid" (not an address) or "rejected" (the mail server
    # refused it for good, a 5xx): no more e-mail until the address changes
    email_problem: Mapped[str | None] = mapped_column(String(20))
    invited_at: Mapped[datetime | None]  # last invitation to the Telegram chat by e-mail
    member_since: Mapped[datetime | None]
    erased_at: Mapped[datetime | None]
    created_at: Mapped[datetime]

    telegram: Mapped[TelegramLink | None] = relationship(
        back_populates="member", uselist=False, lazy="selectin"
    )

    @property
    def first_name(self) -> str:
        return (self.name or "").split(" ")[0]


class TelegramLink(Base):
    """The Telegram chat a member linked through their deep link; at most one per member."""

    __tablename__ = "telegram_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), unique=True
    )
    chat_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    telegram_user_id: Mapped[int] = mapped_column(BigInteger)
    language_code: Mapped[str | None] = mapped_column(String(16))
    linked_at: Mapped[datetime]

    member: Mapped[Member] = relationship(back_populates="telegram")


class UsedToken(Base):
    """One-time tokens already spent (deep-link tokens), so a replayed token changes nothing."""

    __tablename__ = "used_tokens"

    token_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(20))
    used_at: Mapped[datetime]


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("provider", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(200))
    plan_name: Mapped[str | None] = mapped_column(String(200))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    # billed every `interval_count` days, weeks, months or years (Stripe's terms); unknown
    # counts as monthly
    interval: Mapped[str | None] = mapped_column(String(5))
    interval_count: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(20), default="active")
    update_url: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class PaymentEvent(Base):
    """Every provider event, stored raw before it is acted on (dedupe by provider + id)."""

    __tablename__ = "payment_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        Index("ix_payment_events_provider_invoice_ref", "provider", "invoice_ref"),
        Index("ix_payment_events_provider_subscription_ref", "provider", "subscription_ref"),
        Index("ix_payment_events_provider_customer_ref", "provider", "customer_ref"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]]
    outcome: Mapped[str | None] = mapped_column(String(20))
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), index=True
    )
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("recovery_cases.id", ondelete="SET NULL"), index=True
    )
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    # the invoice/transaction the event is about, so a success that arrives before its
    # failure (deliveries come out of order) still keeps that failure from opening a case
    invoice_ref: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str | None] = mapped_column(String(20))  # normalised: failed, recovered, …
    # what the history of a subscription is replayed from (`billing.history`): the
    # subscription and customer it names (an event for a customer not known yet is parked
    # under them), and the normalised facts, including what a provider look-up added
    subscription_ref: Mapped[str | None] = mapped_column(String(200))
    customer_ref: Mapped[str | None] = mapped_column(String(200))
    facts: Mapped[dict[str, Any] | None]


class RecoveryCase(Base):
    """One failed renewal: open → recovered | lost."""

    __tablename__ = "recovery_cases"
    __table_args__ = (
        UniqueConstraint("provider", "invoice_ref"),
        Index("ix_recovery_cases_status_opened", "status", "opened_at"),
        # the recovery figures select cases by the day they opened, came back or were lost
        Index("ix_recovery_cases_opened_at", "opened_at"),
        Index("ix_recovery_cases_recovered_at", "recovered_at"),
        Index("ix_recovery_cases_lost_at", "lost_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"), index=True
    )
    provider: Mapped[str] = mapped_column(String(20))
    invoice_ref: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="open")
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    attempt_count: Mapped[int] = mapped_column(Integer, default=1)
    decline_code: Mapped[str | None] = mapped_column(String(100))
    decline_category: Mapped[str] = mapped_column(String(40), default="unknown")
    billing_reason: Mapped[str | None] = mapped_column(String(60))
    action_required: Mapped[bool] = mapped_column(Boolean, default=False)
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    update_url: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    reminders_paused_until: Mapped[datetime | None]  # an agent paused them (timeline says why)
    dunning_stage: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime]
    last_failure_at: Mapped[datetime]
    recovered_at: Mapped[datetime | None]
    recovered_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    attribution: Mapped[str | None] = mapped_column(String(20))
    lost_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class UpdateLink(Base):
    """A signed payment-update link sent for one case; opening and completion are tracked."""

    __tablename__ = "update_links"
    __table_args__ = (Index("ix_update_links_created_at", "created_at"),)  # link figures

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[str] = mapped_column(String(64), unique=True)
    case_id: Mapped[int] = mapped_column(
        ForeignKey("recovery_cases.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    first_opened_at: Mapped[datetime | None]
    open_count: Mapped[int] = mapped_column(Integer, default=0)
    completed_at: Mapped[datetime | None]


class RejectedEvent(Base):
    """A correctly signed provider event we cannot understand. It is answered 200, so the
    provider stops retrying it, and kept here for an admin to look at."""

    __tablename__ = "rejected_events"
    __table_args__ = (Index("ix_rejected_events_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    event_ref: Mapped[str | None] = mapped_column(String(200))  # the event's id, if readable
    reason: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    seen_at: Mapped[datetime | None]  # an admin has looked at it: no more banner


class Alert(Base):
    """An owner alarm such as a gateway fault; member reminders wait while it is active."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    provider: Mapped[str | None] = mapped_column(String(20))
    details: Mapped[dict[str, Any]]
    raised_at: Mapped[datetime]
    released_at: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(200))


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(10), default="agent")
    language: Mapped[str] = mapped_column(String(5), default="en")
    available: Mapped[bool] = mapped_column(Boolean, default=False)
    max_open: Mapped[int] = mapped_column(Integer, default=5)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    last_assigned_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]  # set: no log-in, every session ended
    # the agent's own Telegram account, linked through a one-time deep link from the
    # console: only linked agents act in the team group (`payrescue.teamgroup`)
    telegram_user_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    created_at: Mapped[datetime]


class ConsoleSession(Base):
    """A signed-in browser. The cookie holds a random token; only its hash is stored, so
    deleting the row (log-out, password change, disable) ends the session everywhere."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"),
                                          index=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]  # the absolute end, however active the session is


class Conversation(Base):
    """A member's chat: the bot answers (`bot`), or it waits for / belongs to a human."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_status_priority", "status", "priority"),
        Index("ix_conversations_resolved_at", "resolved_at"),  # satisfaction figures
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("recovery_cases.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(20), default="bot")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    handoff_reasons: Mapped[list[str]] = mapped_column(default=list)
    assigned_agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    not_understood: Mapped[int] = mapped_column(Integer, default=0)
    waiting_since: Mapped[datetime | None]
    first_response_at: Mapped[datetime | None]
    snoozed_until: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    rating: Mapped[int | None] = mapped_column(Integer)
    rating_comment: Mapped[str | None] = mapped_column(Text)
    # the newest timeline entry its assigned agent has had on screen: newer member lines
    # are unread (the queue marks them)
    seen_message_id: Mapped[int | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Handoff(Base):
    """One request for a human, kept for response-time and reason figures."""

    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    reasons: Mapped[list[str]]
    priority: Mapped[int] = mapped_column(Integer, default=0)
    requested_at: Mapped[datetime] = mapped_column(index=True)
    claimed_at: Mapped[datetime | None]
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    first_response_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(20))


class Message(Base):
    """One entry of a member's timeline (`payrescue.timeline`): what the member wrote or
    received on a channel, or what happened around them (case events, handoffs, claims,
    notes, ratings). `conversation_id` names the conversation it belongs to, when any."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        Index("ix_messages_member_id_id", "member_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("recovery_cases.id", ondelete="SET NULL")
    )
    sender: Mapped[str] = mapped_column(String(10))  # member | bot | agent | note | system
    # where it happened: telegram | email | console | billing
    channel: Mapped[str] = mapped_column(String(10), default="telegram")
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20), default="text")
    text: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    file_id: Mapped[str | None] = mapped_column(String(300))
    file_name: Mapped[str | None] = mapped_column(String(300))
    mime_type: Mapped[str | None] = mapped_column(String(100))
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)
    # a member's e-mail: its Message-ID, so the agent's answer is threaded under it
    email_message_id: Mapped[str | None] = mapped_column(String(250))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]


class Outbox(Base):
    """Everything sent to a member is a row first, then delivered by the notifier."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_priority_due", "status", "priority", "not_before"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), index=True
    )
    # telegram | email (payrescue.reach); the order and in-flight rules hold per channel
    channel: Mapped[str] = mapped_column(String(10), default="telegram",
                                         server_default="telegram")
    # the Telegram chat; for e-mail the member's id (one e-mail "chat" per member)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))  # reminder | agent_reply | bot | edit | alert
    priority: Mapped[int] = mapped_column(Integer, default=5)  # lower goes first
    method: Mapped[str] = mapped_column(String(40), default="sendMessage")
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[datetime | None]
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)
    email_message_id: Mapped[str | None] = mapped_column(String(250), index=True)  # Message-ID
    # the e-mail as it goes over SMTP, made when queued (payrescue.email_message); loaded
    # only by the mail sender, never by accident
    email_raw: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True,
                                                    deferred_raiseload=True)
    error: Mapped[str | None] = mapped_column(Text)
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("recovery_cases.id", ondelete="SET NULL"), index=True
    )
    dunning_step: Mapped[int | None] = mapped_column(Integer)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]


class CannedAnswer(Base):
    __tablename__ = "canned_answers"
    __table_args__ = (UniqueConstraint("shortcut", "language"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    shortcut: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(5))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Lease(Base):
    """Who runs a duty that must run in one process only (Telegram polling, the dunning
    scheduler, the console's watcher), until when: see `payrescue.leader`."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime]


class TeamGroup(Base):
    """The agents' Telegram supergroup with topics, bound by `/connect_team <code>`; the
    newest row is the group in use (`payrescue.teamgroup`)."""

    __tablename__ = "team_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    linked_at: Mapped[datetime]
    linked_by_telegram_user_id: Mapped[int] = mapped_column(BigInteger)


class TeamTopic(Base):
    """A member's forum topic in the team group, showing their conversation that needs a
    person. `thread_id` is empty until the topic exists in Telegram; `mirrored_message_id`
    is the newest timeline entry already queued for the topic."""

    __tablename__ = "team_topics"
    __table_args__ = (Index("ix_team_topics_group_chat_id_thread_id", "group_chat_id",
                            "thread_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"),
                                           index=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), unique=True)
    group_chat_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    first_post_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10), default="open")  # open | closed
    mirrored_message_id: Mapped[int] = mapped_column(Integer, default=0)
    closed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
