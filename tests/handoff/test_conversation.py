"""The conversation view: context, replies through the outbox, notes, typing, canned answers,
the queue's order and search, and escaped member text."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

from sqlalchemy import func, select

from payrescue.billing import stripe_events
from payrescue.billing.ingest import ingest_batch
from payrescue.db.models import (
    CannedAnswer,
    Conversation,
    Member,
    Message,
    Outbox,
    PaymentEvent,
    RecoveryCase,
    Subscription,
    UpdateLink,
)
from payrescue.i18n import format_datetime
from tests.billing.conftest import invoice, stripe_event, subscription
from tests.handoff.conftest import log_in

XSS = "<img src=x onerror=alert(1)>"
JSON = {"Accept": "application/json"}


async def _claimed(make_client, world, **conversation):
    await world.agent()
    conversation_id = await world.conversation(**conversation)
    client = await make_client()
    token = await log_in(client)
    await client.post(f"/console/conversations/{conversation_id}/claim",
                      data={"csrf_token": token})
    return client, token, conversation_id


async def test_reply_goes_through_the_outbox_as_plain_text(make_client, world, bus):
    client, token, conversation_id = await _claimed(make_client, world, chat_id=777)
    async with bus.subscribe() as events:
        response = await client.post(f"/console/conversations/{conversation_id}/reply",
                                     data={"text": "Guten Tag! <b>Ihre</b> Karte",
                                           "csrf_token": token}, headers=JSON)
        assert (await response.json())["ok"] is True
        topics = [(await asyncio.wait_for(events.get(), 5)).topic for _ in range(2)]
    assert topics == ["outbox.queued", "message.created"]
    async with world.sessionmaker() as db:
        message = (await db.scalars(select(Message).where(Message.sender == "agent"))).one()
        outbox = await db.get(Outbox, message.outbox_id)
    assert message.sender == "agent" and message.text == "Guten Tag! <b>Ihre</b> Karte"
    assert outbox.kind == "agent_reply" and outbox.priority == 0
    assert outbox.method == "sendMessage" and outbox.status == "queued"
    assert outbox.chat_id == 777
    assert outbox.payload == {"text": "Guten Tag! <b>Ihre</b> Karte"}  # no parse_mode
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert "&lt;b&gt;Ihre&lt;/b&gt;" in page and "queued" in page


async def test_delivery_state_shows_sent_and_failed_with_reason(make_client, world):
    client, token, conversation_id = await _claimed(make_client, world)
    for text in ("first", "second"):
        await client.post(f"/console/conversations/{conversation_id}/reply",
                          data={"text": text, "csrf_token": token}, headers=JSON)
    async with world.sessionmaker() as db, db.begin():
        first, second = (await db.scalars(select(Outbox).order_by(Outbox.id))).all()
        first.status = "sent"
        second.status, second.error = "failed", "Forbidden: bot was blocked by the user"
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert "delivered" in page
    # Telegram's own words apart, as code: the sentence around them is the agent's language
    assert ('failed: Telegram refused it <code class="detail">Forbidden: bot was blocked by '
            "the user</code>") in page


async def test_empty_or_too_long_replies_are_refused_and_nothing_is_queued(make_client, world):
    client, token, conversation_id = await _claimed(make_client, world)
    url = f"/console/conversations/{conversation_id}/reply"
    for text, error in (("   ", "The message is empty."),
                        ("x" * 4097, "Telegram takes at most 4096 characters per message.")):
        response = await client.post(url, data={"text": text, "csrf_token": token},
                                     headers=JSON)
        assert response.status == 409
        assert (await response.json())["error"] == error
    async with world.sessionmaker() as db:
        assert (await db.scalars(select(Outbox))).all() == []


async def test_only_the_owner_replies(make_client, world):
    await world.agent()
    await world.agent("ben@example.org", name="Ben")
    conversation_id = await world.conversation()
    anna, ben = await make_client(), await make_client()
    anna_token, ben_token = await log_in(anna), await log_in(ben, "ben@example.org")
    url = f"/console/conversations/{conversation_id}/reply"
    response = await anna.post(url, data={"text": "hi", "csrf_token": anna_token}, headers=JSON)
    assert (await response.json())["error"] == "Claim the conversation first."
    await anna.post(f"/console/conversations/{conversation_id}/claim",
                    data={"csrf_token": anna_token})
    response = await ben.post(url, data={"text": "hi", "csrf_token": ben_token}, headers=JSON)
    assert (await response.json())["error"] == "Another agent holds this conversation."


async def test_a_note_is_never_queued(make_client, world):
    client, token, conversation_id = await _claimed(make_client, world)
    await client.post(f"/console/conversations/{conversation_id}/note",
                      data={"text": "Called her bank", "csrf_token": token})
    async with world.sessionmaker() as db:
        note = (await db.scalars(select(Message).where(Message.sender == "note"))).one()
        assert (await db.scalars(select(Outbox))).all() == []
    assert note.sender == "note" and note.outbox_id is None
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert "Internal note" in page and "Called her bank" in page


async def test_typing_is_published_at_most_every_few_seconds(make_client, world, bus, clock):
    client, token, conversation_id = await _claimed(make_client, world, chat_id=42)
    url = f"/console/conversations/{conversation_id}/typing"
    async with bus.subscribe() as events:
        sent = [(await (await client.post(url, headers={"X-CSRF-Token": token})).json())["sent"]
                for _ in range(3)]
        await clock.advance(5)
        sent.append((await (await client.post(url, headers={"X-CSRF-Token": token})).json())
                    ["sent"])
        event = await asyncio.wait_for(events.get(), 5)
    assert sent == [True, False, False, True]
    assert event.topic == "agent.typing"
    assert event.data == {"conversation_id": conversation_id, "chat_id": 42, "agent_id": 1}


async def test_member_html_is_shown_as_text_everywhere(make_client, world):
    client, _token, conversation_id = await _claimed(make_client, world, name=XSS)
    async with world.sessionmaker() as db, db.begin():
        member_id = (await db.get(Conversation, conversation_id)).member_id
        db.add(Message(conversation_id=conversation_id, member_id=member_id, sender="member",
                       text=XSS,
                       created_at=world.clock.now()))
    for path in (f"/console/conversations/{conversation_id}", "/console/queue?view=open"):
        page = await (await client.get(path)).text()
        assert XSS not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page


async def test_context_shows_case_in_plain_words(make_client, world):
    client, _token, conversation_id = await _claimed(make_client, world, amount=4900)
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert "Not enough money on the account" in page
    assert "€49.00" in page


async def test_queue_orders_by_priority_then_waiting_time_and_marks_overdue(
        make_client, world, clock):
    await world.agent()
    start = clock.now()
    await world.conversation(name="Old Low", chat_id=1, waiting_since=start - timedelta(hours=1))
    await world.conversation(name="New High", chat_id=2, priority=5, waiting_since=start)
    await world.conversation(name="Newer Low", chat_id=3, waiting_since=start)
    client = await make_client()
    await log_in(client)
    page = await (await client.get("/console/queue")).text()
    order = [page.index(name) for name in ("New High", "Old Low", "Newer Low")]
    assert order == sorted(order)
    assert page.count('class="overdue"') == 1  # only the one waiting an hour (target 15 min)


async def test_queue_search_by_name_or_e_mail(make_client, world):
    await world.agent()
    await world.conversation(name="Mia Muster", chat_id=1, email="mia@example.org")
    await world.conversation(name="Otto Beispiel", chat_id=2, email="otto@example.org")
    client = await make_client()
    await log_in(client)
    by_name = await (await client.get("/console/queue?q=muster")).text()
    by_mail = await (await client.get("/console/queue?q=OTTO@")).text()
    assert "Mia Muster" in by_name and "Otto Beispiel" not in by_name
    assert "Otto Beispiel" in by_mail and "Mia Muster" not in by_mail
    assert (await client.get("/console/queue?view=bogus")).status == 400


async def test_canned_answers_admin_and_member_language_first(make_client, world):
    await world.agent("root@example.org", name="Root", role="admin")
    conversation_id = await world.conversation(name="Mia Muster", language="de", amount=2900)
    admin = await make_client()
    token = await log_in(admin, "root@example.org")
    for language, body in (("en", "Hi {{ first_name }}, you owe {{ amount }}."),
                           ("de", "Hallo {{ first_name }}, offen sind {{ amount }}.")):
        response = await admin.post("/console/canned", allow_redirects=False, data={
            "shortcut": "/owe", "language": language, "title": "Owed", "body": body,
            "csrf_token": token})
        assert response.status == 303
    broken = await admin.post("/console/canned", data={
        "shortcut": "bad", "language": "en", "title": "t", "body": "{{ oops", "csrf_token": token})
    assert broken.status == 400 and "template error" in await broken.text()
    twice = await admin.post("/console/canned", data={
        "shortcut": "owe", "language": "en", "title": "t", "body": "x", "csrf_token": token})
    assert twice.status == 409
    answers = await (await admin.get(
        f"/console/api/conversations/{conversation_id}/canned")).json()
    assert [a["language"] for a in answers] == ["de", "en"]
    assert answers[0]["text"] == "Hallo Mia, offen sind 29,00\xa0€."
    async with world.sessionmaker() as db:
        answer_id = (await db.scalars(select(CannedAnswer.id))).first()
    await admin.post(f"/console/canned/{answer_id}/delete", data={"csrf_token": token})
    async with world.sessionmaker() as db:
        assert len((await db.scalars(select(CannedAnswer))).all()) == 1


async def test_unlinked_member_cannot_get_a_reply(make_client, world):
    client, token, conversation_id = await _claimed(make_client, world)
    async with world.sessionmaker() as db, db.begin():
        member = (await db.scalars(select(Member))).one()
        await db.delete(member.telegram)
    response = await client.post(f"/console/conversations/{conversation_id}/reply",
                                 data={"text": "hi", "csrf_token": token}, headers=JSON)
    assert (await response.json())["error"] == (
        "This member has no Telegram chat linked and no usable e-mail address.")


async def test_lifetime_value_counts_each_paid_invoice_once(make_client, world):
    client, _token, conversation_id = await _claimed(make_client, world)
    async with world.sessionmaker() as db, db.begin():
        member = (await db.scalars(select(Member))).one()
        for event_id, event_type, invoice in (("evt_1", "invoice.paid", "in_1"),
                                              ("evt_2", "invoice.payment_succeeded", "in_1"),
                                              ("evt_3", "invoice.paid", "in_2")):
            db.add(PaymentEvent(provider="stripe", event_id=event_id, event_type=event_type,
                                received_at=world.clock.now(), payload={}, kind="recovered",
                                member_id=member.id, amount_minor=2900, currency="EUR",
                                invoice_ref=invoice))
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert "€58.00" in page


async def test_a_fresh_update_link_goes_out_in_the_member_s_language(make_client, world):
    client, token, conversation_id = await _claimed(make_client, world, language="de")
    response = await client.post(f"/console/conversations/{conversation_id}/update-link",
                                 data={"csrf_token": token}, headers=JSON)
    assert (await response.json())["ok"] is True
    async with world.sessionmaker() as db:
        link = (await db.scalars(select(UpdateLink))).one()
        outbox = (await db.scalars(select(Outbox))).one()
    text = outbox.payload["text"]
    assert text.startswith("Hier ist Ihr persönlicher Link")
    assert "http://127.0.0.1:8080/u/" in text and outbox.kind == "agent_reply"
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert "sent" in page and link.case_id is not None


async def test_the_owner_s_own_fresh_link_text_goes_out_as_they_wrote_it(
        make_client, world, tmp_path, monkeypatch):
    texts = tmp_path / "texts"
    for language, words in (("de", "Hier Ihr Link – für Sie & nur für Sie"),
                            ("en", "Your link, just for you")):
        (texts / language / "agent").mkdir(parents=True)
        (texts / language / "agent" / "fresh_link.j2").write_text(
            f"{{{{ '{words}' }}}}:\n{{{{ url }}}}\n\n{{{{ signature or 'Ihr Team' }}}}",
            encoding="utf-8")
    monkeypatch.setenv("PAYRESCUE_TEXTS_DIR", str(texts))
    client, token, conversation_id = await _claimed(make_client, world, language="de")
    await client.post(f"/console/conversations/{conversation_id}/update-link",
                      data={"csrf_token": token}, headers=JSON)
    async with world.sessionmaker() as db:
        text = (await db.scalars(select(Outbox))).one().payload["text"]
    # plain text, as the member reads it: no "&amp;" from the template's escaping
    assert re.fullmatch(r"Hier Ihr Link – für Sie & nur für Sie:\nhttp://127\.0\.0\.1:8080/u/"
                        r"[\w-]+\n\nIhr Team", text), text


async def test_an_admin_edits_a_canned_answer(make_client, world):
    await world.agent("root@example.org", name="Root", role="admin")
    admin = await make_client()
    token = await log_in(admin, "root@example.org")
    await admin.post("/console/canned", data={"shortcut": "hi", "language": "en",
                                              "title": "Hi", "body": "Hello", "csrf_token": token})
    async with world.sessionmaker() as db:
        answer_id = (await db.scalars(select(CannedAnswer.id))).one()
    form = await (await admin.get(f"/console/canned?edit={answer_id}")).text()
    assert f'name="id" value="{answer_id}"' in form and ">Hello</textarea>" in form
    await admin.post("/console/canned", data={"id": str(answer_id), "shortcut": "hi",
                                              "language": "en", "title": "Hi",
                                              "body": "Hello {{ first_name }}!",
                                              "csrf_token": token})
    async with world.sessionmaker() as db:
        answers = (await db.scalars(select(CannedAnswer))).all()
    assert [a.body for a in answers] == ["Hello {{ first_name }}!"]


async def test_search_wildcards_are_plain_characters(make_client, world):
    await world.agent()
    await world.conversation(name="Mia Muster", chat_id=1)
    client = await make_client()
    await log_in(client)
    assert "Mia Muster" not in await (await client.get("/console/queue?q=%25")).text()
    assert "Mia Muster" in await (await client.get("/console/queue?q=a%20m")).text()


async def test_context_lists_subscriptions_and_cases_with_events_in_provider_time(
        make_client, world, sessionmaker, settings, clock):
    client, _token, conversation_id = await _claimed(make_client, world, chat_id=4242,
                                                     email="pia@example.org")
    t0 = clock.now() - timedelta(days=3)
    shape = dict(customer="cus_P", email="pia@example.org", subscription="sub_P")
    arriving = [  # the end first: a late retry of the failure came after it
        stripe_event("customer.subscription.deleted", subscription(
            "sub_P", status="canceled", customer="cus_P", ended_at=t0 + timedelta(days=1)),
            t0 + timedelta(days=1)),
        stripe_event("invoice.payment_failed", invoice("in_P", **shape), t0),
    ]
    for event in arriving:
        await ingest_batch(sessionmaker, [stripe_events.parse(json.dumps(event).encode())],
                           settings, clock.now())
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    panel = page[page.index("Subscriptions and cases"):]
    assert "<code>sub_P</code>" in panel and "<span class=\"badge\">ended</span>" in panel
    assert "<code>in_P</code>" in panel and "lost" in panel
    assert panel.index("invoice.payment_failed") < panel.index("customer.subscription.deleted")


async def test_canned_answer_sends_a_signed_tracked_link_and_names_the_plan(make_client, world):
    await world.agent("root@example.org", name="Root", role="admin")
    client, token, conversation_id = await _claimed(make_client, world, name="Mia Muster")
    async with world.sessionmaker() as db, db.begin():
        conversation = await db.get(Conversation, conversation_id)
        db.add(Subscription(member_id=conversation.member_id, provider="stripe",
                            external_id="sub_1", plan_name="Gold Club", amount_minor=2900,
                            currency="EUR", update_url="https://billing.example/raw",
                            created_at=world.clock.now()))
        db.add(CannedAnswer(shortcut="link", title="Link", language="de",
                            body="Hallo {{ first_name }}, Ihr {{ plan }} ({{ amount }}): "
                                 "{{ update_link }}", created_at=world.clock.now(),
                            updated_at=world.clock.now()))
    [answer] = await (await client.get(
        f"/console/api/conversations/{conversation_id}/canned")).json()
    # the preview names the plan; the link is made only when the reply goes out
    assert answer["text"] == "Hallo Mia, Ihr Gold Club (29,00\xa0€): {{ update_link }}"
    async with world.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(UpdateLink)) == 0
    response = await client.post(f"/console/conversations/{conversation_id}/reply",
                                 data={"text": answer["text"], "csrf_token": token},
                                 headers=JSON)
    assert (await response.json())["ok"] is True
    async with world.sessionmaker() as db:
        sent = (await db.scalars(select(Outbox))).one().payload["text"]
        assert await db.scalar(select(func.count()).select_from(UpdateLink)) == 1
    assert sent.startswith("Hallo Mia, Ihr Gold Club (29,00\xa0€): http://127.0.0.1")
    path = sent.split(": ", 1)[1].split("127.0.0.1", 1)[1].split("/", 1)[1]
    assert path.startswith("u/") and "raw" not in sent
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert "Gold Club" in page  # the context panel names the plan too


async def test_next_reminder_is_the_plans_next_step(make_client, world, settings):
    client, _token, conversation_id = await _claimed(make_client, world)
    async with world.sessionmaker() as db, db.begin():
        case = await db.scalar(select(RecoveryCase))
        case.dunning_stage = 1  # the failure notice went out; the reminders are not queued yet
        due = case.opened_at + timedelta(days=sorted(settings.dunning_days)[1])
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    shown = format_datetime(due, settings.zone, "en", format="short")
    assert f"<dt>Next reminder</dt><dd>{shown}</dd>" in page


async def test_retry_is_off_without_a_stripe_api_key(make_client, world):
    client, token, conversation_id = await _claimed(make_client, world)
    page = await (await client.get(f"/console/conversations/{conversation_id}")).text()
    assert 'id="retry-charge"' not in page and 'id="settle"' in page
    response = await client.post(f"/console/conversations/{conversation_id}/case/retry",
                                 data={"csrf_token": token}, headers=JSON)
    assert response.status == 409
    assert "Stripe API key" in (await response.json())["error"]
