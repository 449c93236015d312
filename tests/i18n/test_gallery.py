"""The message gallery: every member text in both languages, rendered right and kept in
docs/messages.<language>.md, so a reviewer reads them in one place and a diff shows each
wording change."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import DictLoader

from payrescue import gallery
from payrescue.cli import main
from payrescue.i18n import template_environment, tidy, use_language

DOCS = Path(__file__).resolve().parents[2] / "docs"
REGENERATE = "run `make messages` and review the diff of docs/messages.{0}.md"


@pytest.mark.parametrize("language", ["de", "en"])
def test_the_gallery_in_docs_is_what_members_get(language: str) -> None:
    rendered = gallery.as_markdown(language, gallery.samples(language))
    golden = (DOCS / f"messages.{language}.md").read_text(encoding="utf-8")
    assert rendered == golden, REGENERATE.format(language)


@pytest.mark.parametrize("language", ["de", "en"])
def test_no_member_message_shows_tags_glued_links_empty_greetings_or_placeholders(
        language: str) -> None:
    found = gallery.samples(language)
    templates = {sample.template for sample in found}
    # the gallery finds the templates by itself: each face's are there
    assert {"dunning/failed.j2", "faq/why_failed.j2", "handoff/waiting.j2", "start/linked.j2",
            "pages/update_link.html", "agent/fresh_link.j2", "outage/sorry.j2",
            "email/dunning/failed.j2", "email/invite.j2"} <= templates
    broken = {(s.template, s.variant): gallery.problems(s) for s in found
              if gallery.problems(s)}
    assert broken == {}


@pytest.mark.parametrize(("text", "problem"), [
    ("Tarif: &lt;b&gt;Gold Club&lt;/b&gt;", "visible HTML tag"),
    ("Sie können sie hier aktualisieren:https://pay.example.org/u/x", "link glued"),
    ("Fragen Sie zum Beispiel:• Warum ist die Zahlung fehlgeschlagen?", "bullet glued"),
    ("Hallo ,\n\nIhre Zahlung", "greeting without a name"),
    ("Thank you, there! Your payment went through.", "greeting without a name"),
    ("Vielen Dank, zusammen!", "greeting without a name"),
    ("Hello %(first_name)s,", "unfilled placeholder"),
    ("Next attempt: None", "unfilled placeholder"),
    ("Your payment of  went through.", "empty value"),
])
def test_the_checks_catch_what_once_reached_members(text: str, problem: str) -> None:
    found = gallery.problems(gallery.Sample("t.j2", "v", text))
    assert any(what.startswith(problem) for what in found)


def test_a_message_must_carry_every_button_it_names() -> None:
    text = "Receipts are on our website. If one is missing, tap “Talk to a person”."
    assert gallery.problems(gallery.Sample("faq/receipt.j2", "v", text)) == [
        "names a button it does not carry: Talk to a person"]
    assert gallery.problems(gallery.Sample("faq/receipt.j2", "v", text,
                                           ["Talk to a person"])) == []
    german = "Tippen Sie einfach unten auf „Zahlungsdaten aktualisieren“."
    assert gallery.problems(gallery.Sample("t.j2", "v", german, ["Zahlung bestätigen"])) == [
        "names a button it does not carry: Zahlungsdaten aktualisieren"]


def test_a_line_after_a_translated_sentence_keeps_its_line_break() -> None:
    env = template_environment(DictLoader({"t.j2": (
        "{% if url %}\n{% trans %}Update it here:{% endtrans %}\n{{ url }}\n{% endif %}\n"
        "• {% trans %}Why?{% endtrans %}\n• {% trans %}When?{% endtrans %}\n")}))
    with use_language("en"):
        text = tidy(env.get_template("t.j2").render(url="https://x.example/u/1"))
    assert text == "Update it here:\nhttps://x.example/u/1\n• Why?\n• When?"


def test_a_rendered_message_placed_into_another_is_not_escaped_twice() -> None:
    env = template_environment(DictLoader({"inner.j2": "<b>{{ plan }}</b>",
                                           "outer.j2": "{{ inner }}"}))
    inner = tidy(env.get_template("inner.j2").render(plan="Gold & Co <Club>"))
    assert tidy(env.get_template("outer.j2").render(inner=inner)) == (
        "<b>Gold &amp; Co &lt;Club&gt;</b>")


def test_the_preview_command_prints_the_gallery(capsys: pytest.CaptureFixture) -> None:
    assert main(["messages", "preview", "--language", "de"]) == 0
    assert capsys.readouterr().out == (DOCS / "messages.de.md").read_text(encoding="utf-8")
    assert main(["messages", "preview", "--language", "en", "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith('<!doctype html><html lang="en">')
    assert "<b>Gold Club</b>" in page and "[Update payment method]" not in page


@pytest.mark.parametrize(("language", "expected"), [
    ("de", ["4 Min.", "2 Std. 05 Min.", "47 Std. 59 Min.", "3 Tage"]),
    ("en", ["4 min", "2 h 05 min", "47 h 59 min", "3 days"]),
])
def test_console_wait_times_speak_the_agents_language(language: str,
                                                      expected: list[str]) -> None:
    from handoff.render import waited

    with use_language(language):
        assert [waited(s) for s in (240, 7500, 48 * 3600 - 1, 80 * 3600)] == expected


@pytest.mark.parametrize("language", ["de", "en"])
def test_every_member_e_mail_is_shown_as_email_message_builds_it(language: str) -> None:
    from payrescue.billing import declines

    emails = [s for s in gallery.samples(language) if s.html is not None]
    assert {"email/dunning/failed.j2", "email/dunning/reminder.j2", "email/dunning/final.j2",
            "email/dunning/recovered.j2", "email/dunning/lost.j2",
            "email/dunning/card_expiring.j2", "email/invite.j2",
            "email/agent_reply"} == {s.template for s in emails}
    for step in ("failed", "reminder", "final"):
        shown = {s.variant for s in emails if s.template == f"email/dunning/{step}.j2"}
        assert set(declines.CATEGORIES) | {"no name, no plan"} == shown
    for sample in emails:
        assert sample.text.startswith("Subject: ") and "<html" in sample.html
    # the e-mail's button carries the words its text names ("Confirm the payment" for 3-D
    # Secure), and a text never sends the member to a chat button the e-mail lacks
    confirm = next(s for s in emails if s.template == "email/dunning/failed.j2"
                   and s.variant == declines.AUTHENTICATION_REQUIRED)
    with use_language(language):
        from payrescue.dunning import update_label

        assert confirm.buttons == [update_label(declines.AUTHENTICATION_REQUIRED)]
        assert update_label(declines.AUTHENTICATION_REQUIRED) in confirm.html


def test_the_preview_shows_the_owner_s_voice_and_the_e_mails_html(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("PAYRESCUE_BUSINESS_NAME", "Gold Club")
    monkeypatch.setenv("PAYRESCUE_SIGN_OFF", "Lena Berger")
    assert main(["messages", "preview", "--language", "de"]) == 0
    out = capsys.readouterr().out
    assert "> Herzliche Grüße\n> Lena Berger\n" in out
    assert "Sie erhalten diese E-Mail zu Ihrer Mitgliedschaft bei Gold Club." in out
    assert "Ihrer Mitgliedschaft bei Gold Club verbunden" in out
    assert main(["messages", "preview", "--language", "en", "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert '<iframe class="e" srcdoc="' in page and "Warm wishes," in page
