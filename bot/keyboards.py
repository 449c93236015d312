"""Inline keyboards the bot's routers share."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

# Each language is named in itself, so a member who cannot read the current language still
# finds their own: these labels are deliberately not translated.
LANGUAGE_NAMES = {"de": "Deutsch", "en": "English"}


class LanguageChoice(CallbackData, prefix="lang"):
    code: str


def language_keyboard() -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for code, name in LANGUAGE_NAMES.items():
        builder.button(text=name, callback_data=LanguageChoice(code=code))
    return builder.as_markup()
