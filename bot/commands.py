"""The bot's commands in each language, and how the bot describes itself in Telegram.

One table: the routers accept every spelling (/human and /mensch), the help answer lists the
member's own, and at start-up `describe_bot` gives Telegram the command menu, the
description ("What can this bot do?") and the profile's short description per language, so
a German member's menu says /mensch and /sprache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand

from payrescue.i18n import (
    FALLBACK,
    LANGUAGES,
    _,
    current_language,
    current_voice,
    lazy_gettext,
    use_language,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BotCommandSpec:
    names: dict[str, str]  # language → the command's word there
    description_msgid: str
    extra: tuple[str, ...] = ()  # further spellings the bot understands, never shown

    def name(self, language: str) -> str:
        return self.names.get(language, self.names[FALLBACK])

    def all_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.names.values(), *self.extra]))


HELP = BotCommandSpec({"en": "help", "de": "hilfe"}, lazy_gettext("what I can help with"))
STATUS = BotCommandSpec({"en": "status", "de": "status"}, lazy_gettext("what's still open"))
HUMAN = BotCommandSpec({"en": "human", "de": "mensch"}, lazy_gettext("talk to a person"),
                       extra=("agent", "team"))
LANGUAGE = BotCommandSpec({"en": "language", "de": "sprache"},
                          lazy_gettext("Deutsch or English"))
STOP = BotCommandSpec({"en": "stop", "de": "stop"}, lazy_gettext("no more reminders"))
DELETE = BotCommandSpec({"en": "delete", "de": "loeschen"}, lazy_gettext("erase my data"))
MENU = (HELP, STATUS, HUMAN, LANGUAGE, STOP, DELETE)


def menu() -> list[tuple[str, str]]:
    """(command, what it does) for the member's language, in menu order."""
    language = current_language()
    return [(f"/{spec.name(language)}", _(spec.description_msgid)) for spec in MENU]


async def describe_bot(bot: Bot) -> None:
    """Command menu, description and short description in every language we speak; the
    fallback language also for everyone else. A refusal is logged, never fatal: the bot
    works without its profile texts."""
    for language in (*LANGUAGES, ""):
        with use_language(language or FALLBACK):
            commands = [BotCommand(command=name.lstrip("/"), description=text)
                        for name, text in menu()]
            code = language or None
            try:
                await bot.set_my_commands(commands, language_code=code)
                await bot.set_my_description(_description(), language_code=code)
                await bot.set_my_short_description(_(
                    "Help with your membership payments – and a direct line to our team."),
                    language_code=code)
            except TelegramAPIError as exc:
                log.warning("Telegram refused the bot's profile texts (%s: %s)",
                            exc.__class__.__name__, exc.message)
                return


def _description() -> str:
    """The bot's profile text, naming the business when its name is set."""
    business = current_voice().business
    if business:
        return _("I'm the membership assistant of {business}: if a renewal payment fails, "
                 "I'll tell you why and help you sort it out in a minute – and put you "
                 "through to our team whenever you like.").format(business=business)
    return _("I'm the membership assistant: if a renewal payment fails, I'll tell you why "
             "and help you sort it out in a minute – and put you through to our team "
             "whenever you like.")
