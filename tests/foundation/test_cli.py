"""The `payrescue` command as an operator uses it (in-process, real database)."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

from payrescue.cli import build_parser, main

SECRET = "s" * 40


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import os

    for name in list(os.environ):
        if name.startswith("PAYRESCUE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PAYRESCUE_SECRET_KEY", SECRET)
    monkeypatch.setenv("PAYRESCUE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAYRESCUE_BOT_USERNAME", "payrescue_test_bot")
    return tmp_path


def _subcommand_paths(parser, prefix=()):  # noqa: ANN001, ANN202
    for action in parser._actions:  # argparse keeps sub-parsers here
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            for name, sub in choices.items():
                yield (*prefix, name)
                yield from _subcommand_paths(sub, (*prefix, name))


@pytest.mark.parametrize("path", [(), *list(_subcommand_paths(build_parser()))], ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    assert "usage: payrescue" in capsys.readouterr().out


def test_run_refuses_an_unmigrated_database(env: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run"]) == 1
    assert "run `payrescue db upgrade` first" in capsys.readouterr().err


def test_add_agent_reads_the_password_not_from_arguments(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert main(["db", "upgrade"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert main(["agents", "add", "Lena@Example.org", "--name", "Lena", "--role", "admin"]) == 0
    assert "created admin lena@example.org" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("another long password\n"))
    assert main(["agents", "add", "lena@example.org", "--name", "Lena"]) == 1
    assert "exists already" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["agents", "add", "max@example.org", "--name", "Max"]) == 1
    assert "at least 10 characters" in capsys.readouterr().err


def test_members_link_prints_a_telegram_deep_link(
    env: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["db", "upgrade"]) == 0
    assert main(["members", "add", "anna@example.org", "--name", "Anna Schmidt",
                 "--language", "de"]) == 0
    capsys.readouterr()
    assert main(["members", "link", "anna@example.org"]) == 0
    link = capsys.readouterr().out.strip()
    assert re.fullmatch(r"https://t\.me/payrescue_test_bot\?start=[A-Za-z0-9_-]{1,64}", link)
    assert main(["members", "link", "nobody@example.org"]) == 1
    assert "no member with the e-mail address" in capsys.readouterr().err


def test_agents_disable_and_enable(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert main(["db", "upgrade"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert main(["agents", "add", "lena@example.org", "--name", "Lena"]) == 0
    capsys.readouterr()
    assert main(["agents", "disable", "Lena@Example.org"]) == 0
    assert "disabled lena@example.org and ended all its sessions" in capsys.readouterr().out
    assert main(["agents", "enable", "lena@example.org"]) == 0
    assert "enabled lena@example.org" in capsys.readouterr().out
    assert main(["agents", "disable", "nobody@example.org"]) == 1
    assert "no account with the e-mail address" in capsys.readouterr().err


def test_alerts_list_and_release_let_held_reminders_go(
    env: Path, capsys: pytest.CaptureFixture
) -> None:
    import asyncio
    from datetime import UTC, datetime

    from payrescue.db import create_engine, create_sessionmaker
    from payrescue.db.models import Alert, Member, RecoveryCase

    assert main(["db", "upgrade"]) == 0
    now = datetime(2026, 1, 5, tzinfo=UTC)

    async def seed() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{env}/payrescue.sqlite3")
        async with create_sessionmaker(engine)() as db, db.begin():
            member = Member(email="held@example.org", name="Held", created_at=now)
            db.add(member)
            await db.flush()
            case = RecoveryCase(member_id=member.id, provider="stripe", invoice_ref="in_1",
                                amount_minor=2900, currency="EUR", held=True, opened_at=now,
                                last_failure_at=now, updated_at=now)
            db.add(case)
            await db.flush()
            db.add(Alert(kind="gateway_fault", provider="stripe", raised_at=now,
                         details={"count": 5, "case_ids": [case.id]}))
        await engine.dispose()

    asyncio.run(seed())
    capsys.readouterr()
    assert main(["alerts", "list"]) == 0
    assert re.search(r"^1\tgateway_fault\tstripe\t.*1 case\(s\) held$", capsys.readouterr().out,
                     re.MULTILINE)
    assert main(["alerts", "release", "1"]) == 0
    assert "released alert 1: 1 case(s)" in capsys.readouterr().out
    assert main(["alerts", "list"]) == 0
    assert "no alarm holds reminders" in capsys.readouterr().out
    assert main(["alerts", "release", "7"]) == 1
    assert "no alert 7" in capsys.readouterr().err


def test_an_empty_bot_token_means_no_bot_and_a_malformed_one_is_named(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from payrescue.config import ConfigError, load_settings

    monkeypatch.setenv("PAYRESCUE_BOT_TOKEN", "")
    assert load_settings().bot_token is None
    monkeypatch.setenv("PAYRESCUE_BOT_TOKEN", "not a token")
    with pytest.raises(ConfigError, match="^PAYRESCUE_BOT_TOKEN: expected the token"):
        load_settings()
