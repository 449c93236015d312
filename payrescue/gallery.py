"""Every member message in one place: `payrescue messages preview`.

The gallery renders each member-facing template that exists (the dunning steps for every
decline category, the FAQ answers, the handoff texts, …) and every e-mail as
`payrescue.email_message` builds it (subject and text part; the HTML part for `--format html`),
in the owner's voice (business name and sign-off, or a sample business's), with realistic data,
plus the variants that used to go wrong: no first name, no plan name, no next attempt, no open
payment. It is generic on purpose: a new template in one of `template_roots()` joins the
gallery (and its checks) without a change here; a template whose text depends on a value names
the values worth showing in a comment, `{# gallery: failure=expired|used #}`.
`docs/messages.<language>.md` is its output, kept in sync by a golden-file test, so a wording
change shows up in the diff.

`problems()` is what the gallery test asserts is empty for every sample: visible HTML tags,
a link or a bullet glued to the text before it, a greeting without a name, a placeholder
that was never filled, a button named in the text that the message does not carry.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup

from payrescue.i18n import (
    Voice,
    _,
    current_voice,
    format_date,
    format_money,
    format_when,
    use_language,
    use_voice,
    voice_context,
)

ZONE = ZoneInfo("Europe/Berlin")
NEXT_ATTEMPT = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)
BACK_AT = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)  # a Monday, 9:00 in Berlin
UPDATE_URL = "https://club.example.org/u/Xy3kP9-link"
REFERRAL_URL = "https://club.example.org/invite/anna"
BUSINESS = "Studio Linde"  # the sample business whose voice the gallery shows
SAMPLE_VOICE = Voice(BUSINESS)


@dataclass
class Sample:
    template: str
    variant: str
    text: str
    buttons: list[str] = field(default_factory=list)
    html: str | None = None  # an e-mail's HTML part (its text part is `text`)


@dataclass(frozen=True)
class Root:
    """A folder of member templates and the function that renders them."""

    folder: Path
    prefixes: tuple[str, ...] | None  # the member folders in it; None: every folder
    render: Callable[..., Markup]


def template_roots() -> list[Root]:
    from bot import replies  # the bot's templates; imported here so payrescue stays bot-free
    from payrescue import dunning

    return [
        Root(dunning.TEMPLATES, ("dunning", "agent"), dunning.render),
        Root(replies.TEMPLATES, None, replies.render),
    ]


def template_names(root: Root) -> list[str]:
    """Every member template of a root. Partials (`_name.j2`) and a decline category's
    next-step text (`dunning/<category>.j2`) are shown inside the messages that include them."""
    from payrescue.billing import declines

    names = []
    prefixes = root.prefixes or sorted(p.name for p in root.folder.iterdir() if p.is_dir())
    for prefix in prefixes:
        for path in sorted((root.folder / prefix).glob("*.j2")):
            if not path.name.startswith("_") and path.stem not in declines.CATEGORIES:
                names.append(f"{prefix}/{path.name}")
    return names


_TAGS = re.compile(r"\{[{%](.*?)[}%]\}", re.DOTALL)
_CHOICES = re.compile(r"\{#\s*gallery:\s*(\w+)=([\w|]+)\s*#\}")


def _value(text: str) -> object:
    return {"true": True, "false": False}.get(text, text)


# --- realistic data -----------------------------------------------------------------------


def _case_facts(category: str) -> dict[str, Any]:
    from payrescue.billing import declines

    kind = declines.category(category)
    return {
        "first_name": "Anna",
        "plan": "Gold Club",
        "amount": format_money(2900, "EUR"),
        "next_attempt": format_date(NEXT_ATTEMPT, ZONE) if kind.provider_retries else None,
        "category": kind.name,
        "explanation": kind.explanation(),
        "has_case": True,
        "provider_retries": kind.provider_retries,
    }


def _buttons(keyboard: dict[str, Any] | None) -> list[str]:
    if not keyboard:
        return []
    return [button["text"] for row in keyboard["inline_keyboard"] for button in row]


def _case_buttons(category: str, *, why: bool) -> list[str]:
    from payrescue import dunning
    from payrescue.db.models import RecoveryCase

    case = RecoveryCase(id=1, decline_category=category)
    return _buttons(dunning.case_keyboard(case, UPDATE_URL, why=why))


def _variants(root: Root, name: str) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(variant name, context, buttons) for one template: the usual case, then each missing
    piece of data the template mentions."""
    from payrescue import dunning
    from payrescue.billing import declines

    source = _source(root, name)
    code = " ".join(_TAGS.findall(source))  # what the template computes with, not its words

    def uses(key: str) -> bool:
        return re.search(rf"\b{key}\b", code) is not None

    step = "_facts.j2" in code  # a dunning step: one sample per decline category
    if step:
        for category in declines.CATEGORIES:
            yield category, _case_facts(category), _case_buttons(category, why=True)
        bare = {**_case_facts(declines.UNKNOWN), "first_name": None, "plan": None}
        yield "no name, no plan", bare, _case_buttons(declines.UNKNOWN, why=True)
        # the sign-off's other forms, unless the gallery shows the owner's own voice
        if name == "dunning/failed.j2" and current_voice() == SAMPLE_VOICE:
            usual = _case_facts(declines.INSUFFICIENT_FUNDS)
            for label, voice in (("signed by a person", Voice(BUSINESS, "Lena Berger")),
                                 ("no business name or sign-off set", Voice())):
                yield label, {**usual, **_voice_of(voice)}, _case_buttons(
                    declines.INSUFFICIENT_FUNDS, why=True)
        return
    if name == "dunning/card_expiring.j2":
        for label, url in (("with the billing system's page", UPDATE_URL), ("no page", None)):
            payload = dunning.card_expiring_payload("Anna", url)
            yield label, {"first_name": "Anna", "url": url}, _buttons(payload["reply_markup"])
        payload = dunning.card_expiring_payload(None, UPDATE_URL)
        yield "no name", {"first_name": None, "url": UPDATE_URL}, _buttons(payload["reply_markup"])
        payload = dunning.card_expiring_payload("Anna", UPDATE_URL, expired=True)
        yield "has expired (MemberPress)", {"first_name": "Anna", "url": UPDATE_URL,
                                            "expired": True}, _buttons(payload["reply_markup"])
        return
    if name == "faq/why_failed.j2":
        for category in declines.CATEGORIES:
            facts = _case_facts(category)
            explanation = dunning.render("dunning/_facts.j2", **facts)
            yield category, {**facts, "explanation": explanation}, _case_buttons(
                category, why=False)
        yield "no open payment", {"has_case": False}, []
        return
    base = {**_case_facts(declines.INSUFFICIENT_FUNDS), "url": UPDATE_URL,
            "referral_url": REFERRAL_URL, "open_now": True, "minutes": 15,
            "back_at": format_when(BACK_AT, ZONE)}
    # the one answer that names a button of its own
    buttons = _buttons(dunning.human_keyboard()) if name == "faq/receipt.j2" else []
    choices = _CHOICES.findall(source)  # {# gallery: key=a|b #}: one sample per value
    if choices:
        for key, values in choices:
            for value in values.split("|"):
                yield f"{key}={value}", {**base, key: _value(value)}, buttons
    else:
        yield "usual", base, buttons
    for key, label in (("first_name", "no name"), ("plan", "no plan"),
                       ("referral_url", "no invitation link")):
        if uses(key):
            yield label, {**base, key: None}, buttons
    if uses("provider_retries"):
        yield "card must change first", {**base, "next_attempt": None,
                                         "provider_retries": False}, buttons
    if uses("next_attempt"):
        yield "no date for the next attempt", {**base, "next_attempt": None}, buttons
    # an answer that depends on an open payment (the messages about a case always have one)
    if not name.startswith("agent/") and (
            uses("has_case") or uses("url") or (name.startswith("faq/") and uses("amount"))):
        yield "no open payment", {"has_case": False}, buttons
    if uses("open_now"):
        yield "one minute", {**base, "minutes": 1}, buttons
        yield "outside business hours", {**base, "open_now": False}, buttons


