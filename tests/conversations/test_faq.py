"""Understanding free text in German and English: case, umlauts as ae/oe/ue, small typos."""

from __future__ import annotations

import pytest

from payrescue import faq


@pytest.mark.parametrize(("text", "expected"), [
    ("Why did my payment fail?", "why_failed"),
    ("warum wurde meine zahlung abgelehnt", "why_failed"),
    ("WARUM IST DAS FEHLGESCHLAGEN", "why_failed"),
    ("Wann versuchen Sie es erneut?", "retry_when"),
    ("when will you retry", "retry_when"),
    ("How do I update my card?", "update_card"),
    ("Wie kann ich meine Kreditkarte aendern", "update_card"),
    ("wie kann ich meine kreditkrate ändern", "update_card"),  # a typo
    ("Zahlungsmethode aktualiseren", "update_card"),  # a typo
    ("what do I owe", "status"),
    ("Wie viel ist noch offen?", "status"),
    ("send me a new link please", "new_link"),
    ("Der Link ist abgelaufen", "new_link"),
    ("I need an invoice", "receipt"),
    ("Ich brauche eine Quittung", "receipt"),
    ("can I pause my plan", "change_plan"),
    ("Kann ich meinen Tarif guenstiger machen", "change_plan"),
    ("What about privacy and my data?", "privacy"),
    ("Datenschutz", "privacy"),
    ("danke!", "thanks"),
])
def test_questions_are_understood(text: str, expected: str) -> None:
    assert faq.intent(text) == expected


@pytest.mark.parametrize("text", ["asdkjh qwe", "🙂", "the weather is nice", ""])
def test_gibberish_is_not_understood(text: str) -> None:
    assert faq.intent(text) is None
    assert faq.triggers(text) == []


@pytest.mark.parametrize(("text", "reason"), [
    ("ich will mit einem Menschen sprechen", "asked_for_human"),
    ("Ich möchte mit einem Mitarbeiter reden", "asked_for_human"),
    ("kann ich mit jemand echtes reden", "asked_for_human"),
    ("I want to talk to a human", "asked_for_human"),
    ("agent please", "asked_for_human"),
    ("I will file a chargeback", "dispute"),
    ("Ich mache eine Rückbuchung", "dispute"),
    ("I want a refund", "refund"),
    ("Ich will mein Geld zurück", "refund"),
    ("I want to cancel", "cancellation"),
    ("ich moechte kuendigen", "cancellation"),
    ("my card was stolen", "fraud"),
    ("Meine Karte wurde gestohlen", "fraud"),
    ("This is ridiculous, I am furious", "distress"),
    ("Das ist eine Frechheit", "distress"),
    ("Ich bin wütend", "distress"),
])
def test_handoff_triggers(text: str, reason: str) -> None:
    assert reason in faq.triggers(text)


def test_umlauts_and_spelled_out_umlauts_are_the_same() -> None:
    assert faq.normalise("Kündigung Größe") == faq.normalise("kuendigung groesse")
