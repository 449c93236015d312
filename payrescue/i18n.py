"""One gettext catalog for the bot, the templates and the console.

The language of the current task lives in a ContextVar: the bot's middleware sets it per
update, the console per request, so `_()` anywhere below them speaks the right language.
Catalogs are compiled from the .po files in memory at first use, so a stale or missing .mo
can never serve old texts.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import babel.dates
import babel.numbers
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import BaseLoader, Environment

LANGUAGES = ("de", "en")
FALLBACK = "en"
DOMAIN = "messages"
_current: ContextVar[str] = ContextVar("payrescue_language", default=FALLBACK)


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


def format_money(amount_minor: int, currency: str, language: str | None = None) -> str:
    """29,00 € for German readers, €29.00 for English ones."""
    digits = babel.numbers.get_currency_precision(currency.upper())
    amount = Decimal(amount_minor).scaleb(-digits)
    locale = babel_locale(language)
    return babel.numbers.format_currency(amount, currency.upper(), locale=locale)


def format_datetime(moment: datetime, zone: ZoneInfo, language: str | None = None,
                    format: str = "medium") -> str:
    locale = babel_locale(language)
    return babel.dates.format_datetime(moment, format=format, tzinfo=zone, locale=locale)


def format_date(moment: datetime, zone: ZoneInfo, language: str | None = None,
                format: str = "long") -> str:
    locale = babel_locale(language)
    return babel.dates.format_date(moment.astimezone(zone).date(), format=format, locale=locale)


def template_environment(loader: BaseLoader) -> Environment:
    """A Jinja2 environment whose {% trans %} and _() follow the current language.

    Always escaping: console pages are HTML, and bot messages go out with Telegram's HTML
    parse mode, where a member's name must not become markup either.
    """
    env = Environment(
        loader=loader,
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["money"] = format_money
    return env
