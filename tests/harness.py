"""The whole service on real ports, with the Telegram emulator in place of Telegram.

    async with running_service(engine=engine, clock=clock) as svc:
        member = await svc.add_member(name="Anna Schmidt", language="de")
        user = svc.create_user("Anna", language_code="de")
        await svc.emulator.start(user["id"], await svc.link_token(member))
        messages = await svc.emulator.wait_for_messages(user["id"], 1)

The bot polls the emulator (or, with `webhook=True`, the emulator POSTs updates to the
service's `/telegram/webhook`), so tests exercise aiogram, our middleware and routers, the
database and the HTTP stack for real. Fixtures `service` and `webhook_service` in
tests/conftest.py wrap this for the common case.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiogram import Bot
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.emulator import EmulatorLimits, TelegramEmulator, start_emulator
from bot.keys import BOT, BOT_RUNNER, POLLING_TIMEOUT
from payrescue.app import init_app
from payrescue.clock import Clock, FakeClock
from payrescue.config import Settings, load_settings
from payrescue.db.models import Member
from payrescue.keys import SESSIONMAKER
from payrescue.members import add_member, deep_link, link_token

BOT_TOKEN = "123456:TEST-token"
BOT_USERNAME = "payrescue_demo_bot"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
SECRET_KEY = "test-secret-key-for-the-suite-only-0123456789"
READY_TIMEOUT = 10.0


@dataclass
class RunningService:
    emulator: TelegramEmulator
    emulator_url: str
    app: web.Application
    base_url: str
    settings: Settings
    clock: Clock
    bot_username: str

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.app[SESSIONMAKER]

    @property
    def bot(self) -> Bot:
        return self.app[BOT]

    async def add_member(self, *, name: str = "Anna Schmidt", email: str | None = None,
                         language: str | None = None, time_zone: str | None = None) -> Member:
        """A committed member; the e-mail address defaults to one derived from the name."""
        address = email or f"{name.lower().replace(' ', '.')}@example.org"
        async with self.sessionmaker() as session, session.begin():
            return await add_member(session, email=address, name=name, now=self.clock.now(),
                                    language=language, time_zone=time_zone)

    async def link_token(self, member: Member) -> str:
        return link_token(self.settings.secret, member, self.clock.now(),
                          self.settings.link_token_days)

    async def deep_link(self, member: Member) -> str:
        return deep_link(self.bot_username, await self.link_token(member))

    def create_user(self, first_name: str = "Anna", *, language_code: str | None = "de",
                    **fields: Any) -> dict[str, Any]:
        """A Telegram user (its id is also its private chat's id)."""
        return self.emulator.create_user(first_name, language_code=language_code, **fields)

    async def wait_for_edit(self, chat_id: int, message_id: int,
                            timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Wait until the bot edited this message; return it in its edited state."""

        def current() -> dict[str, Any]:
            return next(m for m in self.emulator.sent_messages(chat_id)
                        if m["message_id"] == message_id)

        await self.emulator.wait_until(lambda: current()["edit_date"] is not None, timeout)
        return current()

    async def link(self, member: Member, user: dict[str, Any]) -> list[dict[str, Any]]:
        """The user opens the member's deep link; returns the bot's messages once greeted."""
        before = len(self.emulator.sent_messages(user["id"]))
        await self.emulator.start(user["id"], await self.link_token(member))
        return await self.emulator.wait_for_messages(user["id"], before + 1)


async def eventually(check: Callable[[], object], what: str, *, clock: FakeClock | None = None,
                     tick: float = 0.0, timeout: float = 20) -> None:  # noqa: ASYNC109
    """Wait until `check()` holds, for work the emulator does not announce (a retry, a log
    line). With `clock` and `tick`, the clock moves on by `tick` between checks, as time
    passes during a real outage: pauses taken on the app's clock then run out."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                if clock is not None and tick:
                    await clock.advance(tick)
                await asyncio.sleep(0.02)  # noqa: ASYNC110 - the service runs meanwhile
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


def _listening_socket() -> socket.socket:
    """A bound socket, so the service's URL (needed for its settings) is known before start."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def running_service(
    *,
    engine: AsyncEngine,
    clock: Clock,
    webhook: bool = False,
    data_dir: Path | None = None,
    emulator: TelegramEmulator | None = None,
    emulator_url: str | None = None,
    polling_timeout: int = 1,
    wait_for_bot: bool = True,
    extend_app: Callable[[web.Application], None] | None = None,
    **settings_overrides: Any,
) -> AsyncIterator[RunningService]:
    """Start the emulator and the service (bot polling it, or webhook mode); stop both after.

    `emulator` lets a test prepare faults first (with `emulator_url`, one already served:
    a second process of the same deployment); `wait_for_bot=False` skips waiting until
    Telegram accepted the bot (for tests of a failing start-up); other keyword arguments
    override settings (e.g. `default_language="de"`).
    """
    # test members type instantly, so the per-chat flood limit (1 message/s, bursts of 3) is
    # off by default; pass an emulator with real limits to test flood handling
    emu = emulator or TelegramEmulator(EmulatorLimits(per_chat_per_second=None))
    if not emu.bots():
        emu.add_bot(token=BOT_TOKEN, username=BOT_USERNAME, first_name="PayRescue")
    token = settings_overrides.pop("bot_token", BOT_TOKEN)
    # a second service of the same deployment talks to the first one's Telegram
    emulator_runner = None
    if emulator_url is None:
        emulator_runner, emulator_url = await start_emulator(emu)
    sock = _listening_socket()
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with contextlib.ExitStack() as stack:
            directory = data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            settings = load_settings(**{
                "data_dir": directory,
                "database_url": engine.url.render_as_string(hide_password=False),
                "secret_key": SECRET_KEY,
                "bot_token": token,
                "telegram_api_base": emulator_url,
                "public_base_url": base_url,
                **({"bot_mode": "webhook", "webhook_secret": WEBHOOK_SECRET} if webhook else {}),
                **settings_overrides,
            })
            app = init_app(settings, clock=clock, engine=engine)
            if extend_app is not None:  # e.g. the demo's own pages
                extend_app(app)
            app[POLLING_TIMEOUT] = polling_timeout
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
            await runner.setup()
            try:
                await web.SockSite(runner, sock).start()
                if wait_for_bot:
                    await app[BOT_RUNNER].wait_ready(READY_TIMEOUT)
                yield RunningService(
                    emulator=emu, emulator_url=emulator_url, app=app, base_url=base_url,
                    settings=settings, clock=clock,
                    bot_username=emu.bot()["username"],
                )
            finally:
                await runner.cleanup()
    finally:
        sock.close()
        if emulator_runner is not None:
            await emulator_runner.cleanup()

