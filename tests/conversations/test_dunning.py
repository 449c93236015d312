"""The dunning timeline, end to end: case → outbox → notifier → emulator → member."""

from __future__ import annotations

from datetime import UTC, datetime

from payrescue.clock import FakeClock
from tests.conversations.helpers import (
    advance,
    buttons,
    linked_member,
    open_case,
    outbox_rows,
    set_case,
    texts,
    wait_for_rows,
)
from tests.harness import running_service

DAY = 86400


async def test_failed_payment_message_then_reminders_then_final(service) -> None:
    member, chat = await linked_member(service, language="de")
    case = await open_case(service, member)
    messages = await service.emulator.wait_for_messages(chat, 2)
    first = messages[-1]
    assert "Gold Club" in first["plain_text"]
    assert "29,00\xa0€" in first["plain_text"]  # Babel: a no-break space
    assert "8. Januar 2026" in first["plain_text"]  # the next attempt, in German
    labels = [b["text"] for b in buttons(first)]
    assert labels == ["Zahlungsdaten aktualisieren", "Warum hat es nicht geklappt?",
                      "Mit unserem Team sprechen"]
    assert buttons(first)[0]["url"].startswith(service.settings.public_url("/u/"))

    for day, count in ((3, 3), (7, 4), (12, 5)):
        await advance(service, case, to=datetime(2026, 1, 5 + day, 10, 0, tzinfo=UTC))
        rows = await wait_for_rows(service, count - 1, kind="reminder", status="sent")
        assert [r.dunning_step for r in rows] == list(range(count - 1))
    messages = await service.emulator.wait_for_messages(chat, 5)
    assert "letzte Erinnerung" in texts(messages)[-1]
    # nothing more after the plan ran out
    await advance(service, case, seconds=DAY * 5)
    assert len(await outbox_rows(service, kind="reminder")) == 4


async def test_english_member_gets_english_amount_and_buttons(service) -> None:
    member, chat = await linked_member(service, "John Smith", language="en")
    await open_case(service, member, decline_category="expired_card")
    message = (await service.emulator.wait_for_messages(chat, 2))[-1]
    assert "€29.00" in message["plain_text"]
    assert "expired" in message["plain_text"]
    assert [b["text"] for b in buttons(message)][0] == "Update payment method"


async def test_quiet_hours_in_the_members_zone(engine, tmp_path) -> None:
    # 23:00 in New York is 04:00 UTC: outside the business's (Berlin) night rules
    clock = FakeClock(datetime(2026, 1, 6, 4, 0, tzinfo=UTC))
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path) as svc:
        member, chat = await linked_member(svc, language="en", time_zone="America/New_York")
        await open_case(svc, member)
        [row] = await wait_for_rows(svc, 1, kind="reminder")
        assert row.not_before == datetime(2026, 1, 6, 13, 0, tzinfo=UTC)  # 08:00 in New York
        assert row.status == "queued"
        await clock.advance(to=datetime(2026, 1, 6, 12, 59, tzinfo=UTC))
        assert len(svc.emulator.sent_messages(chat)) == 1  # only the greeting
        await clock.advance(to=datetime(2026, 1, 6, 13, 0, tzinfo=UTC))
        messages = await svc.emulator.wait_for_messages(chat, 2)
        assert "€29.00" in messages[-1]["plain_text"]


async def test_recovery_cancels_reminders_thanks_and_removes_buttons(service) -> None:
    member, chat = await linked_member(service, language="de")
    case = await open_case(service, member)
    await wait_for_rows(service, 1, kind="reminder", status="sent")
    await service.emulator.wait_until(lambda: buttons(service.emulator.sent_messages(chat)[-1]))
    now = service.clock.now()
    await set_case(service, case, "recovered", status="recovered", recovered_at=now,
                   recovered_amount_minor=2900)
    await wait_for_rows(service, 1, kind="edit", status="sent")
    messages = await service.emulator.wait_for_messages(chat, 3)
    assert "Vielen Dank" in texts(messages)[-1]
    reminder = messages[1]
    assert not buttons(reminder)  # the stale "update payment" button is gone
    await advance(service, case, seconds=DAY * 8)
    assert len(await outbox_rows(service, kind="reminder")) == 1