def _source(root: Root, name: str) -> str:
    """The template members get: the owner's for the current language, else ours."""
    from payrescue.i18n import current_language, texts_dir

    own = texts_dir()
    if own is not None and (own / current_language() / name).is_file():
        return (own / current_language() / name).read_text(encoding="utf-8")
    return (root.folder / name).read_text(encoding="utf-8")


def _voice_of(voice: Voice) -> dict[str, str | None]:
    with use_voice(voice):
        return voice_context()


def gallery_voice() -> Voice:
    """The owner's voice when the settings name one (they preview their own messages), else
    a sample business's, so the docs show where the name and the sign-off appear."""
    voice = current_voice()
    return voice if voice.business or voice.sign_off else SAMPLE_VOICE


def samples(language: str) -> list[Sample]:
    """Every member message, rendered in `language`: the chat messages, the pages an update
    link opens, then the e-mails."""
    found: list[Sample] = []
    with use_language(language), use_voice(gallery_voice()):
        for root in template_roots():
            for name in template_names(root):
                for variant, context, buttons in _variants(root, name):
                    text = root.render(name, **context)
                    found.append(Sample(name, variant, str(text), buttons))
        found += _pages(language)
        found += _emails(language)
    return found


# --- e-mails ------------------------------------------------------------------------------

