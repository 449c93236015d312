"""The SMTP client over STARTTLS and implicit TLS with a log-in, against aiosmtpd serving a
certificate from a private CA (`PAYRESCUE_SMTP_CA_FILE`); an untrusted certificate is a
temporary failure, never a plain-text fallback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine

from payrescue.clock import FakeClock
from tests.conversations.helpers import open_case, wait_for_rows
from tests.harness import BOT_USERNAME, running_service
from tests.mail.smtp import Mailbox


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


async def test_an_untrusted_certificate_is_a_temporary_failure(
    engine: AsyncEngine, clock: FakeClock, tmp_path: Path,
    tls_mailbox: tuple[Mailbox, str, Path]
) -> None:
    box, security, _ca = tls_mailbox
    settings = {"smtp_host": "127.0.0.1", "smtp_port": box.port, "smtp_security": security,
                "smtp_username": "club", "smtp_password": "s3cret",
                "smtp_from": "club@example.org", "smtp_timeout_seconds": 5}
    async with running_service(engine=engine, clock=clock, data_dir=tmp_path,
                               bot_username=BOT_USERNAME, **settings) as svc:
        member = await svc.add_member(name="Mia Muster", language="de")
        await open_case(svc, member)
        [row] = await wait_for_rows(svc, 1, channel="email", status="queued", attempts=1)
        assert row.error is not None and row.error.startswith("temporary")
        assert box.messages == []
