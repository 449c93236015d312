"""The newcomer's path, as processes: `payrescue demo` where the environment or the flags
say, commands run against the demo's data with --demo, a restart that keeps the emulated
Telegram's members, and commands that say in one line what is missing."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from tests.demo_process import free_port_pair, payrescue, start_demo

SECRET = "s" * 40
ANNA = "anna.schmidt@demo.payrescue.test"
NOT_LINKED = "This chat isn't connected to a membership yet"


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the demo is SQLite by design; these tests run processes, not fixtures


def test_a_taken_port_is_named_with_the_ways_out(tmp_path: Path) -> None:
    port = free_port_pair()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        demo = start_demo(tmp_path, PAYRESCUE_PORT=str(port))
    assert demo.process.returncode == 1
    assert f"cannot listen on port {port}" in demo.text
    assert "PAYRESCUE_PORT=" in demo.text and "--port" in demo.text
    assert "Traceback" not in demo.text


def test_the_demo_on_ports_from_the_environment_and_commands_on_its_data(tmp_path: Path) -> None:
    port = free_port_pair()
    demo = start_demo(tmp_path, PAYRESCUE_PORT=str(port))
    try:
        assert demo.console == f"http://127.0.0.1:{port}/console"
        assert demo.chat_page == f"http://127.0.0.1:{port + 1}/chat"
        assert (tmp_path / "data" / "demo" / "payrescue.sqlite3").exists()

        # no secret key anywhere: --demo takes the demo's own data and key
        report = payrescue(tmp_path, "report", "--demo", "--since", "30d")
        assert report.returncode == 0, report.stderr
        assert "Recovery figures" in report.stdout

        link = payrescue(tmp_path, "members", "link", "--demo", ANNA, PAYRESCUE_PORT=str(port))
        assert link.returncode == 0, link.stderr
        assert link.stdout.startswith(f"http://127.0.0.1:{port + 1}/chat?start=")

        added = payrescue(tmp_path, "agents", "add", "--demo", "lena@example.org",
                          "--name", "Lena", stdin="a long enough password\n")
        assert added.returncode == 0, added.stderr
        member = payrescue(tmp_path, "members", "add", "--demo", "mia@example.org",
                           "--name", "Mia Muster", "--language", "de")
        assert member.returncode == 0, member.stderr
    finally:
        assert demo.stop() == 0
    # the canned answers a newcomer finds behind "/" in the console, in both languages
    with sqlite3.connect(tmp_path / "data" / "demo" / "payrescue.sqlite3") as db:
        languages = {row[0] for row in db.execute("SELECT language FROM canned_answers")}
        emails = {row[0] for row in db.execute("SELECT email FROM agents")}
    assert languages == {"de", "en"}
    assert "lena@example.org" in emails


def test_the_demo_on_ports_and_a_directory_from_its_flags(tmp_path: Path) -> None:
    port, emulator_port = free_port_pair(), free_port_pair()
    demo = start_demo(tmp_path, "--port", str(port), "--emulator-port", str(emulator_port),
                      "--data-dir", "elsewhere", PAYRESCUE_PORT="1")  # the flag wins
    try:
        assert demo.console == f"http://127.0.0.1:{port}/console"
        assert demo.chat_page == f"http://127.0.0.1:{emulator_port}/chat"
        report = payrescue(tmp_path, "report", "--demo", "--data-dir", "elsewhere")
        assert report.returncode == 0, report.stderr
    finally:
        assert demo.stop() == 0


def test_a_restarted_demo_keeps_its_telegram_members_and_their_links(tmp_path: Path) -> None:
    port = free_port_pair()
    demo = start_demo(tmp_path, PAYRESCUE_PORT=str(port))
    try:
        anna_link = demo.links["Anna Schmidt"]
        anna = int(anna_link.split("user=")[1].split("&")[0])
        token = anna_link.split("start=")[1]
        demo.control(f"/users/{anna}/start", {"payload": token})
        assert "Anna" in demo.wait_for_bot(anna, 1)[0]["plain_text"]
        mia = demo.control("/users", {"first_name": "Mia", "language_code": "en"})["id"]
    finally:
        assert demo.stop() == 0

    demo = start_demo(tmp_path, PAYRESCUE_PORT=str(port))
    try:
        users = {u["id"]: u["first_name"] for u in demo.control("/users")["users"]}
        assert users[anna] == "Anna" and users[mia] == "Mia"
        assert f"user={anna}&" in demo.links["Anna Schmidt"]
        assert demo.control(f"/chats/{anna}/messages")["messages"], "Anna's chat is kept"
        newcomer = demo.control("/users", {"first_name": "Noah", "language_code": "en"})["id"]
        assert newcomer not in users
        # the newcomer is nobody's member; Anna is still hers
        demo.control(f"/users/{newcomer}/messages", {"text": "/status"})
        assert NOT_LINKED in demo.wait_for_bot(newcomer, 1)[0]["plain_text"]
        demo.control(f"/users/{anna}/messages", {"text": "/status"})
        before = len(demo.control(f"/chats/{anna}/messages?who=bot")["messages"])
        assert NOT_LINKED not in demo.wait_for_bot(anna, before + 1)[-1]["plain_text"]
    finally:
        assert demo.stop() == 0


def test_without_the_emulators_file_the_demo_forgets_the_links_it_cannot_vouch_for(
    tmp_path: Path,
) -> None:
    port = free_port_pair()
    demo = start_demo(tmp_path, PAYRESCUE_PORT=str(port))
    try:
        mia = demo.control("/users", {"first_name": "Mia", "language_code": "de"})["id"]
        demo.control(f"/users/{mia}/start", {"payload": demo.links["Ben Carter"].split("=")[-1]})
        demo.wait_for_bot(mia, 1)
    finally:
        assert demo.stop() == 0
    (tmp_path / "data" / "demo" / "telegram-emulator.json").unlink()

    demo = start_demo(tmp_path, PAYRESCUE_PORT=str(port))
    try:
        again = demo.control("/users", {"first_name": "Noah", "language_code": "en"})["id"]
        assert again == mia  # the id comes round again, so Ben's link must not
        demo.control(f"/users/{again}/messages", {"text": "/status"})
        assert NOT_LINKED in demo.wait_for_bot(again, 1)[0]["plain_text"]
    finally:
        assert demo.stop() == 0


@pytest.mark.parametrize("command", [
    ("report", "--since", "30d"),
    ("members", "add", "anna@example.org", "--name", "Anna"),
    ("members", "link", "anna@example.org"),
    ("agents", "add", "lena@example.org", "--name", "Lena"),
])
def test_a_command_on_no_database_says_so_and_creates_none(tmp_path: Path,
                                                           command: tuple[str, ...]) -> None:
    result = payrescue(tmp_path, *command, stdin="a long enough password\n",
                       PAYRESCUE_SECRET_KEY=SECRET, PAYRESCUE_BOT_USERNAME="some_bot")
    assert result.returncode == 1
    database = tmp_path / "data" / "payrescue.sqlite3"
    assert result.stderr.splitlines() == [
        f"payrescue: no database at {database}: run `payrescue db upgrade` first"]
    assert not database.exists()

    in_demo = payrescue(tmp_path, *command, "--demo", stdin="a long enough password\n")
    assert in_demo.returncode == 1
    assert in_demo.stderr.splitlines() == [
        f"payrescue: no demo data in {tmp_path / 'data' / 'demo'}: start the demo once with "
        "`make demo` (or name its directory with --data-dir)"]
    assert not (tmp_path / "data" / "demo" / "payrescue.sqlite3").exists()


def test_a_database_without_the_schema_is_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    sqlite3.connect(tmp_path / "data" / "payrescue.sqlite3").close()  # there, but empty
    result = payrescue(tmp_path, "report", PAYRESCUE_SECRET_KEY=SECRET)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "payrescue: the database has no PayRescue schema yet: run `payrescue db upgrade` first"]


def test_db_upgrade_needs_no_secret_key(tmp_path: Path) -> None:
    result = payrescue(tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("database at revision ")
    report = payrescue(tmp_path, "report")
    assert report.returncode == 2  # reading and signing still need it
    assert "PAYRESCUE_SECRET_KEY: required outside demo mode" in report.stderr
    assert "add --demo" in report.stderr


@pytest.mark.parametrize("value", ["", "   "])
def test_a_blank_bot_token_means_no_bot_not_a_traceback(tmp_path: Path, value: str) -> None:
    result = payrescue(tmp_path, "run", PAYRESCUE_SECRET_KEY=SECRET, PAYRESCUE_BOT_TOKEN=value)
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"payrescue: no database at {tmp_path / 'data' / 'payrescue.sqlite3'}: "
        "run `payrescue db upgrade` first"]


def test_a_malformed_bot_token_is_one_line(tmp_path: Path) -> None:
    result = payrescue(tmp_path, "run", PAYRESCUE_SECRET_KEY=SECRET,
                       PAYRESCUE_BOT_TOKEN="pasted-the-wrong-thing")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "payrescue: configuration error: PAYRESCUE_BOT_TOKEN: expected the token @BotFather "
        "gave you, such as 123456:ABC-def"]