# the random part of a signed link: the same in every run of the gallery
_TOKENS = re.compile(r"(/mail/unsubscribe/|/connect/|\?start=)[A-Za-z0-9_-]{8,}")


def _email_payloads() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(template, variant, outbox kind, payload) for every e-mail a member can get, in the
    current language, made by the same functions that queue them."""
    from payrescue import dunning, email_replies, invitations
    from payrescue.billing import declines
    from payrescue.config import Settings
    from payrescue.db.models import Member

    for step in ("failed", "reminder", "final"):
        for category in declines.CATEGORIES:
            yield (f"email/dunning/{step}.j2", category, "reminder",
                   dunning.email_content(step, _case_facts(category), UPDATE_URL))
        bare = {**_case_facts(declines.UNKNOWN), "first_name": None, "plan": None}
        yield (f"email/dunning/{step}.j2", "no name, no plan", "reminder",
               dunning.email_content(step, bare, UPDATE_URL))
    for step in ("recovered", "lost"):
        usual = _case_facts(declines.INSUFFICIENT_FUNDS)
        yield f"email/dunning/{step}.j2", "usual", "bot", dunning.email_content(
            step, usual, None)
        yield f"email/dunning/{step}.j2", "no name, no plan", "bot", dunning.email_content(
            step, {**usual, "first_name": None, "plan": None}, None)
    yield ("email/dunning/card_expiring.j2", "with the billing system's page", "reminder",
           dunning.card_expiring_email("Anna", UPDATE_URL))
    yield ("email/dunning/card_expiring.j2", "no page, no name", "reminder",
           dunning.card_expiring_email(None, None))
    yield ("email/dunning/card_expiring.j2", "has expired (MemberPress)", "reminder",
           dunning.card_expiring_email("Anna", UPDATE_URL, expired=True))
    settings = Settings.model_construct(default_language="en")
    for variant, name in (("usual", "Anna Schmidt"), ("no name", None)):
        member = Member(id=7, name=name, language=_current_language())
        yield ("email/invite.j2", variant, "invite",
               invitations.invitation_payload(member, settings))
    yield ("email/agent_reply", "an agent's answer", "agent_reply", email_replies.reply_email(
        "Hallo Anna, ich habe die Zahlung für Freitag vorgemerkt. Viele Grüße, Lena"
        if _current_language() == "de" else
        "Hi Anna, I've noted the payment for Friday. Best, Lena",
        "<m1@mail.example.org>", None))


def _current_language() -> str:
    from payrescue.i18n import current_language

    return current_language()


def _emails(language: str) -> list[Sample]:
    """Every e-mail as `payrescue.email_message` builds it: the subject and the text part as the
    sample, the HTML part beside it (`--format html`)."""
    from pydantic import AnyHttpUrl, SecretStr

    from payrescue.config import Settings
    from payrescue.db.models import Member, Outbox
    from payrescue.email_message import compose

    settings = Settings.model_construct(
        secret_key=SecretStr("gallery-" * 4), bot_username="club_bot",
        public_base_url=AnyHttpUrl("https://club.example.org"),
        smtp_from="Club <club@example.org>", default_language=language)
    member = Member(id=7, name="Anna Schmidt", email="anna@example.org", language=language)
    found = []
    for number, (template, variant, kind, payload) in enumerate(_email_payloads(), start=1):
        row = Outbox(id=number, kind=kind, payload=payload)
        message = compose(row, member, settings, NEXT_ATTEMPT)
        text = message.get_body(("plain",)).get_content()
        markup = message.get_body(("html",)).get_content()
        shown = _TOKENS.sub(r"\1Xy3kP9", f"Subject: {message['Subject']}\n\n{text}".strip())
        button = payload.get("button_text")  # set when there is a link to press
        if payload.get("button") == "connect":
            button = _("Connect Telegram")
        found.append(Sample(template, variant, html.escape(shown, quote=False),
                            [button] if button else [],
                            html=_TOKENS.sub(r"\1Xy3kP9", markup)))
    return found


_PAGE_PARTS = re.compile(r"<h1>(.*?)</h1>\s*<p>(.*?)</p>(?:\s*<a class=\"button\"[^>]*>(.*?)</a>)?",
                         re.DOTALL)


def _pages(language: str) -> list[Sample]:
    """The web pages around an update link (expired, already paid, thanks, …): heading and
    text as the sample, the page's button as its button."""
    from payrescue.billing import pages
    from payrescue.config import Settings

    # built without reading the environment, so the gallery is the same on every machine
    with_bot = Settings.model_construct(bot_username="club_bot")
    without_bot = Settings.model_construct(bot_username=None)
    shown = [
        ("expired", pages.refused(language, with_bot, expired=True)),
        ("expired, bot name unknown", pages.refused(language, without_bot, expired=True)),
        ("invalid", pages.refused(language, with_bot, expired=False)),
        ("already paid", pages.settled(language)),
        ("details saved", pages.thanks(language)),
        ("no page to update on", pages.no_destination(language, with_bot)),
        ("payment page away", pages.unavailable(language, "https://club.example.org/u/x")),
    ]
    found = []
    for variant, response in shown:
        match = _PAGE_PARTS.search(response.text or "")
        assert match is not None, variant  # noqa: S101 - the page template changed shape
        title, text, button = (html.unescape(part or "") for part in match.groups())
        shown_text = (f"<b>{html.escape(title, quote=False)}</b>\n"
                      f"{html.escape(text, quote=False)}")
        found.append(Sample("pages/update_link.html", variant, shown_text,
                            [button] if button else []))
    return found


