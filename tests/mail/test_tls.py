"""The SMTP client over STARTTLS and implicit TLS with a log-in, against aiosmtpd serving a
certificate from a private CA (`PAYRESCUE_SMTP_CA_FILE`); an untrusted certificate or a
refused log-in keeps the e-mails waiting (the operator's settings, not the members'), never
a plain-text fallback."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine

from mail.sender import active_alarm
from payrescue.clock import FakeClock
from payrescue.db.models import Alert, Member
from payrescue.keys import BUS
from tests.conversations.helpers import open_case, wait_for_rows
from tests.harness import BOT_USERNAME, RunningService, eventually, running_service
from tests.mail.smtp import Mailbox
from tests.mail.test_replies import console


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "smtp.pem", directory / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"club", b"s3cret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture(params=["starttls", "tls"])
def tls_mailbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[
        tuple[Mailbox, str, Path]]:
    cert_file, key_file = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    options: dict[str, Any] = {"authenticator": _authenticate, "auth_require_tls": True}
    if request.param == "starttls":
        box = Mailbox(tls_context=context, require_starttls=True, **options)
    else:  # aiosmtpd hides AUTH on implicit TLS when told to require (STARTTLS) TLS for it
        box = Mailbox(ssl_context=context, **(options | {"auth_require_tls": False}))
    box.start()
    yield box, request.param, cert_file
    box.stop()


async def test_tls_and_log_in(engine: AsyncEngine, clock: FakeClock, tmp_path: Path,
                              tls_mailbox: tuple[Mailbox, str, Path]) -> None:
    box, security, ca = tls_mailbox
    settings = {"smtp_host": "127.0.0.1", "smtp_port": box.port, "smtp_security": security,
                "smtp_username": "club", "smtp_password": "s3cret", "smtp_ca_file": str(ca),
                "smtp_from": "club@example.org", "smtp_timeout_seconds": 5}
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               bot_username=BOT_USERNAME, **settings) as svc:
        member = await svc.add_member(name="Mia Muster", language="de")
        await open_case(svc, member)
        [message] = await box.wait_for("mia.muster@example.org")
        assert message["Subject"] == "Ihre Zahlung hat leider nicht geklappt"


async def test_an_untrusted_certificate_keeps_the_emails_waiting(
    engine: AsyncEngine, clock: FakeClock, tmp_path: Path,
    tls_mailbox: tuple[Mailbox, str, Path]
) -> None:
    """Never a plain-text fall-back: the operator's settings do not fit the server, so the
    e-mail waits (untried, not failed) and the console says what to check."""
    box, security, _ca = tls_mailbox
    settings = {"smtp_host": "127.0.0.1", "smtp_port": box.port, "smtp_security": security,
                "smtp_username": "club", "smtp_password": "s3cret",
                "smtp_from": "club@example.org", "smtp_timeout_seconds": 5}
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               bot_username=BOT_USERNAME, **settings) as svc:
        member = await svc.add_member(name="Mia Muster", language="de")
        await open_case(svc, member)
        alarm = await _alarm(svc)
        assert alarm.details["problem"] == "tls"
        [row] = await wait_for_rows(svc, 1, channel="email", status="queued")
        assert row.attempts == 0
        assert box.messages == []


async def _alarm(svc: RunningService) -> Alert:
    """The e-mail alarm, once the sender raised it."""
    async with svc.app[BUS].subscribe() as events, asyncio.timeout(10):
        while True:
            async with svc.sessionmaker() as session:
                alarm = await active_alarm(session)
            if alarm is not None:
                return alarm
            try:
                async with asyncio.timeout(0.5):
                    await events.get()
            except TimeoutError:
                continue


async def test_a_refused_log_in_keeps_the_emails_waiting_and_says_so_once(
    engine: AsyncEngine, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """535: the operator's password (or the provider's account) is wrong, not the member's
    address. The e-mails wait, untried; the log says it once, an admin sees a banner; the
    sender tries again after growing pauses and, once the log-in works, sends them."""
    accepted = {"password": b"changed-at-the-provider"}
    tries: list[dt.datetime] = []  # when the sender logged in (on the service's clock)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        if not tries or tries[-1] != clock.now():  # (one try may offer several mechanisms)
            tries.append(clock.now())
        return AuthResult(success=isinstance(auth_data, LoginPassword)
                          and auth_data.password == accepted["password"], handled=False)

    box = Mailbox(authenticator=authenticate, auth_require_tls=False)
    box.start()
    settings = {"smtp_host": "127.0.0.1", "smtp_port": box.port, "smtp_security": "none",
                "smtp_username": "club", "smtp_password": "s3cret",
                "smtp_from": "club@example.org", "smtp_timeout_seconds": 5}
    try:
        async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                                   bot_username=BOT_USERNAME, **settings) as svc:
            member = await svc.add_member(name="Mia Muster", language="de")
            await open_case(svc, member)
            alarm = await _alarm(svc)
            assert (alarm.details["problem"], alarm.details["code"]) == ("login", "535")
            [row] = await wait_for_rows(svc, 1, channel="email", status="queued")
            assert (row.attempts, row.error) == (0, None)
            async with svc.sessionmaker() as session:
                assert (await session.get(Member, member.id)).email_problem is None

            browser, _token = await console(svc, role="admin")
            async with browser, browser.get("/console/queue") as page:
                assert "PAYRESCUE_SMTP_PASSWORD" in await page.text()

            # it tries again, after growing pauses (time passes as in a real night)
            await eventually(lambda: len(tries) >= 3, "two more log-ins", clock=svc.clock,
                             tick=30)
            assert tries[1] - tries[0] >= timedelta(seconds=60)
            assert tries[2] - tries[1] >= timedelta(seconds=120)
            said = [r for r in caplog.records if r.getMessage().startswith("e-mails cannot")]
            assert len(said) == 1

            accepted["password"] = b"s3cret"  # the operator fixed it
            await eventually(lambda: box.messages, "the e-mail", clock=svc.clock, tick=30)
            [message] = await box.wait_for("mia.muster@example.org")
            assert message["Subject"] == "Ihre Zahlung hat leider nicht geklappt"
            [row] = await wait_for_rows(svc, 1, channel="email", status="sent")
            assert row.attempts == 1
            async with svc.sessionmaker() as session:
                assert await active_alarm(session) is None
    finally:
        box.stop()