async def test_opted_out_member_gets_no_reminders_and_lost_case_a_kind_word(service) -> None:
    member, chat = await linked_member(service, language="en")
    await service.emulator.send_text(chat, "/stop")
    await service.emulator.wait_for_messages(chat, 2)
    case = await open_case(service, member)
    await service.emulator.send_text(chat, "/start")
    await service.emulator.wait_for_messages(chat, 3)
    assert await outbox_rows(service, kind="reminder") == []
    await set_case(service, case, "updated")
    await wait_for_rows(service, 1, kind="reminder", status="sent")
    await set_case(service, case, "lost", status="lost", lost_at=service.clock.now())
    messages = await service.emulator.wait_for_messages(chat, 5)
    assert "way back" in texts(messages)[-1]


async def test_held_case_gets_nothing(service) -> None:
    member, chat = await linked_member(service, language="en")
    case = await open_case(service, member, held=True, decline_category="processing_error")
    await advance(service, case, seconds=DAY * 4)
    assert await outbox_rows(service, kind="reminder") == []
    assert len(service.emulator.sent_messages(chat)) == 1


async def test_expiring_card_gets_one_warning(service) -> None:
    from payrescue.db.models import PaymentEvent
    from payrescue.events import Event
    from payrescue.keys import BUS

    member, chat = await linked_member(service, language="de")
    for number in range(2):  # the provider tells us twice
        async with service.sessionmaker() as session:
            session.add(PaymentEvent(
                provider="stripe", event_id=f"evt_exp_{number}",
                event_type="customer.source.expiring",
                kind="card_expiring", member_id=member.id, payload={},
                received_at=service.clock.now(), occurred_at=service.clock.now()))
            await session.commit()
        await service.app[BUS].publish(Event("member.card_expiring", {"member_id": member.id}))
        await wait_for_rows(service, 1, kind="reminder", status="sent")
    messages = await service.emulator.wait_for_messages(chat, 2)
    warning = messages[-1]
    assert warning["plain_text"].startswith("Hallo Anna,\n\ndie Karte, mit der Sie")
    assert len(await outbox_rows(service, kind="reminder")) == 1
    # no page from the billing system: the button it names reaches a person
    [human] = buttons(warning)
    assert human["text"] == "Mit unserem Team sprechen"
    assert "„Mit unserem Team sprechen“" in warning["plain_text"]
    await service.emulator.press_button(chat, warning["message_id"], human["callback_data"])
    messages = await service.emulator.wait_for_messages(chat, 3)
    assert "Ich gebe Sie an" in texts(messages)[-1]


async def test_expiring_card_warning_links_to_the_billing_systems_page(service) -> None:
    from payrescue.db.models import PaymentEvent, Subscription
    from payrescue.events import Event
    from payrescue.keys import BUS

    member, chat = await linked_member(service, language="en")
    now = service.clock.now()
    async with service.sessionmaker() as session:
        session.add(Subscription(member_id=member.id, provider="memberpress", external_id="s1",
                                 update_url="https://club.example.org/account/card",
                                 created_at=now))
        session.add(PaymentEvent(provider="memberpress", event_id="evt_exp", kind="card_expiring",
                                 event_type="card-expiring", member_id=member.id, payload={},
                                 received_at=now, occurred_at=now))
        await session.commit()
    await service.app[BUS].publish(Event("member.card_expiring", {"member_id": member.id}))
    warning = (await service.emulator.wait_for_messages(chat, 2))[-1]
    assert "tap “Add my new card”" in warning["plain_text"]
    assert [(b["text"], b.get("url")) for b in buttons(warning)] == [
        ("Add my new card", "https://club.example.org/account/card"),
        ("Talk to a person", None)]
