"""`payrescue demo`: the whole service in one process, with an emulated Telegram.

No token and no internet: SQLite in a data directory, the Bot API emulator with its member
chat page, the bot in polling mode against it, the web server, a few demo members (each
with a Telegram account in the emulator), canned answers, and an admin and an agent whose
logins are printed. The data directory keeps the database, the demo's signing key and the emulator's
members and chats, so a restart carries on where the last run stopped, and every command
given `--demo` works on the same data (`demo_data`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from pydantic import AnyHttpUrl, SecretStr
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.emulator import EmulatorError, TelegramEmulator, persist, start_emulator
from payrescue.agents import add_agent, find_agent, hash_password
from payrescue.app import init_app
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.db.migrate import upgrade
from payrescue.db.models import CannedAnswer, TeamGroup, TelegramLink
from payrescue.demo_mailbox import (
    MAILBOX_DIR,
    free_port,
    mail_settings,
    serve_mailbox,
    setup_demo_mailbox,
)
from payrescue.demo_page import setup_demo_page
from payrescue.logs import setup_logging
from payrescue.members import add_member, find_by_email, link_token
from payrescue.service import settle_heap, wait_for_stop_signal

DEMO_TOKEN = "424242:DEMO-payrescue-token"  # noqa: S105 - only the local emulator knows it
DEMO_BOT = "payrescue_demo_bot"
ADMIN_EMAIL = "admin@demo.payrescue.test"
AGENT_EMAIL = "lena.koch@demo.payrescue.test"  # a colleague, so two can share the queue
TEAM_GROUP_TITLE = "PayRescue team"  # the agents' Telegram group, a forum with topics
EMULATOR_STATE = "telegram-emulator.json"  # in the data directory


@dataclass(frozen=True)
class DemoMember:
    email: str
    name: str
    language: str
    time_zone: str
    telegram: bool = True  # False: reached by e-mail only (the demo mailbox shows it)


DEMO_MEMBERS = (
    DemoMember("anna.schmidt@demo.payrescue.test", "Anna Schmidt", "de", "Europe/Berlin"),
    DemoMember("ben.carter@demo.payrescue.test", "Ben Carter", "en", "Europe/London"),
    DemoMember("clara.huber@demo.payrescue.test", "Clara Huber", "de", "Europe/Vienna"),
    DemoMember("mia.muster@demo.payrescue.test", "Mia Muster", "de", "Europe/Berlin",
               telegram=False),
)


@dataclass(frozen=True)
class DemoCanned:
    shortcut: str
    language: str
    title: str
    body: str


# What agents answer again and again; a body may use {{ first_name }}, {{ amount }} and
# {{ update_link }} (handoff/canned.py fills them in for the member of the conversation).
DEMO_CANNED = (
    DemoCanned("karte", "de", "Karte aktualisieren",
               "Hallo {{ first_name }}, Ihre letzte Zahlung über {{ amount }} ist leider nicht "
               "durchgegangen. Über diesen Link können Sie Ihre Karte in einer Minute "
               "aktualisieren: {{ update_link }}"),
    DemoCanned("card", "en", "Update the card",
               "Hi {{ first_name }}, your last payment of {{ amount }} didn't go through. "
               "You can update your card in a minute with this link: {{ update_link }}"),
    DemoCanned("aufschub", "de", "Zahlungsaufschub",
               "Kein Problem, {{ first_name }}: Ich habe Ihnen zwei Wochen Aufschub "
               "eingetragen. Ihr Zugang bleibt so lange bestehen, es kommen keine "
               "Erinnerungen mehr."),
    DemoCanned("grace", "en", "More time to pay",
               "No problem, {{ first_name }}: I've given you two more weeks. Your access "
               "stays on in the meantime and the reminders are paused."),
    DemoCanned("kuendigen", "de", "Kündigung",
               "Schade, dass Sie gehen möchten, {{ first_name }}. Ich habe die Kündigung "
               "vorgemerkt; offen bleibt nur der Betrag von {{ amount }}. Darf ich fragen, "
               "was wir hätten besser machen können?"),
    DemoCanned("cancel", "en", "Cancellation",
               "Sorry to see you go, {{ first_name }}. I've noted the cancellation; only "
               "the {{ amount }} stays open. May I ask what we could have done better?"),
)


def demo_data(settings: Settings, data_dir: Path | None = None) -> Settings:
    """The settings of the demo's data: its SQLite, its own key and bot, whatever the
    environment says about a real deployment (a production database or key stays out)."""
    return settings.model_copy(update={
        "demo": True,
        "data_dir": data_dir or settings.demo_dir,
        "database_url": "",
        "secret_key": None,
        "bot_token": SecretStr(DEMO_TOKEN),
        "bot_username": DEMO_BOT,
    })


def demo_settings(settings: Settings, *, port: int, emulator_url: str, data_dir: Path) -> Settings:
    copied = demo_data(settings, data_dir).model_copy(update={
        "port": port,
        "bot_mode": "polling",
        "telegram_api_base": AnyHttpUrl(emulator_url),
        "public_base_url": AnyHttpUrl(f"http://127.0.0.1:{port}"),
    })
    return demo_signing(copied, data_dir)


def demo_chat_link(emulator_url: str, token: str, user_id: int | None = None) -> str:
    """The member chat page as a tap on the member's t.me deep link opens Telegram: their
    chat, with Telegram's "Start" button ready to send the token."""
    user = f"user={user_id}&" if user_id is not None else ""
    return f"{emulator_url}/chat?{user}start={token}"


