"""One gettext catalog for the bot, the templates and the console.

The language of the current task lives in a ContextVar: the bot's middleware sets it per
update, the console per request, so `_()` anywhere below them speaks the right language.
Catalogs are compiled from the .po files in memory at first use, so a stale or missing .mo
can never serve old texts.
"""

from __future__ import annotations

import html
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import babel
import babel.dates
import babel.numbers
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import BaseLoader, ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from jinja2.ext import Extension
from markupsafe import Markup

LANGUAGES = ("de", "en")
FALLBACK = "en"
DOMAIN = "messages"
_current: ContextVar[str] = ContextVar("payrescue_language", default=FALLBACK)


def texts_dir() -> Path | None:
    """The owner's own member texts (PAYRESCUE_TEXTS_DIR): `<language>/<template>` files that
    replace the package's, e.g. `de/dunning/failed.j2`."""
    configured = os.environ.get("PAYRESCUE_TEXTS_DIR")
    return Path(configured) if configured else None


def locales_dir() -> Path:
    configured = os.environ.get("PAYRESCUE_LOCALES_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "locales"


@cache
def translations(language: str) -> Translations:
    po_path = locales_dir() / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with po_path.open("rb") as po_file:
        catalog = read_po(po_file, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def normalise(code: str | None) -> str | None:
    """'de-DE' → 'de'; None for languages we do not speak."""
    if not code:
        return None
    short = code.replace("_", "-").split("-")[0].lower()
    return short if short in LANGUAGES else None


def choose_language(stored: str | None, telegram_code: str | None, default: str) -> str:
    """The member's saved choice, else their Telegram app's language, else the default."""
    return normalise(stored) or normalise(telegram_code) or default


def current_language() -> str:
    return _current.get()


def set_language(language: str) -> None:
    _current.set(normalise(language) or FALLBACK)


@contextmanager
def use_language(language: str | None) -> Iterator[str]:
    token = _current.set(normalise(language) or FALLBACK)
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def gettext(message: str) -> str:
    return translations(current_language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current_language()).ngettext(singular, plural, n)


_ = gettext


def lazy_gettext(message: str) -> str:
    """Marks a string for extraction where it is defined; translate it with `_()` at use."""
    return message


_BABEL_LOCALES = {"de": "de_DE", "en": "en_GB"}


def babel_locale(language: str | None = None) -> str:
    """The Babel locale for formatting numbers and dates: the given language or the current."""
    return _BABEL_LOCALES.get(normalise(language) or current_language(), "en_GB")


# English readers of a dollar amount expect "$15.00", not British English's "US$15.00"
_ENGLISH_FOR_CURRENCY = {"USD": "en_US", "CAD": "en_CA", "AUD": "en_AU", "NZD": "en_NZ",
                         "JPY": "en_US"}


def format_money(amount_minor: int, currency: str, language: str | None = None) -> str:
    """29,00 € for German readers, €29.00 / $15.00 for English ones."""
    code = currency.upper()
    digits = babel.numbers.get_currency_precision(code)
    amount = Decimal(amount_minor).scaleb(-digits)
    locale = babel_locale(language)
    if locale.startswith("en_"):
        locale = _ENGLISH_FOR_CURRENCY.get(code, locale)
    return babel.numbers.format_currency(amount, code, locale=locale)


@cache
def _parsed(identifier: str) -> babel.Locale:
    """Babel parses a locale given by name on every call; the console formats hundreds of
    timestamps a page."""
    return babel.Locale.parse(identifier)


def format_datetime(moment: datetime, zone: ZoneInfo, language: str | None = None,
                    format: str = "medium") -> str:
    locale = _parsed(babel_locale(language))
    return babel.dates.format_datetime(moment, format=format, tzinfo=zone, locale=locale)


def format_date(moment: datetime, zone: ZoneInfo, language: str | None = None,
                format: str = "long") -> str:
    locale = babel_locale(language)
    return babel.dates.format_date(moment.astimezone(zone).date(), format=format, locale=locale)


class KeepLineAfterTrans(Extension):
    """`trim_blocks` keeps `{% if %}` lines from leaving blank lines, but it also ate the line
    break after `{% endtrans %}`, gluing the next line (a link, a bullet) to the sentence.
    A `+` on the tag is Jinja's own switch for "keep my line break"; we add it to every
    endtrans here, so no template can forget it."""

    _ENDTRANS = re.compile(r"\{%(-?)\s*endtrans\s*%\}")

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return self._ENDTRANS.sub(r"{%\1 endtrans +%}", source)


_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING = re.compile(r"[ \t]+\n")


def tidy(text: str) -> Markup:
    """A rendered chat message as it should arrive: paragraphs parted by one blank line, no
    trailing spaces, nothing around it. The result is Markup: an autoescaping template's
    output is already safe HTML and must never be escaped a second time when it is placed
    into another message."""
    text = _TRAILING.sub("\n", str(text))
    # only ever given the output of our autoescaping templates
    return Markup(_BLANK_RUNS.sub("\n\n", text).strip())  # noqa: S704


_TAG = re.compile(r"<[^>]+>")


def plain_text(text: str) -> str:
    """A rendered member text (HTML for Telegram's parse mode) as plain text: for a message
    sent without a parse mode, or an e-mail's text part."""
    return html.unescape(_TAG.sub("", str(text))).strip()


def greeting(first_name: str | None) -> str:
    """"Hello Anna," — or a greeting that needs no name, never "Hello ,"."""
    if first_name and first_name.strip():
        return _("Hello {name},").format(name=first_name.strip())
    return _("Hello,")


def format_when(moment: datetime, zone: ZoneInfo, language: str | None = None) -> str:
    """"on Monday at 9:00 (Berlin time)": a day and an hour, saying whose clock it is, since
    the member may live elsewhere."""
    locale = babel_locale(language)
    local = moment.astimezone(zone)
    city = zone.key.rsplit("/", 1)[-1].replace("_", " ")
    return _("on {day} at {time} ({city} time)").format(
        day=babel.dates.format_date(local.date(), format="EEEE", locale=locale),
        time=babel.dates.format_time(local, format="H:mm", locale=locale), city=city)


@dataclass(frozen=True)
class Voice:
    """Who speaks to members: the business's own name (`business_name`) and who signs its
    messages (`sign_off`: a person such as "Lena Berger", or a team). Member texts get them as
    `business` and `signature`."""

    business: str | None = None
    sign_off: str | None = None

    def signature(self) -> str | None:
        """The line under "Warm wishes,": the sign-off, else the business's team, else none."""
        if self.sign_off:
            return self.sign_off
        if self.business:
            return _("The {business} team").format(business=self.business)
        return None


_process_voice = Voice()
_voice: ContextVar[Voice | None] = ContextVar("payrescue_voice", default=None)


def set_voice(business: str | None, sign_off: str | None) -> None:
    """The process's voice, from its settings (the app and the CLI set it at start)."""
    global _process_voice  # noqa: PLW0603 - one per process, like the texts folder
    _process_voice = Voice(business or None, sign_off or None)


def current_voice() -> Voice:
    return _voice.get() or _process_voice


@contextmanager
def use_voice(voice: Voice) -> Iterator[Voice]:
    """Render in another voice for a while (the gallery's sample business, tests)."""
    token = _voice.set(voice)
    try:
        yield voice
    finally:
        _voice.reset(token)


def voice_context() -> dict[str, str | None]:
    """What every member text may name: the business and the signature, in the current
    language."""
    voice = current_voice()
    return {"business": voice.business, "signature": voice.signature()}


OWN_TEXTS = "@texts"  # the prefix under which the owner's templates are found


class MemberTextEnvironment(Environment):
    """Member texts: the owner's template for the current language, where there is one,
    replaces the package's — for a whole message and for each partial it includes."""

    texts: Path | None = None

    def join_path(self, template: str, parent: str) -> str:
        return own_text_name(template, self.texts)


def own_text_name(template: str, texts: Path | None) -> str:
    if texts is None or template.startswith(OWN_TEXTS):
        return template
    own = f"{current_language()}/{template}"
    return f"{OWN_TEXTS}/{own}" if (texts / own).is_file() else template


def member_text_environment(loader: BaseLoader, texts: Path | None) -> Environment:
    """`template_environment` for member messages, with the owner's folder in front."""
    if texts is not None:
        loader = ChoiceLoader([PrefixLoader({OWN_TEXTS: FileSystemLoader(texts)}), loader])
    env = template_environment(loader, environment=MemberTextEnvironment)
    env.texts = texts  # type: ignore[attr-defined]
    return env


def render_member_text(env: Environment, template: str, **context: object) -> Markup:
    texts = getattr(env, "texts", None)
    return tidy(env.get_template(own_text_name(template, texts)).render(
        **{**voice_context(), **context}))


def template_environment(loader: BaseLoader,
                         environment: type[Environment] = Environment) -> Environment:
    """A Jinja2 environment whose {% trans %} and _() follow the current language.

    Always escaping: console pages are HTML, and bot messages go out with Telegram's HTML
    parse mode, where a member's name must not become markup either.
    """
    env = environment(
        loader=loader,
        autoescape=True,
        extensions=["jinja2.ext.i18n", KeepLineAfterTrans],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["money"] = format_money
    env.globals["greeting"] = greeting
    return env
