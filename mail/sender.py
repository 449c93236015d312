"""Drains the outbox's e-mail rows into an SMTP server (aiosmtplib).

The claim, lease, per-member order and re-queue rules are `payrescue.outbox`'s, the same as
for Telegram: rows are claimed for this run's worker name ("sending"), a lease renewer keeps
the held rows alive, and a run that dies (kill -9) leaves them to be queued again when their
lease runs out, so a crash loses no e-mail and re-sends at most those in flight (with the
same Message-ID, so mail clients show one).

The message itself was made when the row was queued (`payrescue.email_message`, stored in
`outbox.email_raw`): the sender re-checks a dunning row against its case (as the notifier
does), puts the `Date` before the stored bytes and sends them, on one SMTP connection kept
open from message to message, and records delivered rows a batch at a time.

The server refusing PayRescue's own settings (a log-in refused with 535, a TLS handshake
that fails, STARTTLS or AUTH not offered) is nobody's message's fault: the claimed rows go
back to the queue untried, the log says so once, an alarm (`Alert`, kind
"smtp_configuration") shows on admins' console pages, and the sender tries again after a
pause that doubles while it lasts; the first message that goes out ends the alarm.

Outcomes: a temporary failure (4xx, connection lost, time-out) queues the row again after a
pause that doubles with each attempt; a permanent 5xx refusal of the recipient marks the
member's address as rejected (`Member.email_problem`, shown in the console) and cancels the
e-mails that wait for them (an address that is no address at all was marked "invalid" when
queued). Logs name outbox and member ids only, never an address, subject or text.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import parseaddr

import aiosmtplib
from aiohttp import web
from aiolimiter import AsyncLimiter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue import dunning, email_message, outbox
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db.models import Alert, Member, Message, Outbox
from payrescue.email_message import date_header
from payrescue.events import Bus, Event
from payrescue.keys import BUS, CLOCK, SESSIONMAKER, SETTINGS
from payrescue.outage import DATABASE, OutageLog, keep_running

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8  # claims of one row before it is given up as failed
RETRY_FIRST_SECONDS, RETRY_LONGEST_SECONDS = 60, 3600  # pauses after a temporary failure
CLAIM_BATCH = 50
# delivered rows are recorded ("sent") a batch per transaction, at most this many and this
# late: a kill -9 before that re-sends them (same Message-ID), never loses them
RECORD_BATCH, RECORD_SECONDS = 50, 1.0
REJECTED = outbox.REJECTED


class TemporaryFailure(Exception):
    """Try again later: a 4xx answer, a lost connection or a time-out."""


class RecipientRejected(Exception):
    """The server refused the address for good (5xx on RCPT)."""


class MessageRejected(Exception):
    """The server refused this message for good (5xx, not about the address)."""


LOGIN, TLS = "login", "tls"  # what of the operator's settings the server refuses
LOGIN_CODES = {530, 534, 535, 538}  # authentication required / too weak / refused / needs TLS


class ConfigurationProblem(Exception):
    """The server refuses PayRescue's own settings (the log-in, TLS), whatever the message:
    the operator's to fix. No row is at fault: they all wait."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem, self.detail = problem, detail


SMTP_ALARM = "smtp_configuration"  # Alert.kind: the console shows it until a message goes out


async def active_alarm(session: AsyncSession) -> Alert | None:
    return await session.scalar(select(Alert).where(
        Alert.kind == SMTP_ALARM, Alert.released_at.is_(None)).order_by(Alert.id).limit(1))


