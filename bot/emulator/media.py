"""Stored files: what members and bots upload, addressable by file_id and file_path."""

from __future__ import annotations

import hashlib
import mimetypes
import secrets
import struct
from dataclasses import dataclass
from typing import Any

# Telegram's folder for each kind of file, which also shows up in file_path.
_FOLDERS = {
    "photo": "photos",
    "document": "documents",
    "voice": "voice",
    "sticker": "stickers",
    "audio": "music",
    "video": "videos",
}
_DEFAULT_EXTENSIONS = {"photo": ".jpg", "voice": ".oga", "sticker": ".webp", "video": ".mp4"}


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    kind: str
    data: bytes
    file_path: str
    file_name: str | None
    mime_type: str | None

    @property
    def file_size(self) -> int:
        return len(self.data)

    def base(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.file_size,
        }

    def to_file(self) -> dict[str, Any]:
        """Bot API `File`, as getFile answers."""
        return {**self.base(), "file_path": self.file_path}


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, GIF, JPEG or WebP image; (0, 0) when unknown.

    Telegram reports real dimensions in PhotoSize; reading the header is enough for that
    and keeps the emulator free of an imaging library.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and data[12:16] == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                break
            marker = data[i + 1]
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            # SOF0..SOF15 carry the size, except DHT (C4), JPG (C8) and DAC (CC).
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            i += 2 + length
    return 0, 0


class FileStore:
    def __init__(self) -> None:
        self._by_id: dict[str, StoredFile] = {}
        self._by_path: dict[str, StoredFile] = {}
        self._counter = 0

    def add(
        self,
        kind: str,
        data: bytes,
        file_name: str | None = None,
        mime_type: str | None = None,
    ) -> StoredFile:
        self._counter += 1
        if mime_type in (None, "", "application/octet-stream") and file_name:
            mime_type = mimetypes.guess_type(file_name)[0] or mime_type
        extension = ""
        if file_name and "." in file_name:
            extension = "." + file_name.rsplit(".", 1)[1]
        elif mime_type:
            extension = mimetypes.guess_extension(mime_type) or ""
        extension = extension or _DEFAULT_EXTENSIONS.get(kind, "")
        stored = StoredFile(
            # Real file_ids are long opaque strings; a random one keeps bots from parsing them.
            file_id=f"{kind[:3].upper()}{secrets.token_urlsafe(24)}",
            file_unique_id=hashlib.sha256(data).hexdigest()[:16],
            kind=kind,
            data=data,
            file_path=f"{_FOLDERS.get(kind, 'documents')}/file_{self._counter}{extension}",
            file_name=file_name,
            mime_type=mime_type,
        )
        self._by_id[stored.file_id] = stored
        self._by_path[stored.file_path] = stored
        return stored

    def put(self, stored: StoredFile) -> None:
        """Take back a file saved earlier (bot.emulator.persist), under its old id and path."""
        self._by_id[stored.file_id] = stored
        self._by_path[stored.file_path] = stored
        self._counter += 1  # later files get paths of their own

    def all(self) -> list[StoredFile]:
        return list(self._by_id.values())

    def get(self, file_id: str) -> StoredFile | None:
        return self._by_id.get(file_id)

    def by_path(self, file_path: str) -> StoredFile | None:
        return self._by_path.get(file_path)

    def clear(self) -> None:
        self._by_id.clear()
        self._by_path.clear()


def media_object(
    stored: StoredFile,
    *,
    duration: int | None = None,
    emoji: str | None = None,
    width: int | None = None,
    height: int | None = None,
) -> tuple[str, Any]:
    """The Message field and its Bot API value for a stored file of the given kind."""
    kind = stored.kind
    if kind == "photo":
        w, h = image_size(stored.data)
        return "photo", [{**stored.base(), "width": w, "height": h}]
    if kind == "document":
        obj = stored.base()
        if stored.file_name:
            obj["file_name"] = stored.file_name
        if stored.mime_type:
            obj["mime_type"] = stored.mime_type
        return "document", obj
    if kind == "voice":
        return "voice", {
            **stored.base(),
            "duration": duration or 1,
            "mime_type": stored.mime_type or "audio/ogg",
        }
    if kind == "audio":
        return "audio", {
            **stored.base(),
            "duration": duration or 1,
            "mime_type": stored.mime_type or "audio/mpeg",
            **({"file_name": stored.file_name} if stored.file_name else {}),
        }
    if kind == "video":
        w, h = width or 0, height or 0
        return "video", {**stored.base(), "width": w, "height": h, "duration": duration or 1}
    if kind == "sticker":
        w, h = image_size(stored.data)
        return "sticker", {
            **stored.base(),
            "type": "regular",
            "width": w or 512,
            "height": h or 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji or "🙂",
        }
    raise ValueError(f"unknown media kind {kind!r}")