def demo_signing(settings: Settings, data_dir: Path) -> Settings:
    """The demo's events API key: its own secret from the data directory, so the demo page
    and `payrescue simulate --demo` sign what they send; it never leaves the machine."""
    copied = settings.model_copy(update={"demo": True, "data_dir": data_dir})
    return copied.model_copy(update={"generic_api_secret": SecretStr(copied.secret.decode())})


async def seed(session: AsyncSession, settings: Settings,
               clock: Clock) -> tuple[dict[str, str], dict]:
    """Demo members (once), the admin and a second agent; each login's password is new at
    every start (printed, never stored in the code)."""
    now = clock.now()
    links: dict[str, str] = {}
    for demo in DEMO_MEMBERS:
        member = await find_by_email(session, demo.email)
        if member is None:
            member = await add_member(session, email=demo.email, name=demo.name, now=now,
                                      language=demo.language, time_zone=demo.time_zone)
        if demo.telegram:
            links[demo.name] = link_token(settings.secret, member, now,
                                          settings.link_token_days)
    await _seed_canned_answers(session, clock)
    passwords = {}
    for email, name, role, language in ((ADMIN_EMAIL, "Demo Admin", "admin", None),
                                        (AGENT_EMAIL, "Lena Koch", "agent", "de")):
        passwords[email] = secrets.token_urlsafe(12)
        agent = await find_agent(session, email)
        if agent is None:
            await add_agent(session, email=email, name=name, role=role,
                            password=passwords[email], now=now, language=language)
        else:
            agent.password_hash = hash_password(passwords[email])
            agent.failed_logins = 0
            agent.locked_until = None
    return passwords, links


async def _seed_canned_answers(session: AsyncSession, clock: Clock) -> None:
    """The demo's canned answers, once: an agent who edits or deletes one keeps it so."""
    if await session.scalar(select(CannedAnswer.id).limit(1)) is not None:
        return
    now = clock.now()
    session.add_all(CannedAnswer(shortcut=c.shortcut, language=c.language, title=c.title,
                                 body=c.body, created_at=now, updated_at=now)
                    for c in DEMO_CANNED)


