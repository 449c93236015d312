"""The owner's voice: member texts replaced per language from PAYRESCUE_TEXTS_DIR, checked
by `payrescue messages check`, shown by the gallery and sent by the bot."""

from __future__ import annotations

from pathlib import Path

import pytest

from payrescue import gallery
from payrescue.cli import main


def _write(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "texts"
    _write(folder, "de/dunning/_sign_off.j2", "Herzliche Grüße\nIhr Team vom Gold Club")
    _write(folder, "en/dunning/_sign_off.j2", "Warm wishes,\nThe Gold Club team")
    _write(folder, "de/faq/thanks.j2", "Sehr gern, {{ first_name or 'liebes Mitglied' }}!")
    _write(folder, "en/faq/thanks.j2", "Any time, {{ first_name or 'friend' }}!")
    monkeypatch.setenv("PAYRESCUE_TEXTS_DIR", str(folder))
    return folder


def test_own_texts_replace_ours_per_language_and_show_in_the_gallery(texts: Path) -> None:
    german = {(s.template, s.variant): s.text for s in gallery.samples("de")}
    english = {(s.template, s.variant): s.text for s in gallery.samples("en")}
    assert german[("faq/thanks.j2", "usual")] == "Sehr gern, Anna!"
    assert english[("faq/thanks.j2", "no name")] == "Any time, friend!"
    # a partial replaced inside our own message: the sign-off under each payment message
    assert german[("dunning/failed.j2", "expired_card")].endswith(
        "\n\nHerzliche Grüße\nIhr Team vom Gold Club")
    assert english[("dunning/lost.j2", "usual")].endswith("The Gold Club team")
    assert "Gold Club team" not in english[("faq/status.j2", "usual")]


def test_messages_check_passes_a_good_folder(texts: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["messages", "check", str(texts)]) == 0
    assert "all texts are fine" in capsys.readouterr().out


def test_messages_check_names_every_problem(texts: Path, capsys: pytest.CaptureFixture) -> None:
    _write(texts, "de/dunning/failed.j2", "Hallo {{ first_name }, {% if %}")
    _write(texts, "de/dunning/reminder.j2", "Hallo {{ vorname }}, bitte zahlen Sie {{ amount }}.")
    _write(texts, "en/dunning/reminder.j2", "Hi {{ first_name }}, {{ amount }} is still open.")
    _write(texts, "de/faq/weather.j2", "Sonnig.")
    _write(texts, "fr/faq/thanks.j2", "Merci !")
    _write(texts, "en/faq/help.j2", "Ask me anything.")
    assert main(["messages", "check", str(texts)]) == 1
    out = capsys.readouterr()
    lines = out.out
    assert "de/dunning/failed.j2, line 1:" in lines
    assert "de/dunning/reminder.j2: never given vorname" in lines
    assert "de/faq/weather.j2: replaces no member text" in lines
    assert "fr/faq/thanks.j2: the first folder must be a language" in lines
    assert "en/faq/help.j2: de/faq/help.j2 is missing" in lines
    assert "problem(s) in" in out.err


def test_messages_check_renders_what_members_would_get(texts: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    _write(texts, "de/faq/thanks.j2", "Gern!<br>")
    _write(texts, "en/faq/thanks.j2", "Hello , you're welcome!")
    assert main(["messages", "check", str(texts)]) == 1
    lines = capsys.readouterr().out
    assert "de/faq/thanks.j2 (usual): visible HTML tag" in lines
    assert "en/faq/thanks.j2 (usual): greeting without a name" in lines


def test_own_texts_may_name_the_business_and_the_signature(
        texts: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(texts, "de/dunning/_sign_off.j2", "Bis bald\n{{ signature }} · {{ business }}")
    _write(texts, "en/dunning/_sign_off.j2", "See you\n{{ signature }} · {{ business }}")
    # a text naming the business while no business name is set would read "None"
    assert main(["messages", "check", str(texts)]) == 1
    assert "de/dunning/failed.j2 (no business name or sign-off set): unfilled placeholder" in (
        capsys.readouterr().out)
    monkeypatch.setenv("PAYRESCUE_BUSINESS_NAME", "Gold Club")
    assert main(["messages", "check", str(texts)]) == 0
    german = {(s.template, s.variant): s.text for s in gallery.samples("de")}
    assert german[("dunning/failed.j2", "expired_card")].endswith(
        "Bis bald\nIhr Team von Gold Club · Gold Club")
    _write(texts, "en/dunning/_sign_off.j2", "See you\n{{ firm }}")
    assert main(["messages", "check", str(texts)]) == 1
    assert "en/dunning/_sign_off.j2: never given firm" in capsys.readouterr().out


def test_an_owner_may_word_the_e_mail_subjects_and_e_mails_too(texts: Path) -> None:
    _write(texts, "de/dunning/final.j2", "Letzte Erinnerung{% if email %} per E-Mail{% endif %}."
           "\n\n{% include 'dunning/_facts.j2' %}")
    _write(texts, "en/dunning/final.j2", "Last reminder.\n\n{% include 'dunning/_facts.j2' %}")
    _write(texts, "de/email/subject/failed.j2", "{{ business }}: Ihre Zahlung braucht Sie")
    _write(texts, "en/email/subject/failed.j2", "{{ business }}: your payment needs you")
    assert gallery.check_texts(texts) == []
    german = {(s.template, s.variant): s.text for s in gallery.samples("de")}
    assert german[("email/dunning/failed.j2", "expired_card")].startswith(
        "Subject: Studio Linde: Ihre Zahlung braucht Sie\n")
    # a text may say something else in an e-mail than in the chat
    assert german[("dunning/final.j2", "expired_card")].startswith("Letzte Erinnerung.\n")
    assert "Letzte Erinnerung per E-Mail." in german[("email/dunning/final.j2", "expired_card")]