# --- what must never reach a member -------------------------------------------------------

_TELEGRAM_TAGS = re.compile(r"</?(b|strong|i|em|u|ins|s|strike|del|a|code|pre|tg-spoiler)"
                            r"(\s[^>]*)?>")
_CHECKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("visible HTML tag", re.compile(r"</?[a-zA-Z][^>]*>")),
    ("link glued to the text before it", re.compile(r"[^\s(]https?://")),
    ("bullet glued to the text before it", re.compile(r"[^\n]•")),
    ("greeting without a name", re.compile(
        r"\b(Hello|Hallo|Hi|Dear|Liebe[r]?|Thank you|Danke|Vielen Dank)\s*,\s*[,!.]|"
        r"\b(Hello|Hallo|Hi)\s+,|\bzusammen[,!]|, there!")),
    ("unfilled placeholder", re.compile(r"%\(\w+\)s|\{\{|\{%|\{\w+\}|\bNone\b")),
    ("empty value between words", re.compile(r"\w[ \xa0]{2,}\w")),
)


def visible_text(text: str) -> str:
    """What the member sees once Telegram has applied the HTML parse mode."""
    return html.unescape(_TELEGRAM_TAGS.sub("", text))


# "tap “Update payment method”", "tippen Sie auf „Zahlung bestätigen“": a button by name
_NAMED_BUTTON = re.compile(r"\b(?:[Tt]ap|auf)\s+[„“\"]([^“”\"]+)[“”\"]")


def problems(sample: Sample) -> list[str]:
    shown = visible_text(sample.text)
    found = [what for what, pattern in _CHECKS if pattern.search(shown)]
    found += [f"names a button it does not carry: {name}"
              for name in _NAMED_BUTTON.findall(shown) if name not in sample.buttons]
    if not shown.strip():
        found.append("empty message")
    return found


# --- output -------------------------------------------------------------------------------

_LANGUAGE_NAMES = {"de": "Deutsch", "en": "English"}


def as_markdown(language: str, found: list[Sample]) -> str:
    lines = [
        f"# Member messages – {_LANGUAGE_NAMES.get(language, language)}",
        "",
        "Generated by `payrescue messages preview --language "
        f"{language}`; do not edit by hand. Bold is **bold** in Telegram; buttons follow "
        "each message in [brackets]. E-mails (`email/…`) show their subject and text part; "
        "`--format html` shows their HTML part." + (
            f" The business and its sign-off are a sample's, {BUSINESS}'s (set "
            "PAYRESCUE_BUSINESS_NAME and PAYRESCUE_SIGN_OFF to see yours)."
            if gallery_voice() == SAMPLE_VOICE else ""),
    ]
    current = None
    for sample in found:
        if sample.template != current:
            current = sample.template
            lines += ["", f"## {sample.template}"]
        lines += ["", f"### {sample.variant}", ""]
        shown = html.unescape(re.sub(r"</?b>", "**", sample.text))
        lines += [f"> {line}".rstrip() for line in shown.split("\n")]
        if sample.buttons:
            lines += ["", " ".join(f"[{label}]" for label in sample.buttons)]
    return "\n".join(lines) + "\n"


