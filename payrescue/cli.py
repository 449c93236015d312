"""The `payrescue` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.clock import Clock
from payrescue.config import ConfigError, Settings, load_settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.i18n import set_voice

Command = Callable[[Settings, argparse.Namespace], Awaitable[int]]


class CommandError(Exception):
    """Ends a command with one line on stderr and exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payrescue",
        description="Win back members whose renewal payment failed.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (or PAYRESCUE_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the service (bot, webhooks, console)")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="N identical processes on one port (PostgreSQL and Redis; "
                     "see README: several processes)")
    run.set_defaults(handler=_run)

    demo = commands.add_parser(
        "demo", help="try everything locally: no token, no internet, an emulated Telegram"
    )
    demo.add_argument("--port", type=int,
                      help="web server port (default PAYRESCUE_PORT, else 8080)")
    demo.add_argument("--emulator-port", type=int,
                      help="Telegram emulator and member chat page port "
                      "(default PAYRESCUE_DEMO_EMULATOR_PORT, else the web port + 1)")
    demo.add_argument("--data-dir", help="where the demo keeps its SQLite, key and chats "
                      "(default PAYRESCUE_DEMO_DIR, else data/demo)")
    demo.set_defaults(handler=_demo, demo_mode=True)

    db = commands.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    db.add_parser("upgrade", help="apply all migrations (needs no secret key)").set_defaults(
        handler=_db_upgrade, needs_secret=False)

    agents = commands.add_parser("agents", help="console accounts").add_subparsers(
        dest="agents_command", required=True, metavar="ACTION"
    )
    add_agent = agents.add_parser(
        "add", help="create an agent or admin; asks for the password",
        description="Create a console account. The password is asked for (twice) on the "
        "terminal, or read from the first line of standard input when it is not a terminal.",
    )
    add_agent.add_argument("email")
    add_agent.add_argument("--name", required=True)
    add_agent.add_argument("--role", choices=["agent", "admin"], default="agent")
    add_agent.add_argument("--language", choices=["de", "en"], default="en")
    _add_demo_option(add_agent)
    add_agent.set_defaults(handler=_agents_add)
    disable = agents.add_parser(
        "disable", help="stop an account from signing in and end all its sessions now")
    disable.add_argument("email")
    disable.set_defaults(handler=_agents_disable)
    enable = agents.add_parser("enable", help="let a disabled account sign in again")
    enable.add_argument("email")
    enable.set_defaults(handler=_agents_enable)

    members = commands.add_parser("members", help="members and their Telegram links")
    member_actions = members.add_subparsers(dest="members_command", required=True,
                                            metavar="ACTION")
    add_member = member_actions.add_parser("add", help="add one member by hand")
    add_member.add_argument("email")
    add_member.add_argument("--name", required=True)
    add_member.add_argument("--language", choices=["de", "en"])
    add_member.add_argument("--time-zone", help="IANA zone such as Europe/Vienna")
    _add_demo_option(add_member)
    add_member.set_defaults(handler=_members_add)
    link = member_actions.add_parser("link", help="print a member's Telegram deep link")
    link.add_argument("email")
    _add_demo_option(link)
    link.set_defaults(handler=_members_link)
    import_members = member_actions.add_parser(
        "import", help="add or update members from a CSV file",
        description="Columns: email (required), name, language, time_zone, "
        "stripe_customer_id, memberpress_member_id, external_id. Re-importing updates; "
        "unusable rows go to FILE.rejected.csv with the reason.",
    )
    invite = member_actions.add_parser(
        "invite", help="invite members without Telegram into the chat, by e-mail",
        description="Queues one invitation e-mail per member without Telegram (never twice "
        "within 30 days); the running service sends them at PAYRESCUE_SMTP_RATE_PER_SECOND. "
        "Stopped half-way? Run it again: who was invited is recorded.")
    invite.add_argument("emails", nargs="*", metavar="EMAIL")
    invite.add_argument("--all-unlinked", action="store_true",
                        help="every member without Telegram (instead of naming them)")
    invite.add_argument("--dry-run", action="store_true", help="only say how many")
    _add_demo_option(invite)
    invite.set_defaults(handler=_members_invite)
    import_members.add_argument("file", metavar="FILE.csv")
    import_members.add_argument(
        "--invite", action="store_true",
        help="then invite the imported members without Telegram by e-mail (see invite)")
    _add_demo_option(import_members)
    import_members.set_defaults(handler=_members_import)

    simulate = commands.add_parser(
        "simulate", help="send a signed test event to a running service (like stripe trigger)",
        description="Sends a correctly signed provider event through the real webhook path.",
    )
    simulate.add_argument("action", choices=["failed-payment", "recovered", "canceled",
                                             "card-expiring", "event"])
    simulate.add_argument("event_type", nargs="?", metavar="TYPE",
                          help="with `event`: any provider event PayRescue reads, e.g. "
                               "invoice.voided or transaction-refunded (docs/billing.md)")
    simulate.add_argument("--member", required=True, metavar="EMAIL")
    simulate.add_argument("--reason", default="insufficient_funds",
                          help="decline code such as expired_card (default insufficient_funds)")
    simulate.add_argument("--provider", choices=["stripe", "memberpress", "generic"],
                          help="default: the first one configured")
    simulate.add_argument("--url", default=None,
                          help="the running service (default: http://HOST:PORT from settings)")
    simulate.add_argument("--amount", type=int, default=2900, help="minor units (default 2900)")
    simulate.add_argument("--currency", default="EUR")
    _add_demo_option(simulate, "send to a running `payrescue demo`, signed with its own key")
    simulate.set_defaults(handler=_simulate)

    alerts = commands.add_parser(
        "alerts", help="the gateway alarm: list it, release the reminders it holds"
    ).add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    list_alerts = alerts.add_parser("list", help="alarms that hold reminders now")
    _add_demo_option(list_alerts)
    list_alerts.set_defaults(handler=_alerts_list)
    release = alerts.add_parser(
        "release", help="the fault is fixed: let the held reminders go out",
        description="The running service sends them at its next reconcile tick.")
    release.add_argument("alert_id", type=int)
    _add_demo_option(release)
    release.set_defaults(handler=_alerts_release)

    team = commands.add_parser(
        "team-group", help="the agents' Telegram group (a forum topic per conversation)"
    ).add_subparsers(dest="team_command", required=True, metavar="ACTION")
    team_link = team.add_parser(
        "link", help="print a one-time code that binds a Telegram group as the team group",
        description="Add the bot to a supergroup with topics on, make it an administrator "
        "with “Manage topics”, then send /connect_team <code> in the group.")
    _add_demo_option(team_link)
    team_link.set_defaults(handler=_team_group_link)

    messages = commands.add_parser(
        "messages", help="every text members receive, for review"
    ).add_subparsers(dest="messages_command", required=True, metavar="ACTION")
    preview = messages.add_parser(
        "preview", help="render every member message with realistic data (the gallery)",
        description="Each dunning step for each decline category, the FAQ answers, the "
        "handoff texts, with the variants for a missing name, plan or date.")
    preview.add_argument("--language", choices=["de", "en"], default="en")
    preview.add_argument("--format", choices=["md", "html"], default="md")
    preview.set_defaults(handler=_messages_preview, needs_secret=False)
    check = messages.add_parser(
        "check", help="check a folder of your own member texts (PAYRESCUE_TEXTS_DIR)",
        description="Files are LANGUAGE/TEMPLATE, e.g. de/dunning/failed.j2, replacing ours. "
        "Checks syntax, placeholders, that both languages are there, and renders each "
        "message through the gallery's checks.")
    check.add_argument("folder", nargs="?", help="default: PAYRESCUE_TEXTS_DIR")
    check.set_defaults(handler=_messages_check, needs_secret=False)

    report = commands.add_parser(
        "report", help="print the recovery figures for a period",
        description="The same figures as the console's dashboard, in the business's time zone.",
    )
    report.add_argument("--since", default="30d",
                        help="a number of days such as 30d (default), or a date YYYY-MM-DD")
    report.add_argument("--until", metavar="DATE", help="last day YYYY-MM-DD (default: today)")
    report.add_argument("--format", choices=["table", "json", "csv"], default="table")
    report.add_argument("--language", choices=["de", "en"],
                        help="labels and numbers (default: PAYRESCUE_DEFAULT_LANGUAGE)")
    report.add_argument("--decimal-comma", action="store_true",
                        help="CSV with decimal commas and ';' between fields (German spreadsheets)")
    _add_demo_option(report)
    report.set_defaults(handler=_report)

    cases = commands.add_parser(
        "cases", help="members' subscriptions and recovery cases, with their payment events",
        description="Each subscription with its status, each case with the payment events it "
        "was derived from, in the provider's time order.",
    )
    cases.add_argument("--member", metavar="EMAIL", help="only this member")
    cases.add_argument("--format", choices=["table", "json"], default="table")
    _add_demo_option(cases)
    cases.set_defaults(handler=_cases)
    return parser


