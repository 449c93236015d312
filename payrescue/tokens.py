"""Short signed tokens for Telegram deep links and payment-update links.

Telegram allows at most 64 characters of A-Za-z0-9_- in a /start payload, so the token is
a packed binary record plus a truncated HMAC, in unpadded base64url (46 characters):
subject id (8 bytes) | expiry as unix seconds (4) | random token id (6) | HMAC-SHA256 (16).
Each purpose signs with its own derived key, so a link token never passes as an update link.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_RECORD = struct.Struct(">QI6s")
_MAC_BYTES = 16


class TokenError(Exception):
    """Base for a token we refuse."""


class TokenInvalid(TokenError):
    """Malformed or tampered with."""


class TokenExpired(TokenError):
    """Genuine, but too old."""


@dataclass(frozen=True)
class Token:
    subject_id: int
    expires_at: datetime
    token_id: str


def _key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, b"payrescue-token:" + purpose.encode(), hashlib.sha256).digest()


def _mac(secret: bytes, purpose: str, record: bytes) -> bytes:
    return hmac.new(_key(secret, purpose), record, hashlib.sha256).digest()[:_MAC_BYTES]


def issue(secret: bytes, purpose: str, subject_id: int, ttl: timedelta, now: datetime) -> str:
    expires = int((now + ttl).timestamp())
    record = _RECORD.pack(subject_id, expires, secrets.token_bytes(6))
    raw = record + _mac(secret, purpose, record)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def verify(secret: bytes, purpose: str, token: str, now: datetime) -> Token:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise TokenInvalid("not a token") from None
    if len(raw) != _RECORD.size + _MAC_BYTES or not token.isascii():
        raise TokenInvalid("wrong length")
    record, mac = raw[: _RECORD.size], raw[_RECORD.size :]
    if not hmac.compare_digest(mac, _mac(secret, purpose, record)):
        raise TokenInvalid("bad signature")
    # base64 decoding ignores some trailing bits; refuse any token that is not the canonical form
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != token:
        raise TokenInvalid("not canonical")
    subject_id, expires, token_id = _RECORD.unpack(record)
    expires_at = datetime.fromtimestamp(expires, UTC)
    if now >= expires_at:
        raise TokenExpired("expired")
    return Token(subject_id, expires_at, token_id.hex())