def as_html(language: str, found: list[Sample]) -> str:
    parts = [f'<!doctype html><html lang="{language}"><head><meta charset="utf-8">'
             "<title>PayRescue messages</title><style>body{font-family:system-ui;"
             "background:#e6ebef;max-width:40rem;margin:auto}.m{background:#fff;"
             "border-radius:12px;padding:.8rem 1rem;white-space:pre-wrap;margin:.4rem 0}"
             ".k span{display:inline-block;background:#d5e4f5;border-radius:8px;"
             "padding:.3rem .7rem;margin:.2rem}.e{width:100%;height:38rem;border:0}"
             "</style></head><body>"]
    current = None
    for sample in found:
        if sample.template != current:
            current = sample.template
            parts.append(f"<h2>{html.escape(sample.template)}</h2>")
        parts.append(f"<h3>{html.escape(sample.variant)}</h3>")
        if sample.html is not None:  # an e-mail: its HTML part, as a mail client shows it
            parts.append(f'<iframe class="e" srcdoc="{html.escape(sample.html)}"></iframe>')
        else:
            parts.append(f'<div class="m">{sample.text}</div>')  # our own Telegram HTML
        if sample.buttons:
            labels = "".join(f"<span>{html.escape(b)}</span>" for b in sample.buttons)
            parts.append(f'<div class="k">{labels}</div>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- the owner's own texts ----------------------------------------------------------------

# names every member template may use besides its own data (`email`: true in an e-mail)
_GLOBALS = {"greeting", "money", "commands", "_", "gettext", "ngettext", "range", "loop",
            "business", "signature", "email"}


def check_texts(folder: Path) -> list[str]:
    """What is wrong with an owner's folder of member texts (PAYRESCUE_TEXTS_DIR): files that
    replace no template of ours, syntax errors, names the template is never given, a text
    present in one language only, and what the gallery checks finds in its rendered result.
    An empty list means the folder is fine."""
    from jinja2 import TemplateSyntaxError, meta

    from payrescue.i18n import LANGUAGES, member_text_environment

    known = {}
    for root in template_roots():
        for path in root.folder.rglob("*.j2"):
            known[path.relative_to(root.folder).as_posix()] = (root, path)
    found: list[str] = []
    own = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.j2"))
    for name in own:
        language, _, template = name.partition("/")
        if language not in LANGUAGES:
            found.append(f"{name}: the first folder must be a language ({', '.join(LANGUAGES)})")
            continue
        if template not in known:
            found.append(f"{name}: replaces no member text (see docs/messages.en.md)")
            continue
        root, _path = known[template]
        env = member_text_environment(_loader(root), None)
        try:
            tree = env.parse((folder / name).read_text(encoding="utf-8"))
        except TemplateSyntaxError as exc:
            found.append(f"{name}, line {exc.lineno}: {exc.message}")
            continue
        given = _given(root, template)
        unknown = meta.find_undeclared_variables(tree) - given - _GLOBALS
        if unknown:
            found.append(f"{name}: never given {', '.join(sorted(unknown))} "
                         f"(available: {', '.join(sorted(given - _GLOBALS)) or 'nothing'})")
        for other in LANGUAGES:
            if other != language and f"{other}/{template}" not in own:
                found.append(f"{name}: {other}/{template} is missing, so {other} members "
                             "would read our text, not yours")
    if found:
        return found
    return [f"{language}/{s.template} ({s.variant}): {problem}"
            for language in LANGUAGES for s in samples(language) for problem in problems(s)]


def _given(root: Root, template: str) -> set[str]:
    """The data a template is rendered with (for a partial: that of every message)."""
    from payrescue.i18n import use_language

    names = [template] if not template.rsplit("/", 1)[-1].startswith("_") else [
        n for n in template_names(root) if n.startswith(template.split("/")[0] + "/")]
    with use_language("en"):
        return {key for name in names for _v, context, _b in _variants(root, name)
                for key in context}


def _loader(root: Root):  # noqa: ANN202
    from jinja2 import FileSystemLoader

    return FileSystemLoader(root.folder)
