"""A real SMTP server (aiosmtpd) on localhost that keeps what it receives."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from app.notify.dispatch import wait_all_idle
from tests.support.pg import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes = b""  # the message as it came over the wire (headers exactly as written)

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""

    def link(self) -> str:
        found = re.search(r"https?://\S+/p/login/\S+", self.body)
        assert found, f"no magic link in: {self.body!r}"
        return found.group(0)


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Options a test sets (see SMTPServer.refuse / limit_messages_per_connection); by default
    # every recipient and message is accepted.
    refused_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply at RCPT
    refused_data: dict[str, str] = field(default_factory=dict)  # address -> reply at DATA
    messages_per_connection: int | None = None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        if (self.messages_per_connection is not None
                and getattr(session, "wellpanel_messages", 0) >= self.messages_per_connection):
            return "421 4.7.0 Too many messages on this connection, try again"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self.lock:
            reply = self.refused_rcpt.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        with self.lock:
            replies = [self.refused_data[a.lower()] for a in envelope.rcpt_tos
                       if a.lower() in self.refused_data]
        if replies:
            return replies[0]
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message,
                                          envelope.original_content or envelope.content))
        session.wellpanel_messages = getattr(session, "wellpanel_messages", 0) + 1
        return "250 OK"


class _CountingController(Controller):
    """Counts the connections the server accepted (one SMTP session object per connection)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.connections = 0
        self._count_lock = threading.Lock()

    def factory(self):  # type: ignore[no-untyped-def]
        with self._count_lock:
            self.connections += 1
        return super().factory()


class SMTPServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.handler = _Handler()
        self.controller = _CountingController(self.handler, hostname="127.0.0.1",
                                              port=self.port)

    def start(self) -> SMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def connections(self) -> int:
        """How many SMTP connections were opened to this server so far."""
        wait_all_idle()
        return self.controller.connections

    def refuse(self, address: str, reply: str = "550 5.1.1 User unknown", *,
               at: str = "RCPT") -> None:
        """Answer `reply` (e.g. a 550 or a 450) for mail to `address`, at RCPT or DATA, until
        `accept_everyone` (tests that use it call that when they end)."""
        target = self.handler.refused_rcpt if at == "RCPT" else self.handler.refused_data
        with self.handler.lock:
            target[address.lower()] = reply

    def limit_messages_per_connection(self, limit: int | None) -> None:
        """Answer 421 (closing) to MAIL after `limit` messages on one connection, as servers
        with a per-connection cap do; None: no limit (the default)."""
        self.handler.messages_per_connection = limit

    def accept_everyone(self) -> None:
        """Back to the default: every recipient and message accepted, no per-connection cap."""
        with self.handler.lock:
            self.handler.refused_rcpt.clear()
            self.handler.refused_data.clear()
        self.handler.messages_per_connection = None

    @property
    def received(self) -> list[Received]:
        # The apps of this process send from their deliverer threads (app/notify/dispatch.py):
        # what they were asked to send is in (or not) once they are idle.
        wait_all_idle()
        with self.handler.lock:
            return list(self.handler.received)

    def to(self, address: str) -> list[Received]:
        return [m for m in self.received if address in m.rcpt_tos]

    def wait_for(self, address: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Messages to `address` once at least `count` have arrived (the server sends async)."""
        deadline = time.monotonic() + timeout
        while len(self.to(address)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} message(s) to {address}")
            time.sleep(0.05)
        return self.to(address)

    def clear(self) -> None:
        with self.handler.lock:
            self.handler.received.clear()
