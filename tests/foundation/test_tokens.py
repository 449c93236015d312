from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from payrescue import tokens

SECRET = b"k" * 32
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_token_fits_a_telegram_deep_link_and_round_trips() -> None:
    token = tokens.issue(SECRET, "link", 123456, timedelta(days=14), NOW)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token)
    parsed = tokens.verify(SECRET, "link", token, NOW + timedelta(days=13))
    assert parsed.subject_id == 123456
    assert parsed.expires_at == NOW + timedelta(days=14)


def test_every_single_character_change_is_refused() -> None:
    token = tokens.issue(SECRET, "link", 7, timedelta(days=1), NOW)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for position, original in enumerate(token):
        replacement = alphabet[(alphabet.index(original) + 1) % len(alphabet)]
        tampered = token[:position] + replacement + token[position + 1 :]
        with pytest.raises(tokens.TokenInvalid):
            tokens.verify(SECRET, "link", tampered, NOW)


def test_expired_token_is_told_apart_from_a_forged_one() -> None:
    token = tokens.issue(SECRET, "link", 7, timedelta(days=14), NOW)
    with pytest.raises(tokens.TokenExpired):
        tokens.verify(SECRET, "link", token, NOW + timedelta(days=14))
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(b"another secret key of enough length", "link", token, NOW)


def test_a_token_for_one_purpose_does_not_pass_for_another() -> None:
    token = tokens.issue(SECRET, "link", 7, timedelta(days=1), NOW)
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(SECRET, "update", token, NOW)


@pytest.mark.parametrize("garbage", ["", "abc", "!" * 46, "é" * 46, "A" * 200])
def test_garbage_is_invalid(garbage: str) -> None:
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(SECRET, "link", garbage, NOW)
