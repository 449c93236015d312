"""A real SMTP server in the test process (aiosmtpd), standing in for the mail provider."""

from __future__ import annotations

import asyncio
import socket
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mailbox:
    """Accepts every message (kept parsed in `messages`) unless told to refuse: `refuse[address]`
    holds the answers RCPT TO gives that address, one per try (e.g. "550 5.1.1 no such user");
    once they are used up, the address is accepted."""

    def __init__(self, **server_options: Any) -> None:
        """`server_options`: for aiosmtpd's Controller and SMTP (TLS, authentication)."""
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse: dict[str, list[str]] = {}
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                      **server_options)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: Any) -> str:
        answers = self.refuse.get(address)
        if answers:
            return answers.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def to(self, address: str) -> list[EmailMessage]:
        return [m for (_, rcpts), m in zip(self.envelopes, self.messages, strict=True)
                if address in rcpts]

    async def wait_for(self, address: str, count: int = 1,
                       timeout: float = 10) -> list[EmailMessage]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            # the server runs in its own thread and loop: polling is the simple bridge
            while len(found := self.to(address)) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        return found


def smtp_settings(mailbox: Mailbox, **more: Any) -> dict[str, Any]:
    return {"smtp_host": "127.0.0.1", "smtp_port": mailbox.port, "smtp_security": "none",
            "smtp_from": "Beispiel Club <club@example.org>",
            "smtp_reply_to": "antwort@example.org", "smtp_rate_per_second": 200, **more}
