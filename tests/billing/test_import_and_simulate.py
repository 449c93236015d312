"""CSV import (re-import updates, rejected rows with reasons) and `payrescue simulate`."""

from __future__ import annotations

import asyncio
import csv
import io

from sqlalchemy import func, insert, select

from payrescue.billing import simulate
from payrescue.billing.importer import import_members, progress_bar
from payrescue.db.models import Member, RecoveryCase

CSV = """email;name;language;time_zone;stripe_customer_id;external_id
anna@example.org;Anna Schmidt;de;Europe/Berlin;cus_A;crm-1
BEN@example.org;Ben;en-GB;;;crm-2
not-an-address;Nobody;de;;;
carla@example.org;Carla;fr;;;
dora@example.org;Dora;de;Mars/Olympus;;
erik@example.org;Erik;;;cus_A;
"""


async def test_import_reports_rejects_and_reimport_updates(sessionmaker, session, clock,
                                                           tmp_path):
    source = tmp_path / "members.csv"
    source.write_text(CSV, encoding="utf-8")
    shown = io.StringIO()

    first = await import_members(sessionmaker, source, clock.now(), progress_bar(shown))

    assert (first.total, first.created, first.updated) == (6, 3, 0)
    assert "6/6 (100%)" in shown.getvalue()
    with first.rejected_file.open(encoding="utf-8") as rejected:
        reasons = {row["email"]: row["reason"] for row in csv.DictReader(rejected)}
    assert reasons == {
        # kept (the failed payments of this member still count), reached on Telegram only
        "not-an-address": "email: not an e-mail address; the member is kept, not reachable "
                          "by e-mail",
        "carla@example.org": "language: 'fr' is not de or en",
        "dora@example.org": "time_zone: 'Mars/Olympus' is not an IANA zone such as "
                            "Europe/Berlin",
        "erik@example.org": "stripe_customer_id: cus_A belongs to another member",
    }
    ben = await session.scalar(select(Member).where(Member.email == "ben@example.org"))
    assert (ben.language, ben.external_id, ben.email_problem) == ("en", "crm-2", None)
    nobody = await session.scalar(select(Member).where(Member.email == "not-an-address"))
    assert (nobody.name, nobody.email_problem) == ("Nobody", "invalid")
    assert [row["email"] for row, _reason in first.unreachable] == ["not-an-address"]

    source.write_text(CSV.replace("Anna Schmidt", "Anna Weber"), encoding="utf-8")
    second = await import_members(sessionmaker, source, clock.now())
    assert (second.created, second.updated, second.unchanged) == (0, 1, 2)
    assert await session.scalar(select(func.count()).select_from(Member)) == 3
    anna = await session.scalar(select(Member).where(Member.email == "anna@example.org"))
    await session.refresh(anna)
    assert anna.name == "Anna Weber" and anna.stripe_customer_id == "cus_A"


async def test_simulate_sends_signed_events_through_the_real_path(
        client, session, clock, billing_settings):
    base = str(client.make_url("/")).rstrip("/")
    for provider in simulate.PROVIDERS:
        email = f"{provider}@example.org"
        target = await simulate.find_target(session, provider, "failed-payment", email,
                                            2900, "EUR")
        events = simulate.build_events(provider, "failed-payment", target, "expired_card",
                                       clock.now())
        results = await simulate.send(base, provider, events, billing_settings)
        assert [status for _name, status, _ in results] == [200] * len(events), results
        await session.commit()  # see what the service wrote

        target = await simulate.find_target(session, provider, "recovered", email, 2900, "EUR")
        events = simulate.build_events(provider, "recovered", target, "", clock.now())
        assert [s for _name, s, _ in await simulate.send(base, provider, events,
                                                  billing_settings)] == [200]
        await session.commit()

    results = await simulate.trigger(session, billing_settings, action="failed-payment",
                                     email="demo@example.org", base_url=base, now=clock.now(),
                                     reason="lost_card", provider="generic")
    assert [status for _name, status, _ in results] == [200]
    await session.commit()
    found = list(await session.scalars(select(RecoveryCase).order_by(RecoveryCase.id)))[:3]
    assert [(c.provider, c.status) for c in found] == [
        ("stripe", "recovered"), ("memberpress", "recovered"), ("generic", "recovered")]
    assert found[0].decline_category == "expired_card"
    assert found[2].decline_category == "expired_card"