async def forget_unknown_chats(session: AsyncSession, known_chat_ids: set[int]) -> None:
    """Unlink members whose Telegram chat the emulator does not know (its state file was
    deleted): a new emulator member could otherwise get that chat's id, and the member's
    case with it. They link again through their deep link."""
    await session.execute(delete(TelegramLink).where(TelegramLink.chat_id.not_in(known_chat_ids)))


def demo_chat_users(emulator: TelegramEmulator) -> dict[str, int]:
    """Each demo member's own Telegram account in the emulator (created once, then kept
    with the emulator's state), so their deep link opens their chat."""
    existing = {(u["first_name"], u.get("last_name")): u["id"] for u in emulator.users()}
    users = {}
    for demo in (d for d in DEMO_MEMBERS if d.telegram):
        first, _, last = demo.name.partition(" ")
        user_id = existing.get((first, last or None))
        if user_id is None:
            user_id = emulator.create_user(first, last or None,
                                           language_code=demo.language)["id"]
        users[demo.name] = user_id
    return users


def demo_team_group(emulator: TelegramEmulator) -> tuple[int, int]:
    """The team's Telegram supergroup (created once, then kept with the emulator's state):
    topics on, the bot an administrator that may manage them, the demo admin's own Telegram
    account as its owner. Returns (group id, owner's user id)."""
    for group in emulator.groups():
        if group["title"] == TEAM_GROUP_TITLE:
            found = emulator.group(group["id"])
            owner = next(m["id"] for m in found["members"] if m["status"] == "creator")
            return group["id"], owner
    owner = next((u["id"] for u in emulator.users()
                  if (u["first_name"], u.get("last_name")) == ("Demo", "Admin")), None)
    if owner is None:
        owner = emulator.create_user("Demo", "Admin", language_code="en")["id"]
    group_id = emulator.create_group(TEAM_GROUP_TITLE, owner)["id"]
    emulator.set_bot_rights(group_id, admin=True, can_manage_topics=True)
    return group_id, owner


async def bind_team_group(session: AsyncSession, group_id: int, owner_id: int,
                          clock: Clock) -> None:
    """What `/connect_team` and the admin's Telegram link would do, done for the demo: the
    group is the team group, and the admin speaks there as themselves."""
    if await session.scalar(select(TeamGroup.id).where(TeamGroup.chat_id == group_id)) is None:
        session.add(TeamGroup(chat_id=group_id, linked_at=clock.now(),
                              linked_by_telegram_user_id=owner_id))
    admin = await find_agent(session, ADMIN_EMAIL)
    if admin is not None and admin.telegram_user_id != owner_id:
        admin.telegram_user_id = owner_id


async def keep_saved(emulator: TelegramEmulator, path: Path) -> None:
    """Save the emulator's members and chats after each change, until the emulator stops."""
    state = emulator.state
    saved = -1
    while await state.notifier.wait_for(lambda since=saved: state.version != since, None):
        saved = state.version
        persist.save(emulator, path)
        await asyncio.sleep(0.2)  # one write for a burst of changes (a poll, a reply, …)


