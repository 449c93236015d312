"""The bot's answers: Jinja2 templates in bot/templates, rendered in the current language.

Templates autoescape, so a member's name or a plan name can never become Telegram HTML.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from bot import commands
from payrescue.i18n import _, member_text_environment, render_member_text, texts_dir

TEMPLATES = Path(__file__).parent / "templates"
CANCEL_WAIT = "handoff:cancel"
RATE_PREFIX = "rate:"
DELETE_CONFIRM = "rights:delete:yes"
DELETE_ABORT = "rights:delete:no"


@cache
def _environment(texts: Path | None) -> Environment:
    env = member_text_environment(FileSystemLoader(TEMPLATES), texts)
    env.globals["commands"] = commands.menu  # the help lists the member's own spellings
    return env


def render(template: str, **context: Any) -> Markup:
    """A member message: the owner's text for it (PAYRESCUE_TEXTS_DIR) or ours."""
    return render_member_text(_environment(texts_dir()), template, **context)


def cancel_wait_keyboard() -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=_("Back to the bot"), callback_data=CANCEL_WAIT)
    return builder.as_markup()


def rating_keyboard(conversation_id: int) -> dict[str, Any]:
    """As a plain dict: the rating request goes through the outbox."""
    row = [{"text": str(n), "callback_data": f"{RATE_PREFIX}{conversation_id}:{n}"}
           for n in range(1, 6)]
    return {"inline_keyboard": [row]}


def delete_keyboard() -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=_("Yes, delete my data"), callback_data=DELETE_CONFIRM)
    builder.button(text=_("No, keep everything"), callback_data=DELETE_ABORT)
    builder.adjust(1)
    return builder.as_markup()
