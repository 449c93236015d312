"""Typed access to Bot API parameters, whatever way they arrived.

aiogram posts form fields as strings (numbers and nested objects JSON-encoded, files as
multipart parts referenced by ``attach://name``); curl users send query strings or JSON
bodies with native types. Telegram accepts all of these, so each getter coerces both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    filename: str | None
    data: bytes
    content_type: str | None = None


class Params:
    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = dict(raw)

    def __contains__(self, name: str) -> bool:
        return self.raw.get(name) not in (None, "")

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.raw.get(name)
        if value is None:
            return default
        if isinstance(value, Upload):
            raise bad_request(f'field "{name}" must be a String')
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict | list):
            return json.dumps(value)
        return str(value)

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool | Upload):
            raise bad_request(f'field "{name}" must be an Integer')
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad_request(f'field "{name}" must be an Integer') from None

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("true", "1", "yes")

    def json_value(self, name: str, error: str | None = None) -> Any:
        value = self.raw.get(name)
        if not isinstance(value, str):
            return value
        if value == "":
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(400, error or f"Bad Request: can't parse {name} JSON object") from None

    def file(self, name: str) -> Upload | str | None:
        """An uploaded file, or a string (file_id or URL) to resolve by the caller."""
        value = self.raw.get(name)
        if isinstance(value, str) and value.startswith("attach://"):
            value = self.raw.get(value.removeprefix("attach://"))
            if not isinstance(value, Upload):
                raise bad_request(f'file for field "{name}" not found in the request')
        if value is None or isinstance(value, Upload | str):
            return value
        raise bad_request(f'field "{name}" must be an InputFile or a String')

    def chat_id(self) -> int:
        value = self.raw.get("chat_id")
        if value is None or value == "":
            raise bad_request("chat_id is empty")
        try:
            return int(value)
        except (TypeError, ValueError):
            # "@channelusername" addresses channels only; members are never found that way.
            raise bad_request("chat not found") from None