def _add_demo_option(command: argparse.ArgumentParser,
                     text: str = "use the demo's data and key (what `make demo` runs on)") -> None:
    command.add_argument("--demo", action="store_true", dest="demo_mode", help=text)
    command.add_argument("--data-dir", metavar="DIR",
                         help="with --demo: the demo's data directory "
                         "(default PAYRESCUE_DEMO_DIR, else data/demo)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"payrescue: configuration error: {exc}", file=sys.stderr)
        if "demo_mode" in args and "SECRET_KEY" in str(exc):
            print("payrescue: to use the data of `make demo`, add --demo", file=sys.stderr)
        return 2
    try:
        return asyncio.run(args.handler(settings, args))
    except CommandError as exc:
        print(f"payrescue: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _settings(args: argparse.Namespace) -> Settings:
    """The settings a command runs with; with --demo, those of the demo's data."""
    demo_mode = getattr(args, "demo_mode", False)
    overrides: dict[str, Any] = {"demo": True} if demo_mode else {}
    settings = load_settings(args.config, need_secret=getattr(args, "needs_secret", True),
                             **overrides)
    if demo_mode and args.handler is not _demo:
        from payrescue.demo import demo_data

        settings = demo_data(settings, Path(args.data_dir) if args.data_dir else None)
    set_voice(settings.business_name, settings.sign_off)  # for the texts a command queues
    return settings


async def _ensure_database(settings: Settings) -> None:
    """Stop with one line unless the database is there and migrated: a command never
    creates an empty database by accident, and never ends in "no such table"."""
    from payrescue.db.migrate import missing_sqlite_file
    from payrescue.service import check_database

    if settings.demo and missing_sqlite_file(settings.effective_database_url):
        raise CommandError(f"no demo data in {settings.data_dir.resolve()}: start the demo "
                           "once with `make demo` (or name its directory with --data-dir)")
    problem = await check_database(settings)
    if problem:
        raise CommandError(problem)


async def _with_session(settings: Settings, work: Callable[..., Awaitable[Any]]) -> Any:
    await _ensure_database(settings)
    engine = create_engine(settings.effective_database_url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await work(session)
    except SQLAlchemyError as exc:
        raise CommandError(f"database error: {exc.__class__.__name__}: {exc.args[0]}") from exc
    finally:
        await engine.dispose()


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from payrescue.service import serve
    from payrescue.workers import supervise, worker_number

    if args.workers < 1:
        raise CommandError("--workers: at least 1")
    if args.workers == 1 or worker_number() is not None:
        return await serve(settings, share_port=worker_number() is not None)
    config = ["--config", args.config] if args.config else []
    return await supervise(settings, args.workers, [*config, "run"])


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from payrescue.demo import run_demo

    # a flag wins over the environment (PAYRESCUE_PORT, …), which wins over the defaults
    port = args.port or settings.port
    emulator_port = args.emulator_port or settings.demo_emulator_port or port + 1
    return await run_demo(settings, port=port, emulator_port=emulator_port,
                          data_dir=args.data_dir or settings.demo_dir)


async def _db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    from payrescue.db.migrate import current_revision, upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.effective_database_url)
    try:
        await upgrade(engine)
        print(f"database at revision {await current_revision(engine)}")
    except (SQLAlchemyError, OSError) as exc:
        raise CommandError(f"cannot migrate the database: {exc}") from exc
    finally:
        await engine.dispose()
    return 0


def _ask_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise CommandError("the two passwords differ; nothing was created")
    return first


async def _agents_add(settings: Settings, args: argparse.Namespace) -> int:
    from payrescue.agents import add_agent

    password = _ask_password()

    async def work(session):  # noqa: ANN001, ANN202
        return await add_agent(session, email=args.email, name=args.name, role=args.role,
                               password=password, now=Clock().now(), language=args.language)

    try:
        agent = await _with_session(settings, work)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    except CommandError as exc:
        if isinstance(exc.__cause__, IntegrityError):
            raise CommandError(f"an account for {args.email} exists already") from None
        raise
    print(f"created {agent.role} {agent.email}")
    return 0


async def _agents_disable(settings: Settings, args: argparse.Namespace) -> int:
    return await _set_disabled(settings, args.email, disable=True)


async def _agents_enable(settings: Settings, args: argparse.Namespace) -> int:
    return await _set_disabled(settings, args.email, disable=False)


async def _set_disabled(settings: Settings, email: str, *, disable: bool) -> int:
    from payrescue.agents import set_disabled

    now = Clock().now()
    agent = await _with_session(settings, lambda session: set_disabled(
        session, email, now if disable else None))
    if agent is None:
        raise CommandError(f"no account with the e-mail address {email}")
    print(f"{'disabled' if disable else 'enabled'} {agent.email}"
          + (" and ended all its sessions" if disable else ""))
    return 0


async def _alerts_list(settings: Settings, _args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from payrescue.db.models import Alert

    rows = await _with_session(settings, lambda session: session.scalars(
        select(Alert).where(Alert.released_at.is_(None)).order_by(Alert.id)))
    rows = list(rows)
    if not rows:
        print("no alarm holds reminders")
    for alert in rows:
        held = len(alert.details.get("case_ids", []))
        raised = f"{alert.raised_at:%Y-%m-%d %H:%M} UTC"
        print(f"{alert.id}\t{alert.kind}\t{alert.provider}\traised {raised}\t{held} case(s) held")
    return 0


async def _alerts_release(settings: Settings, args: argparse.Namespace) -> int:
    from payrescue.billing.alerts import release_alert

    async def work(session):  # noqa: ANN001, ANN202
        return await release_alert(session, args.alert_id, "command line", Clock().now())

    try:
        released = await _with_session(settings, work)
    except LookupError:
        raise CommandError(f"no alert {args.alert_id}") from None
    cases = sum(1 for e in released.events if e.topic == "case.changed")
    print(f"released alert {args.alert_id}: {cases} case(s) get their reminders at the "
          "service's next reconcile tick")
    return 0


async def _team_group_link(settings: Settings, _args: argparse.Namespace) -> int:
    from payrescue.teamgroup import connect_code

    minutes = settings.team_code_minutes
    print(f"/connect_team {connect_code(settings, Clock().now())}")
    print(f"Send this line in the group within {minutes} minutes, as one of its "
          "administrators; it works once.")
    return 0


async def _messages_preview(_settings: Settings, args: argparse.Namespace) -> int:
    from payrescue import gallery

    found = gallery.samples(args.language)
    render = gallery.as_html if args.format == "html" else gallery.as_markdown
    sys.stdout.write(render(args.language, found))
    return 0


async def _messages_check(_settings: Settings, args: argparse.Namespace) -> int:
    import os

    folder = args.folder or os.environ.get("PAYRESCUE_TEXTS_DIR")
    if not folder:
        raise CommandError("name a folder of texts (or set PAYRESCUE_TEXTS_DIR)")
    found = await asyncio.to_thread(_check_texts, Path(folder))
    for line in found:
        print(line)
    if found:
        raise CommandError(f"{len(found)} problem(s) in {folder}")
    print(f"{folder}: all texts are fine")
    return 0


def _check_texts(folder: Path) -> list[str]:
    import os

    from payrescue import gallery

    if not folder.is_dir():
        raise CommandError(f"{folder} is not a folder")
    # render the gallery through the folder being checked, whatever the environment says
    os.environ["PAYRESCUE_TEXTS_DIR"] = str(folder.resolve())
    return gallery.check_texts(folder)


async def _members_add(settings: Settings, args: argparse.Namespace) -> int:
    from payrescue.members import add_member

    async def work(session):  # noqa: ANN001, ANN202
        return await add_member(session, email=args.email, name=args.name, now=Clock().now(),
                                language=args.language, time_zone=args.time_zone)

    try:
        member = await _with_session(settings, work)
    except CommandError as exc:
        if isinstance(exc.__cause__, IntegrityError):
            raise CommandError(f"a member with {args.email} exists already") from None
        raise
    print(f"added member {member.id}")
    return 0


async def _members_link(settings: Settings, args: argparse.Namespace) -> int:
    from payrescue.members import deep_link, find_by_email, link_token

    member = await _with_session(settings, lambda session: find_by_email(session, args.email))
    if member is None:
        raise CommandError(f"no member with the e-mail address {args.email}")
    token = link_token(settings.secret, member, Clock().now(), settings.link_token_days)
    if args.demo_mode:
        print(_demo_link(settings, token))
        return 0
    username = settings.bot_username or await _bot_username(settings)
    print(deep_link(username, token))
    return 0


def _demo_link(settings: Settings, token: str) -> str:
    """The demo has no t.me: its member chat page opens the link instead (the port as
    `payrescue demo` chooses it from the same settings)."""
    from payrescue.demo import demo_chat_link

    port = settings.demo_emulator_port or settings.port + 1
    return demo_chat_link(f"http://127.0.0.1:{port}", token)


async def _bot_username(settings: Settings) -> str:
    from bot.service import TelegramUnavailable, fetch_bot_username

    if settings.bot_token is None:
        raise CommandError("set PAYRESCUE_BOT_USERNAME or PAYRESCUE_BOT_TOKEN to build links")
    try:
        return await fetch_bot_username(settings)
    except TelegramUnavailable as exc:
        raise CommandError(f"{exc}; or set PAYRESCUE_BOT_USERNAME") from exc


async def _report(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from payrescue import report_export
    from payrescue.i18n import use_language
    from payrescue.reports import Period, PeriodError, compute

    try:
        period = Period.parse(args.since, args.until, Clock().now(), settings.zone)
    except PeriodError as exc:
        raise CommandError(str(exc)) from exc
    language = args.language or settings.default_language
    figures = await _with_session(settings, lambda session: compute(
        session, period, settings.hours, settings.default_language,
        email_enabled=settings.email_enabled))
    with use_language(language):
        if args.format == "json":
            print(json.dumps(report_export.figures_json(figures), indent=2))
        elif args.format == "csv":
            sys.stdout.flush()
            sys.stdout.buffer.write(report_export.figures_csv(figures, args.decimal_comma))
            sys.stdout.buffer.flush()
        else:
            print(report_export.render_table(figures, language), end="")
    return 0


async def _cases(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from payrescue.billing import overview

    members = await _with_session(settings, lambda session: overview.overview(
        session, args.member))
    if args.member and not members:
        raise CommandError(f"no member with the e-mail address {args.member}")
    if args.format == "json":
        print(json.dumps(members, indent=2, ensure_ascii=False))
    elif not members:
        print("No subscriptions or cases yet: none of the payment events so far named one.")
    else:
        print(overview.as_table(members), end="")
    return 0


INVITE_BATCH = 100


async def _members_invite(settings: Settings, args: argparse.Namespace) -> int:
    from payrescue.billing.importer import progress_bar
    from payrescue.db.models import Member
    from payrescue.invitations import invitable_ids, invite

    if not args.all_unlinked and not args.emails:
        raise CommandError("name members by e-mail, or use --all-unlinked")
    if not settings.email_enabled:
        raise CommandError("e-mail is off: set PAYRESCUE_SMTP_HOST and PAYRESCUE_SMTP_FROM")
    await _ensure_database(settings)
    engine = create_engine(settings.effective_database_url)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session:
            ids = await invitable_ids(session, Clock().now(),
                                      None if args.all_unlinked else args.emails)
        if args.dry_run:
            print(f"{len(ids)} members would be invited")
            return 0
        show = progress_bar(sys.stderr, "inviting")
        queued = 0
        for start in range(0, len(ids), INVITE_BATCH):
            async with sessionmaker() as session:  # one commit per batch: resumable
                for member_id in ids[start:start + INVITE_BATCH]:
                    member = await session.get(Member, member_id)
                    if member is not None and await invite(session, settings, member,
                                                           Clock().now()):
                        queued += 1
                await session.commit()
            show(min(start + INVITE_BATCH, len(ids)), len(ids))
    finally:
        await engine.dispose()
    print(f"{queued} invitations queued; the running service sends them")
    return 0


async def _members_import(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from payrescue.billing.importer import ImportError_, import_members, progress_bar

    await _ensure_database(settings)
    engine = create_engine(settings.effective_database_url)
    try:
        summary = await import_members(create_sessionmaker(engine), Path(args.file),
                                       Clock().now(), progress_bar(sys.stderr))
    except ImportError_ as exc:
        raise CommandError(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise CommandError(f"database error: {exc.__class__.__name__}; rows of the batch "
                           "in progress were not saved, run the import again") from exc
    finally:
        await engine.dispose()
    print(f"{summary.total} rows: {summary.created} created, {summary.updated} updated, "
          f"{summary.unchanged} unchanged, {len(summary.rejected)} rejected")
    if summary.unreachable:
        print(f"{len(summary.unreachable)} imported without a usable e-mail address (not "
              "reachable by e-mail)")
    if summary.rejected_file:
        print(f"rows to look at and their reasons: {summary.rejected_file}")
    if args.invite and (emails := _emails_in(Path(args.file))):
        await _members_invite(settings, argparse.Namespace(
            emails=emails, all_unlinked=False, dry_run=False))
    return 1 if summary.rejected or summary.unreachable else 0


def _emails_in(path: Path) -> list[str]:
    """The e-mail column of an import file (rejected rows match no member: harmless)."""
    import csv

    with path.open(encoding="utf-8-sig", newline="") as handle:
        return [row["email"] for row in csv.DictReader(handle) if row.get("email")]


async def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from payrescue.billing import simulate
    from payrescue.demo_page import account_url
    from payrescue.members import find_by_email

    if args.demo_mode:
        from payrescue.demo import demo_signing

        if args.provider not in (None, "generic"):
            # the demo has no Stripe or MemberPress secret, and no Stripe to make a portal
            raise CommandError(
                f"the demo takes payment events through the generic API only, not as "
                f"{args.provider}: leave out --provider. To try {args.provider} webhooks, "
                f"configure its secret as docs/billing.md shows and drop --demo")
        settings = demo_signing(settings, settings.data_dir)
    url = args.url or f"http://{settings.host}:{settings.port}"

    async def fire(session: AsyncSession) -> list[tuple[str, int, str]]:
        member = await find_by_email(session, args.member) if args.demo_mode else None
        return await simulate.trigger(
            session, settings, action=args.action, email=args.member, base_url=url,
            now=Clock().now(), reason=args.reason, provider=args.provider,
            amount_minor=args.amount, currency=args.currency.upper(),
            event_type=args.event_type,
            # in the demo, the update link leads to its stand-in account page, as from /demo
            update_url=account_url(url, member.id) if member is not None else None)

    try:
        results = await _with_session(settings, fire)
    except simulate.SimulationError as exc:
        raise CommandError(str(exc)) from exc
    for name, status, text in results:
        print(f"{name}: HTTP {status} {text}")
    return 0 if all(status == 200 for _, status, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
