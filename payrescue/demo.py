"""`payrescue demo`: the whole service in one process, with an emulated Telegram.

No token and no internet: SQLite in a data directory, the Bot API emulator with its member
chat page, the bot in polling mode against it, the web server, a few demo members and an
admin whose login is printed.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from pydantic import AnyHttpUrl, SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from bot.emulator import TelegramEmulator, start_emulator
from payrescue.agents import add_agent, find_agent, hash_password
from payrescue.app import init_app
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.db.migrate import upgrade
from payrescue.demo_page import setup_demo_page
from payrescue.logs import setup_logging
from payrescue.members import add_member, find_by_email, link_token
from payrescue.service import wait_for_stop_signal

DEMO_TOKEN = "424242:DEMO-payrescue-token"  # noqa: S105 - only the local emulator knows it
DEMO_BOT = "payrescue_demo_bot"
ADMIN_EMAIL = "admin@demo.payrescue.test"


@dataclass(frozen=True)
class DemoMember:
    email: str
    name: str
    language: str
    time_zone: str


DEMO_MEMBERS = (
    DemoMember("anna.schmidt@demo.payrescue.test", "Anna Schmidt", "de", "Europe/Berlin"),
    DemoMember("ben.carter@demo.payrescue.test", "Ben Carter", "en", "Europe/London"),
    DemoMember("clara.huber@demo.payrescue.test", "Clara Huber", "de", "Europe/Vienna"),
)


def demo_settings(settings: Settings, *, port: int, emulator_url: str, data_dir: Path) -> Settings:
    copied = settings.model_copy(update={
        "demo": True,
        "data_dir": data_dir,
        "port": port,
        "bot_token": SecretStr(DEMO_TOKEN),
        "bot_username": DEMO_BOT,
        "bot_mode": "polling",
        "telegram_api_base": AnyHttpUrl(emulator_url),
        "public_base_url": AnyHttpUrl(f"http://127.0.0.1:{port}"),
    })
    return demo_signing(copied, data_dir)


def demo_signing(settings: Settings, data_dir: Path) -> Settings:
    """The demo's events API key: its own secret from the data directory, so the demo page
    and `payrescue simulate --demo` sign what they send; it never leaves the machine."""
    copied = settings.model_copy(update={"demo": True, "data_dir": data_dir})
    return copied.model_copy(update={"generic_api_secret": SecretStr(copied.secret.decode())})


async def seed(session: AsyncSession, settings: Settings, clock: Clock) -> tuple[str, dict]:
    """Demo members (once) and the admin, whose password is new at every start."""
    now = clock.now()
    links: dict[str, str] = {}
    for demo in DEMO_MEMBERS:
        member = await find_by_email(session, demo.email)
        if member is None:
            member = await add_member(session, email=demo.email, name=demo.name, now=now,
                                      language=demo.language, time_zone=demo.time_zone)
        links[demo.name] = link_token(settings.secret, member, now, settings.link_token_days)
    password = secrets.token_urlsafe(12)
    admin = await find_agent(session, ADMIN_EMAIL)
    if admin is None:
        await add_agent(session, email=ADMIN_EMAIL, name="Demo Admin", role="admin",
                        password=password, now=now)
    else:
        admin.password_hash = hash_password(password)
        admin.failed_logins = 0
        admin.locked_until = None
    return password, links


async def run_demo(settings: Settings, *, port: int, emulator_port: int, data_dir: str) -> int:
    setup_logging("WARNING")
    directory = _data_directory(data_dir)
    emulator = TelegramEmulator()
    emulator.add_bot(token=DEMO_TOKEN, username=DEMO_BOT, first_name="PayRescue Demo")
    try:
        emulator_runner, emulator_url = await start_emulator(emulator, port=emulator_port)
    except OSError as exc:
        print(f"payrescue: cannot listen on port {emulator_port}: {exc.strerror} "
              "(choose another with --emulator-port)", file=sys.stderr)
        return 1
    settings = demo_settings(settings, port=port, emulator_url=emulator_url, data_dir=directory)
    clock = Clock()
    engine = create_engine(settings.effective_database_url)
    await upgrade(engine)
    async with create_sessionmaker(engine)() as session, session.begin():
        password, tokens = await seed(session, settings, clock)

    app = init_app(settings, clock=clock, engine=engine)
    setup_demo_page(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    except OSError as exc:
        print(f"payrescue: cannot listen on port {port}: {exc.strerror} "
              "(choose another with --port)", file=sys.stderr)
        await runner.cleanup()
        await emulator_runner.cleanup()
        await engine.dispose()
        return 1
    _print_welcome(settings, emulator_url, password, tokens)
    try:
        await wait_for_stop_signal()
    finally:
        print("\nStopping the demo…")
        await runner.cleanup()
        await emulator_runner.cleanup()
        await engine.dispose()
    return 0


def _data_directory(path: str) -> Path:
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _print_welcome(settings: Settings, emulator_url: str, password: str,
                   tokens: dict[str, str]) -> None:
    console = settings.public_url("/console")
    lines = [
        "",
        "PayRescue demo is running. Press Ctrl-C to stop.",
        "",
        f"  Agent console:      {console}",
        f"    log in as         {ADMIN_EMAIL}",
        f"    password          {password}",
        f"  Member chat page:   {emulator_url}/chat   (plays a member in Telegram)",
        f"  Billing events:     {settings.public_url('/demo')}   (fail or recover a payment)",
        "",
        "  Link a demo member (opens the chat page as if their t.me deep link was tapped):",
    ]
    for name, token in tokens.items():
        lines.append(f"    {name:<14} {emulator_url}/chat?start={token}")
    lines += ["", f"  Data directory:     {settings.data_dir.resolve()}", ""]
    print("\n".join(lines), flush=True)