async def run_demo(settings: Settings, *, port: int, emulator_port: int,
                   data_dir: str | Path) -> int:
    setup_logging("WARNING")
    directory = _data_directory(data_dir)
    state_file = directory / EMULATOR_STATE
    emulator = TelegramEmulator()
    emulator.add_bot(token=DEMO_TOKEN, username=DEMO_BOT, first_name="PayRescue Demo")
    try:
        persist.load(emulator, state_file)
    except EmulatorError as exc:
        print(f"payrescue: {exc.message} (delete the file to start with a fresh Telegram)",
              file=sys.stderr)
        return 1
    chat_users = demo_chat_users(emulator)
    team_group, team_owner = demo_team_group(emulator)
    try:
        emulator_runner, emulator_url = await start_emulator(emulator, port=emulator_port)
    except OSError as exc:
        print(f"payrescue: cannot listen on port {emulator_port}: {exc.strerror} "
              "(choose another with PAYRESCUE_DEMO_EMULATOR_PORT or --emulator-port)",
              file=sys.stderr)
        return 1
    saver = asyncio.create_task(keep_saved(emulator, state_file))
    settings = demo_settings(settings, port=port, emulator_url=emulator_url, data_dir=directory)
    # e-mail to a local mailbox (/demo/mailbox), replies in through PayRescue's receiver
    smtp_port = free_port(port, emulator_port)
    mailbox = await serve_mailbox(directory / MAILBOX_DIR, smtp_port)
    settings = settings.model_copy(update=mail_settings(
        smtp_port, free_port(port, emulator_port, smtp_port)))
    clock = Clock()
    engine = create_engine(settings.effective_database_url)
    await upgrade(engine)
    async with create_sessionmaker(engine)() as session, session.begin():
        await forget_unknown_chats(session, {u["id"] for u in emulator.users()})
        passwords, tokens = await seed(session, settings, clock)
        await bind_team_group(session, team_group, team_owner, clock)

    app = init_app(settings, clock=clock, engine=engine)
    setup_demo_page(app)
    setup_demo_mailbox(app, secrets.token_urlsafe(24))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    except OSError as exc:
        print(f"payrescue: cannot listen on port {port}: {exc.strerror} (choose another: "
              f"PAYRESCUE_PORT={port + 10} make demo, or payrescue demo --port {port + 10})",
              file=sys.stderr)
        await runner.cleanup()
        await _stop_emulator(emulator, emulator_runner, saver, state_file)
        await engine.dispose()
        mailbox.close()
        return 1
    settle_heap()
    try:
        await wait_for_stop_signal(ready=lambda: _print_welcome(
            settings, emulator_url, passwords, tokens, chat_users))
    finally:
        print("\nStopping the demo…")
        await runner.cleanup()
        await _stop_emulator(emulator, emulator_runner, saver, state_file)
        await engine.dispose()
        mailbox.close()
        await mailbox.wait_closed()
    return 0


async def _stop_emulator(emulator: TelegramEmulator, runner: web.AppRunner,
                         saver: asyncio.Task[None], state_file: Path) -> None:
    await runner.cleanup()  # ends the saver's wait as well
    with contextlib.suppress(asyncio.CancelledError):
        await saver
    persist.save(emulator, state_file)  # whatever changed during the last moments


def _data_directory(path: str | Path) -> Path:
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _print_welcome(settings: Settings, emulator_url: str, passwords: dict[str, str],
                   tokens: dict[str, str], chat_users: dict[str, int]) -> None:
    console = settings.public_url("/console")
    lines = [
        "",
        "PayRescue demo is running. Press Ctrl-C to stop.",
        "",
        f"  Agent console:      {console}",
        f"    log in as         {ADMIN_EMAIL}",
        f"    password          {passwords[ADMIN_EMAIL]}",
        f"    or as agent       {AGENT_EMAIL}   (a colleague: try two browsers)",
        f"    agent password    {passwords[AGENT_EMAIL]}",
        f"  Member chat page:   {emulator_url}/chat   (plays a member in Telegram)",
        f"  Team group:         {emulator_url}/team   (the agents' Telegram group: a topic per "
        "conversation that needs a person; claim and answer there as Demo Admin)",
        f"  Billing events:     {settings.public_url('/demo')}   (fail or recover a payment)",
        f"  Mailbox:            {settings.public_url('/demo/mailbox')}   (e-mails to members "
        "without Telegram, such as Mia Muster; reply as the member)",
        "",
        "  Link a demo member (opens the chat page as if their t.me deep link was tapped):",
    ]
    for name, token in tokens.items():
        lines.append(f"    {name:<14} {demo_chat_link(emulator_url, token, chat_users[name])}")
    lines += [
        "",
        f"  Data directory:     {settings.data_dir.resolve()}",
        "  Commands on this data: add --demo, e.g. payrescue report --demo --since 30d",
        "",
    ]
    print("\n".join(lines), flush=True)
