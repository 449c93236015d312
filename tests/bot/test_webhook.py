"""Webhook mode: Telegram (the emulator) POSTs updates to /telegram/webhook on our server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.polling import CONCURRENT_CHATS
from bot.service import WEBHOOK_PATH, webhook_connections
from payrescue.config import ConfigError, load_settings
from payrescue.db.models import TelegramLink
from payrescue.workers import WORKERS_ENV
from tests.harness import BOT_TOKEN, SECRET_KEY, WEBHOOK_SECRET, RunningService

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def _start_update(user: dict[str, Any], token: str, update_id: int = 500_001) -> dict[str, Any]:
    """A Telegram update for "/start <token>", shaped exactly as Telegram sends it."""
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": 1_767_600_000,
            "chat": {"id": user["id"], "type": "private", "first_name": user["first_name"]},
            "from": user,
            "text": f"/start {token}",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }


async def _post(service: RunningService, body: Any, secret: str | None) -> aiohttp.ClientResponse:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    async with aiohttp.ClientSession() as client, client.post(
        service.base_url + WEBHOOK_PATH, json=body, headers=headers
    ) as response:
        await response.read()
        return response


async def _links(service: RunningService) -> int:
    async with service.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(TelegramLink)) or 0


async def test_telegram_is_told_our_webhook_and_secret(webhook_service: RunningService) -> None:
    info = await webhook_service.bot.get_webhook_info()

    assert info.url == webhook_service.base_url + WEBHOOK_PATH
    assert webhook_service.emulator.bot()["webhook_url"] == info.url
    # as many chats at once as the process handles (a poller's ten), not Telegram's 40 that
    # would queue for the 15 database connections
    assert info.max_connections == CONCURRENT_CHATS == 10


def test_with_several_workers_telegram_may_send_to_each(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv(WORKERS_ENV, "4")
    assert webhook_connections() == 40
    monkeypatch.setenv(WORKERS_ENV, "50")
    assert webhook_connections() == 100  # the most setWebhook takes
    monkeypatch.setenv(WORKERS_ENV, "many")
    assert webhook_connections() == 10


async def test_member_links_through_the_webhook(webhook_service: RunningService) -> None:
    member = await webhook_service.add_member(name="Anna Schmidt", language="de")
    user = webhook_service.create_user("Anna", language_code="de")

    greeting = (await webhook_service.link(member, user))[-1]["plain_text"]

    assert greeting.startswith("Hallo Anna!")
    assert await _links(webhook_service) == 1


async def test_wrong_or_missing_secret_is_refused_and_nothing_is_processed(
    webhook_service: RunningService,
) -> None:
    member = await webhook_service.add_member(language="en")
    user = webhook_service.create_user(language_code="en")
    update = _start_update(user, await webhook_service.link_token(member))

    wrong = await _post(webhook_service, update, "not-the-secret")
    missing = await _post(webhook_service, update, None)

    assert (wrong.status, missing.status) == (401, 401)
    assert await _links(webhook_service) == 0
    assert webhook_service.emulator.sent_messages(user["id"]) == []
    # the very same update with the right secret is handled: the refusal was the secret's
    accepted = await _post(webhook_service, update, WEBHOOK_SECRET)
    assert accepted.status == 200
    assert await _links(webhook_service) == 1
    greeting = await webhook_service.emulator.wait_for_messages(user["id"], 1)
    assert greeting[-1]["plain_text"].startswith("Hello Anna!")


async def test_a_body_that_is_no_update_gets_400(webhook_service: RunningService) -> None:
    for body in ({"update_id": "x", "message": 3}, ["not", "an", "object"]):
        response = await _post(webhook_service, body, WEBHOOK_SECRET)
        assert response.status == 400
    async with aiohttp.ClientSession() as client, client.post(
        webhook_service.base_url + WEBHOOK_PATH, data=b"\xff{", headers={
            SECRET_HEADER: WEBHOOK_SECRET, "Content-Type": "application/json"}
    ) as response:
        assert response.status == 400


async def test_an_update_of_a_kind_this_version_does_not_know_is_taken_and_skipped(
    webhook_service: RunningService,
) -> None:
    """Telegram adds update kinds; answering 500 would make it send one again for ever."""
    user = {"id": 4242, "is_bot": False, "first_name": "Anna"}
    response = await _post(webhook_service, {"update_id": 500_009,
                                             "some_future_update": {"from": user}},
                           WEBHOOK_SECRET)
    assert response.status == 200


@pytest.mark.parametrize("secret", ["with space", "ümlaut", "x" * 257])
def test_a_secret_telegram_would_refuse_stops_start_up_with_one_line(
    secret: str, tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(data_dir=tmp_path, secret_key=SECRET_KEY, bot_token=BOT_TOKEN,
                      bot_mode="webhook", webhook_secret=secret)

    assert str(refused.value).startswith("PAYRESCUE_WEBHOOK_SECRET: expected 1 to 256")
    assert secret not in str(refused.value)


async def test_a_non_ascii_secret_or_a_deeply_nested_update_is_refused_cleanly(
        webhook_service: RunningService, caplog: pytest.LogCaptureFixture) -> None:
    user = webhook_service.create_user("Anna", language_code="de")
    wrong = await _post(webhook_service, _start_update(user, "x"), "é")
    assert wrong.status == 401  # compared as bytes: no TypeError, no 500
    deep = b"[" * 100_000 + b"]" * 100_000
    async with aiohttp.ClientSession() as client, client.post(
            webhook_service.base_url + WEBHOOK_PATH, data=deep,
            headers={SECRET_HEADER: WEBHOOK_SECRET, "Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        assert "nested deeper" in (await response.json())["error"]
    assert not [r for r in caplog.records if r.exc_info]