class SmtpTransport:
    """One SMTP connection, opened when needed and kept for the next message."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: aiosmtplib.SMTP | None = None

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self.settings
        context = None
        if s.smtp_ca_file is not None:  # the system's CAs, and this one too
            context = ssl.create_default_context()
            context.load_verify_locations(cafile=str(s.smtp_ca_file))
        return aiosmtplib.SMTP(
            tls_context=context,
            hostname=s.smtp_host, port=s.smtp_port,
            use_tls=s.smtp_security == "tls",
            start_tls=s.smtp_security == "starttls",
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            timeout=s.smtp_timeout_seconds,
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        """Connect, STARTTLS and log in. A network failure or a 4xx is temporary; a refused
        log-in, a TLS handshake that fails (an untrusted certificate, TLS on a plain port)
        or a server without the STARTTLS or AUTH we are set to use is a configuration
        problem — never a fall-back to plain text or to no log-in."""
        client = self._new_client()
        try:
            await client.connect()
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            if exc.code < 500:
                raise TemporaryFailure(str(exc.code)) from None
            raise ConfigurationProblem(LOGIN, str(exc.code)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
                raise ConfigurationProblem(TLS, type(exc.__cause__ or exc).__name__) from None
            if isinstance(exc, aiosmtplib.SMTPNotSupported) or type(exc) is \
                    aiosmtplib.SMTPException:  # no STARTTLS, no AUTH (method) on offer
                problem = TLS if "STARTTLS" in str(exc) else LOGIN
                raise ConfigurationProblem(problem, "not offered by the server") from None
            raise TemporaryFailure(type(exc).__name__) from None
        return client

    async def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Send one message (its bytes as they go over the wire, CRLF lines)."""
        if self._client is None or not self._client.is_connected:
            self._client = await self._connect()
        options = [] if recipient.isascii() else ["SMTPUTF8"]
        try:
            await self._client.sendmail(sender, [recipient], message, mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self._reset()
            if all(r.code >= 500 for r in exc.recipients):
                raise RecipientRejected(str(exc.recipients[0].code)) from None
            raise TemporaryFailure(str(exc.recipients[0].code)) from None
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            if exc.code in LOGIN_CODES:  # e.g. 530 on MAIL FROM: a log-in is needed
                raise ConfigurationProblem(LOGIN, str(exc.code)) from None
            if exc.code >= 500 and not isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                raise MessageRejected(str(exc.code)) from None
            raise TemporaryFailure(str(exc.code)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._close()
            raise TemporaryFailure(exc.__class__.__name__) from None

    async def _reset(self) -> None:
        """After a refusal the connection is still good: RSET, or open a new one next."""
        try:
            if self._client is not None and self._client.is_connected:
                await self._client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self._close()

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()

    async def close(self) -> None:
        await self._close()


class MailSender:
    def __init__(self, transport: SmtpTransport, sessionmaker: async_sessionmaker[AsyncSession],
                 bus: Bus, clock: Clock, settings: Settings) -> None:
        self.transport = transport
        self.sessionmaker = sessionmaker
        self.bus = bus
        self.clock = clock
        self.settings = settings
        self.worker = ""
        self._held: set[int] = set()
        self._sent: list[Outbox] = []  # delivered, not recorded yet
        self._sent_since = 0.0  # when the first of them went (the event loop's time)
        self._ended_runs: list[str] = []
        self._limiter = AsyncLimiter(1, 1 / settings.smtp_rate_per_second)
        self._from = parseaddr(settings.smtp_from or "")[1]  # the envelope's sender
        # the server refusing our settings (log-in, TLS): said once, an alarm meanwhile
        self._refusals = OutageLog(
            log, down="e-mails cannot be sent: the mail server refuses PayRescue's "
                      "settings (log-in or TLS, see `problem`); they wait until it is fixed",
            back="e-mails go out again after %d refused tries")
        self._alarm_checked = False  # whether an alarm from an earlier run was looked for
        self._pause = 0.0
        self._wake = asyncio.Event()
        self.sent = 0
        self.outage = OutageLog(log, down="the mail sender stopped; restarting",
                                back="the mail sender works again after %d failed runs",
                                group=DATABASE)

    async def run(self) -> None:
        """Send until cancelled (see the module doc for what a crash leaves behind)."""
        self.worker = f"mailer-{uuid.uuid4().hex[:12]}"
        self._held = set()
        async with self.bus.subscribe() as events:
            tasks = [asyncio.create_task(self._watch(events)),
                     asyncio.create_task(self._renew_leases())]
            try:
                async with self.sessionmaker() as session:
                    await outbox.release_worker(session, self._ended_runs)
                self._ended_runs.clear()
                await self._release_leases()
                self.outage.succeeded()
                while True:
                    if not await self._claim_and_send():
                        await self._idle()
            finally:
                # a stop (not a kill) records what went out, so it is not sent again
                await asyncio.shield(self._record_on_stop())
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._ended_runs.append(self.worker)
                await self.transport.close()

    async def _record_on_stop(self) -> None:
        try:
            await self._record_sent()
        except Exception as exc:  # the database is away: those rows will be sent again
            log.warning("sent e-mails not recorded", extra={"error": type(exc).__name__})

    async def _watch(self, events: asyncio.Queue[Event]) -> None:
        while True:
            if (await events.get()).topic == "outbox.queued":
                self._wake.set()

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.outbox_lease_seconds / 3)
            try:
                async with self.sessionmaker() as session:
                    await outbox.renew_leases(session, self.worker, set(self._held),
                                              self.clock.now())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away: the next renewal tries again
                log.warning("could not renew e-mail leases",
                            extra={"error": exc.__class__.__name__})

    async def _release_leases(self) -> None:
        lease = timedelta(seconds=self.settings.outbox_lease_seconds)
        async with self.sessionmaker() as session:
            released = await outbox.release_expired_leases(session, self.clock.now(), lease,
                                                           caller=self.worker)
        if released:
            log.warning("re-queued e-mails left in sending", extra={"rows": released})

    async def _claim_and_send(self) -> bool:
        self._wake.clear()
        async with self.sessionmaker() as session:
            rows = await outbox.claim(session, self.worker, self.clock.now(), CLAIM_BATCH,
                                      channel=outbox.EMAIL)
            if not rows:
                return False
            self._held.update(row.id for row in rows)
            messages = dict((await session.execute(
                select(Outbox.id, Outbox.email_raw)
                .where(Outbox.id.in_([row.id for row in rows])))).all())
            await self._build_missing(session, rows, messages)
            wanted = [row for row in rows if await self._still_wanted(session, row)]
        for index, row in enumerate(wanted):
            try:
                await self._deliver(row, messages.get(row.id))
            except ConfigurationProblem as exc:
                await self._record_sent()
                await self._refused(exc, wanted[index:])
                return True
        await self._record_sent()
        return True

    async def _build_missing(self, session: AsyncSession, rows: list[Outbox],
                             messages: dict[int, bytes | None]) -> None:
        """Rows queued before messages were stored with their row (migration 0011) are built
        now, as they were then, instead of failing after an upgrade."""
        for row in rows:
            if messages.get(row.id) is not None or row.member_id is None:
                continue
            member = await session.get(Member, row.member_id)
            if member is None or not member.email:
                continue
            try:
                messages[row.id] = email_message.render(row, member, self.settings,
                                                        self.clock.now())
            except email_message.BadAddress:
                continue  # _deliver fails it as having no message
            row.payload = {**row.payload, "to": email_message.recipient(member).addr_spec}

    async def _still_wanted(self, session: AsyncSession, row: Outbox) -> bool:
        """A dunning e-mail is re-checked against its case just before it goes, as on
        Telegram: a late payment event may have changed the past since it was queued."""
        if row.case_id is None or await dunning.still_wanted(session, row):
            return True
        await outbox.cancel_claimed(session, row.id, "no longer wanted by its case")
        await session.commit()
        self._held.discard(row.id)
        log.info("dunning e-mail withdrawn before sending",
                 extra={"outbox_id": row.id, "case_id": row.case_id})
        await self._published(row, outbox.CANCELLED)
        return False

    async def _idle(self) -> None:
        await outbox.wait_for_work(self.sessionmaker, self.clock, outbox.EMAIL, self._wake)
        await self._release_leases()

    async def _deliver(self, row: Outbox, message: bytes | None) -> None:
        recipient = row.payload.get("to")
        if message is None or not recipient:  # queued without its message: nothing to send
            async with self.sessionmaker() as session:
                await self._finish(session, row, outbox.FAILED, "no message stored")
            return
        await self._limiter.acquire()
        try:
            await self.transport.send(self._from, recipient,
                                      date_header(self.clock.now()) + message)
        except RecipientRejected as exc:
            async with self.sessionmaker() as session:
                await self._address_problem(session, row, REJECTED, str(exc))
            return
        except MessageRejected as exc:
            async with self.sessionmaker() as session:
                await self._finish(session, row, outbox.FAILED, f"refused by the server: {exc}")
            return
        except TemporaryFailure as exc:
            await self._retry_later(row, str(exc))
            return
        if self._refusals.failures or not self._alarm_checked:
            await self._works_again()
        if not self._sent:
            self._sent_since = asyncio.get_running_loop().time()
        self._sent.append(row)
        self.sent += 1
        if (len(self._sent) >= RECORD_BATCH
                or asyncio.get_running_loop().time() - self._sent_since >= RECORD_SECONDS):
            await self._record_sent()

    async def _record_sent(self) -> None:
        """Mark delivered rows "sent", a batch in one statement and transaction (a commit per
        e-mail would cost more than the e-mail). A kill before this leaves them in
        "sending": they are sent again, with the same Message-ID — never lost."""
        batch, self._sent = self._sent, []
        if not batch:
            return
        async with self.sessionmaker() as session:
            await outbox.mark_email_sent(session, [row.id for row in batch], self.clock.now())
            await session.commit()
            # agents' answers: their transcript lines show "delivered"
            result = await session.execute(
                select(Message.outbox_id, Message.id)
                .where(Message.outbox_id.in_([row.id for row in batch])))
            lines = {outbox_id: line_id for outbox_id, line_id in result}
        for row in batch:
            self._held.discard(row.id)
            await self._published(row, outbox.SENT, lines.get(row.id))

    async def _finish(self, session: AsyncSession, row: Outbox, status: str, error: str) -> None:
        log.error("e-mail row failed", extra={"outbox_id": row.id, "error": error})
        await outbox.mark_failed(session, row.id, error)
        await session.commit()
        self._held.discard(row.id)
        await self._published(row, status)

    async def _address_problem(self, session: AsyncSession, row: Outbox, problem: str,
                               code: str = "") -> None:
        await outbox.mark_failed(session, row.id, f"address {problem} {code}".strip())
        cancelled = await outbox.cancel_for_rejected_address(session, row.member_id or 0,
                                                             problem, self.worker)
        await session.commit()
        self._held.discard(row.id)
        log.warning("member's e-mail address is undeliverable",
                    extra={"member_id": row.member_id, "problem": problem,
                           "cancelled": cancelled})
        await self._published(row, outbox.FAILED)
        await self.bus.publish(Event("member.email_undeliverable",
                                     {"member_id": row.member_id}))

    async def _refused(self, exc: ConfigurationProblem, rows: list[Outbox]) -> None:
        """The server refuses our settings: the rows go back to the queue untried (no row
        is at fault, none is failed or marked), the owner hears of it once (the log and
        an alarm on the console), and the sender tries again after a pause that doubles
        while the refusal lasts."""
        async with self.sessionmaker() as session:
            await outbox.give_back(session, [row.id for row in rows])
            alarm = await active_alarm(session)
            if alarm is None:
                alarm = Alert(kind=SMTP_ALARM, provider="smtp", raised_at=self.clock.now(),
                              details={"problem": exc.problem, "code": exc.detail})
                session.add(alarm)
            await session.commit()
            raised = self._refusals.failures == 0
        self._held.difference_update(row.id for row in rows)
        self._alarm_checked = True
        self._refusals.failed(exc, problem=exc.problem, code=exc.detail, rows=len(rows))
        if raised:
            await self.bus.publish(Event("alert.raised", {"alert_id": alarm.id}))
        self._pause = min(max(self._pause * 2, RETRY_FIRST_SECONDS), RETRY_LONGEST_SECONDS)
        await self.clock.sleep(self._pause)

    async def _works_again(self) -> None:
        """A message went out: an alarm about our settings (raised by this or an earlier
        run) is over."""
        async with self.sessionmaker() as session:
            alarm = await active_alarm(session)
            if alarm is not None:
                alarm.released_at, alarm.released_by = self.clock.now(), "mail sender"
                await session.commit()
        self._alarm_checked, self._pause = True, 0.0
        self._refusals.succeeded()
        if alarm is not None:
            await self.bus.publish(Event("alert.released", {"alert_id": alarm.id}))

    async def _retry_later(self, row: Outbox, error: str) -> None:
        async with self.sessionmaker() as session:
            if row.attempts >= MAX_ATTEMPTS:
                await self._finish(session, row, outbox.FAILED,
                                   f"gave up after {row.attempts} attempts: {error}")
                return
            delay = min(RETRY_FIRST_SECONDS * 2 ** (row.attempts - 1), RETRY_LONGEST_SECONDS)
            log.warning("e-mail retried later", extra={"outbox_id": row.id, "error": error,
                                                       "seconds": delay})
            await outbox.requeue(session, row.id, self.clock.now() + timedelta(seconds=delay),
                                 f"temporary: {error}")
            await session.commit()
        self._held.discard(row.id)
        await self._published(row, outbox.QUEUED)

    async def _published(self, row: Outbox, status: str, line_id: int | None = None) -> None:
        data: dict[str, object] = {"outbox_id": row.id, "status": status}
        if line_id is not None:
            data["message_id"] = line_id
        await self.bus.publish(Event("outbox.updated", data))


MAIL_SENDER = web.AppKey("mail_sender", MailSender)


def setup_mail_sender(app: web.Application) -> None:
    """Drain e-mail rows when SMTP is configured; without it the channel is off."""
    app.cleanup_ctx.append(_mail_sender)


async def _mail_sender(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.email_enabled:
        yield
        return
    sender = MailSender(SmtpTransport(settings), app[SESSIONMAKER], app[BUS], app[CLOCK],
                        settings)
    app[MAIL_SENDER] = sender
    task = asyncio.create_task(keep_running(sender), name="mail-sender")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
