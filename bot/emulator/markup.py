"""Validation of reply_markup the way Telegram checks it.

Only what a bot can get wrong in practice is checked: the keyboard structure, callback
data of 1-64 bytes (the limit bots most often trip over) and button URLs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .errors import ApiError, bad_request

MAX_CALLBACK_DATA_BYTES = 64
_TEXT_ONLY_BUTTON = (
    "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
)
_BUTTON_KINDS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)


def _check_url(url: Any) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    valid = parts is not None and (
        (parts.scheme in ("http", "https") and parts.netloc) or parts.scheme == "tg"
    )
    if not valid:
        raise bad_request(f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")


def _check_inline_button(button: Any) -> None:
    if not isinstance(button, dict) or not isinstance(button.get("text"), str):
        raise bad_request(_TEXT_ONLY_BUTTON)
    if not button["text"]:
        raise bad_request("BUTTON_TEXT_INVALID")
    kinds = [kind for kind in _BUTTON_KINDS if kind in button]
    if len(kinds) != 1:
        raise bad_request(_TEXT_ONLY_BUTTON)
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA_BYTES:
            raise bad_request("BUTTON_DATA_INVALID")
    if "url" in button:
        _check_url(button["url"])


def _rows(markup: dict[str, Any], key: str) -> list[list[Any]]:
    rows = markup[key]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request(f'field "{key}" of the keyboard must be an Array of Arrays')
    return rows


def validate_reply_markup(markup: Any) -> dict[str, Any] | None:
    """Return the markup unchanged if Telegram would accept it, else raise ApiError."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        for row in _rows(markup, "inline_keyboard"):
            for button in row:
                _check_inline_button(button)
    elif "keyboard" in markup:
        for row in _rows(markup, "keyboard"):
            for button in row:
                text = button if isinstance(button, str) else (button or {}).get("text")
                if not isinstance(text, str) or not text:
                    raise bad_request("keyboard button text must be a non-empty String")
    elif not (markup.get("remove_keyboard") or markup.get("force_reply")):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    return markup


def inline_keyboard(markup: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a markup that Telegram echoes in Message.reply_markup (inline only)."""
    if markup and "inline_keyboard" in markup:
        return {"inline_keyboard": markup["inline_keyboard"]}
    return None


def has_callback_button(markup: dict[str, Any] | None, data: str) -> bool:
    keyboard = (markup or {}).get("inline_keyboard") or []
    return any(button.get("callback_data") == data for row in keyboard for button in row)