def test_cli_import_prints_a_summary_and_names_the_rejects_file(tmp_path, capsys,
                                                                 sqlite_template):
    import shutil

    from payrescue.cli import main
    from tests.conftest import TEST_SECRET

    database = tmp_path / "cli.sqlite3"
    shutil.copy(sqlite_template, database)
    config = tmp_path / "payrescue.toml"
    config.write_text(f'database_url = "sqlite+aiosqlite:///{database}"\n'
                      f'secret_key = "{TEST_SECRET}"\ndata_dir = "{tmp_path}"\n')
    source = tmp_path / "members.csv"
    source.write_text("email,name\nanna@example.org,Anna\nbroken,Nobody\n,Nameless\n",
                      encoding="utf-8")

    status = main(["--config", str(config), "members", "import", str(source)])

    out = capsys.readouterr()
    assert status == 1
    assert "3 rows: 2 created, 0 updated, 0 unchanged, 1 rejected" in out.out
    assert "1 imported without a usable e-mail address (not reachable by e-mail)" in out.out
    assert str(tmp_path / "members.rejected.csv") in out.out
    assert "3/3 (100%)" in out.err


async def test_cli_simulate_demo_signs_with_the_running_demos_key(tmp_path, sqlite_template,
                                                                  clock, bus):
    """`payrescue simulate --demo` needs no configuration: it reads the demo's key and database
    from the demo's data directory, like the demo page's buttons."""
    import shutil

    from aiohttp.test_utils import TestClient, TestServer

    from payrescue.cli import main
    from payrescue.config import load_settings
    from payrescue.db import create_engine
    from payrescue.demo import demo_signing
    from tests.billing.conftest import billing_app

    shutil.copy(sqlite_template, tmp_path / "payrescue.sqlite3")
    running_demo = demo_signing(load_settings(demo=True), tmp_path)
    engine = create_engine(running_demo.effective_database_url)
    async with engine.begin() as connection:
        anna_id = (await connection.execute(insert(Member).values(
            email="anna@example.org", name="Anna", language="de", created_at=clock.now(),
            member_since=clock.now()))).inserted_primary_key[0]
    try:
        async with TestClient(TestServer(billing_app(running_demo, engine, clock, bus))) as demo:
            base = str(demo.make_url("/")).rstrip("/")
            status = await asyncio.to_thread(main, [
                "simulate", "failed-payment", "--demo", "--data-dir", str(tmp_path), "--url",
                base, "--member", "anna@example.org", "--reason", "expired_card"])
        assert status == 0
        async with engine.connect() as connection:
            case = (await connection.execute(select(
                RecoveryCase.provider, RecoveryCase.decline_category, RecoveryCase.member_id,
                RecoveryCase.update_url))).one()
        # the member's update link leads to the demo's stand-in account page
        assert tuple(case) == ("generic", "expired_card", anna_id,
                               f"{base}/demo/account/?member={anna_id}")
    finally:
        await engine.dispose()


def test_cli_simulate_without_configuration_points_to_demo(monkeypatch, capsys):
    from payrescue.cli import main

    monkeypatch.delenv("PAYRESCUE_SECRET_KEY", raising=False)
    monkeypatch.delenv("PAYRESCUE_CONFIG", raising=False)
    status = main(["simulate", "failed-payment", "--member", "anna@example.org"])

    assert status == 2
    assert "add --demo" in capsys.readouterr().err


def test_cli_simulate_demo_says_which_providers_it_takes(capsys, tmp_path):
    from payrescue.cli import main

    status = main(["simulate", "failed-payment", "--member", "anna@example.org", "--demo",
                   "--data-dir", str(tmp_path), "--provider", "stripe"])

    assert status == 1
    error = capsys.readouterr().err
    assert "generic API only" in error and "leave out --provider" in error


async def test_cli_import_succeeds_while_the_service_writes(tmp_path, database_url, engine,
                                                            clock):
    """`payrescue members import` in its own process, while this one keeps committing writes
    to the same database as the running service does (on SQLite a transaction that read and
    then writes is refused at once when another connection committed in between)."""
    import sys

    from tests.conftest import TEST_SECRET

    source = tmp_path / "members.csv"
    source.write_text("email,name\n" + "".join(f"m{n}@example.org,Member {n}\n"
                                               for n in range(2000)), encoding="utf-8")
    writes = 0
    async with engine.begin() as connection:
        service_member = (await connection.execute(insert(Member).values(
            email="busy@example.org", name="Busy", language="de", unreachable=False,
            opted_out=False, created_at=clock.now()).returning(Member.id))).scalar_one()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "payrescue", "members", "import", str(source),
        env={"PATH": "/usr/bin:/bin", "PAYRESCUE_DATABASE_URL": database_url,
             "PAYRESCUE_SECRET_KEY": TEST_SECRET, "PAYRESCUE_DATA_DIR": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    communicate = asyncio.ensure_future(process.communicate())
    while not communicate.done():  # the service: short write transactions, back to back
        async with engine.begin() as connection:
            await connection.execute(select(Member.id).where(Member.id == service_member))
            await connection.execute(
                Member.__table__.update().where(Member.id == service_member)
                .values(name=f"Busy {writes}"))
        writes += 1
        await asyncio.sleep(0.005)
    out, err = await communicate
    assert process.returncode == 0, err.decode()
    assert "2000 rows: 2000 created" in out.decode()
    assert writes > 10  # the two really overlapped
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(Member)) == 2001
