"""What the member's messages promise, the service does: a person for a blocked card, a fresh
link from the expired-link page, the buttons each answer names, an honest /cancel."""

from __future__ import annotations

from sqlalchemy import func, select

from payrescue.db.models import Conversation
from payrescue.keys import SETTINGS
from tests.conversations.helpers import buttons, linked_member, open_case, texts
from tests.conversations.test_handoff import conversation_of, say


async def test_a_card_the_bank_blocked_goes_to_the_team_with_its_own_reason(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    await open_case(svc, member, decline_category="fraud", next_attempt_at=None)
    messages = await svc.emulator.wait_for_messages(chat, 2)
    text = texts(messages)[-1]
    assert "Someone from our team will also get in touch with you personally" in text
    # kind words: the member never reads the bank's suspicion
    assert not any(word in text.lower() for word in ("fraud", "stolen", "lost"))
    conversation = await conversation_of(svc, member.id)
    assert conversation.status == "waiting"
    assert conversation.handoff_reasons == ["card_blocked"]
    assert conversation.case_id is not None
    # tapping "Talk to a person" now is not met with silence
    human = buttons(messages[-1])[-1]
    await svc.emulator.press_button(chat, messages[-1]["message_id"], human["callback_data"])
    messages = await svc.emulator.wait_for_messages(chat, 3)
    assert "already with our team" in texts(messages)[-1]


async def test_an_ordinary_decline_opens_no_handoff(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    await open_case(svc, member, decline_category="expired_card")
    await svc.emulator.wait_for_messages(chat, 2)
    async with svc.sessionmaker() as session:
        assert await session.scalar(select(func.count(Conversation.id)).where(
            Conversation.member_id == member.id, Conversation.status == "waiting")) == 0


async def test_the_expired_link_pages_button_brings_a_fresh_link(svc) -> None:
    member, chat = await linked_member(svc, language="de")
    await open_case(svc, member, decline_category="expired_card")
    first = (await svc.emulator.wait_for_messages(chat, 2))[-1]
    old_url = buttons(first)[0]["url"]
    messages = await say(svc, chat, "/start newlink")
    reply = messages[-1]
    assert "Hier ist ein neuer Link" in reply["plain_text"]
    new_url = buttons(reply)[0]["url"]
    assert new_url.startswith(svc.app[SETTINGS].public_url("/u/")) and new_url != old_url
    assert new_url in reply["plain_text"]
    assert "funktioniert" not in reply["plain_text"]


async def test_new_link_without_an_open_payment_says_so(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    messages = await say(svc, chat, "/start newlink")
    assert "no open payment" in texts(messages)[-1]


async def test_why_failed_shows_the_plan_in_bold_once_and_the_button_it_names(svc) -> None:
    member, chat = await linked_member(svc, language="de")
    await open_case(svc, member, decline_category="authentication_required")
    await svc.emulator.wait_for_messages(chat, 2)
    reply = (await say(svc, chat, "Warum ist meine Zahlung fehlgeschlagen?"))[-1]
    assert "<b>" not in reply["plain_text"] and "&lt;" not in reply["plain_text"]
    assert "Tarif: Gold Club" in reply["plain_text"]
    assert "„Zahlung bestätigen“" in reply["plain_text"]
    assert [b["text"] for b in buttons(reply)] == ["Zahlung bestätigen",
                                                   "Mit unserem Team sprechen"]


async def test_receipts_answer_carries_the_button_it_names(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    reply = (await say(svc, chat, "Where is my invoice?"))[-1]
    assert "“Talk to a person”" in reply["plain_text"]
    assert [b["text"] for b in buttons(reply)] == ["Talk to a person"]


async def test_cancel_says_who_answers_when_nobody_waits(svc) -> None:
    member, chat = await linked_member(svc, language="en")
    messages = await say(svc, chat, "/cancel")
    assert "already talking to the bot" in texts(messages)[-1]


async def test_telegram_shows_each_member_the_menu_and_profile_in_their_language(svc) -> None:
    account = svc.emulator.state.resolve_bot(None)
    german = [c["command"] for c in account.localized_commands["de"]]
    assert german == ["hilfe", "status", "mensch", "sprache", "stop", "loeschen"]
    assert [c["command"] for c in account.localized_commands["en"]] == [
        "help", "status", "human", "language", "stop", "delete"]
    assert account.localized_commands[""] == account.localized_commands["en"]
    assert account.localized_commands["de"][2]["description"] == "mit unserem Team sprechen"
    assert account.descriptions["de"].startswith("Ich bin der Assistent für Ihre Mitgliedschaft")
    assert account.short_descriptions["en"].startswith("Help with your membership payments")
    # the German spellings in the menu work
    member, chat = await linked_member(svc, language="de")
    help_text = texts(await say(svc, chat, "/hilfe"))[-1]
    assert "/mensch – mit unserem Team sprechen" in help_text
    assert "/sprache" in help_text and "/human" not in help_text
    assert "In welcher Sprache" in texts(await say(svc, chat, "/sprache"))[-1]
    assert "wirklich" in texts(await say(svc, chat, "/loeschen"))[-1]


async def test_the_bot_s_profile_and_welcome_name_the_business(engine, clock, tmp_path) -> None:  # noqa: ANN001
    from tests.harness import running_service

    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               business_name="Gold Club") as service:
        account = service.emulator.state.resolve_bot(None)
        assert account.descriptions["de"].startswith(
            "Ich bin der Assistent für Ihre Mitgliedschaft bei Gold Club:")
        assert account.descriptions["en"].startswith(
            "I'm the membership assistant of Gold Club:")
        member, chat = await linked_member(service, language="en")
        welcome = texts(service.emulator.sent_messages(chat))[-1]
        assert "connected to your Gold Club membership" in welcome
