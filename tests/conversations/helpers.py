"""Shared steps for the conversation tests: linked members, cases, waiting for the bus."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from payrescue.db.models import Member, Message, Outbox, RecoveryCase, Subscription
from payrescue.events import Event
from payrescue.keys import BUS
from tests.harness import RunningService

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00"
       b"\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05"
       b"\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


async def linked_member(svc: RunningService, name: str = "Anna Schmidt", *,
                        language: str = "de", time_zone: str | None = None
                        ) -> tuple[Member, int]:
    """A member whose Telegram chat is linked; returns the member and the chat id."""
    member = await svc.add_member(name=name, language=language, time_zone=time_zone)
    user = svc.create_user(name.split()[0], language_code=language)
    async with svc.app[BUS].subscribe() as events:
        await svc.link(member, user)
        # the link's two timeline lines (/start, the greeting) are announced just after the
        # greeting reached the chat: once they are, a test's own events are the next ones
        announced = 0
        async with asyncio.timeout(5):
            while announced < 2:
                event = await events.get()
                announced += event.topic == "message.created" \
                    and event.data.get("member_id") == member.id
    return member, user["id"]


async def open_case(svc: RunningService, member: Member, **fields: Any) -> RecoveryCase:
    """A recovery case as billing opens it (written directly), announced on the bus."""
    now = svc.clock.now()
    async with svc.sessionmaker() as session:
        subscription = Subscription(member_id=member.id, provider="stripe",
                                    external_id=f"sub_{member.id}", plan_name="Gold Club",
                                    amount_minor=2900, currency="EUR", created_at=now)
        session.add(subscription)
        await session.flush()
        values: dict[str, Any] = {
            "member_id": member.id, "subscription_id": subscription.id, "provider": "stripe",
            "invoice_ref": f"in_{member.id}_{now.timestamp()}", "amount_minor": 2900,
            "currency": "EUR", "decline_category": "insufficient_funds",
            "next_attempt_at": now + timedelta(days=3), "opened_at": now,
            "last_failure_at": now, "updated_at": now,
        }
        values.update(fields)
        case = RecoveryCase(**values)
        session.add(case)
        await session.commit()
    await changed(svc, case, "opened")
    return case


async def changed(svc: RunningService, case: RecoveryCase, change: str) -> None:
    await svc.app[BUS].publish(Event("case.changed", {"case_id": case.id, "change": change}))


async def advance(svc: RunningService, case: RecoveryCase, *, seconds: float = 0,
                  to: datetime | None = None) -> None:
    """Move time, then wake the reconciler as its periodic tick would."""
    await svc.clock.advance(seconds, to=to)
    await changed(svc, case, "tick")


async def set_case(svc: RunningService, case: RecoveryCase, change: str, **fields: Any) -> None:
    async with svc.sessionmaker() as session:
        row = await session.get(RecoveryCase, case.id)
        assert row is not None
        for key, value in fields.items():
            setattr(row, key, value)
        await session.commit()
    await changed(svc, case, change)


async def outbox_rows(svc: RunningService, **where: Any) -> list[Outbox]:
    async with svc.sessionmaker() as session:
        query = select(Outbox).order_by(Outbox.id)
        for key, value in where.items():
            query = query.where(getattr(Outbox, key) == value)
        return list(await session.scalars(query))


async def wait_for_rows(svc: RunningService, count: int, timeout: float = 5,  # noqa: ASYNC109
                        **where: Any) -> list[Outbox]:
    """Wait (woken by outbox.updated events on the bus) until `count` rows match."""
    async with svc.app[BUS].subscribe() as events, asyncio.timeout(timeout):
        while len(rows := await outbox_rows(svc, **where)) < count:
            try:
                async with asyncio.timeout(0.5):
                    await events.get()
            except TimeoutError:
                continue
        return rows


async def timeline_of(svc: RunningService, member_id: int, count: int,
                      timeout: float = 5) -> list[Message]:  # noqa: ASYNC109
    """The member's timeline once it holds `count` entries (woken by message.created: an
    update's lines commit just after the bot's last answer reached the chat)."""
    async with svc.app[BUS].subscribe() as events, asyncio.timeout(timeout):
        while True:
            async with svc.sessionmaker() as session:
                lines = list(await session.scalars(
                    select(Message).where(Message.member_id == member_id).order_by(Message.id)))
            if len(lines) >= count:
                return lines
            try:
                async with asyncio.timeout(0.5):
                    await events.get()
            except TimeoutError:
                continue


async def stop_notifier(svc: RunningService) -> None:
    """End the service's own notifier (as a crash would), so a test can run its own."""
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "notifier"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m.get("plain_text") or m.get("caption_plain") or "" for m in messages]


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    markup = message.get("reply_markup") or {}
    return [button for row in markup.get("inline_keyboard", []) for button in row]
