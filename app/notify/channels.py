"""Where messages go: a real SMTP server, or the console for the demo."""

from __future__ import annotations

import hashlib
import logging
import smtplib
import ssl
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Protocol

from app.config import Settings

log = logging.getLogger("wellpanel.notify")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str = "application/pdf"

    @property
    def summary(self) -> str:
        """Name and size only: what logs and the console may show of an attachment."""
        return f"{self.filename} ({len(self.content)} bytes, {self.mime_type})"


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    body: str
    language: str
    attachments: tuple[Attachment, ...] = ()
    key: str | None = None  # the outbox dedupe key: gives a resent message the same Message-ID
    html: str | None = None  # the same text as HTML: sent as multipart/alternative with `body`
    headers: tuple[tuple[str, str], ...] = ()  # extra headers (List-Unsubscribe...)


class Channel(Protocol):
    def send(self, message: Message) -> None: ...


class SMTPChannel:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, message: Message) -> None:
        email = EmailMessage()
        email["From"] = self.settings.mail_from
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = message_id(message.key, self.settings.mail_from)
        for name, value in message.headers:
            email[name] = value
        # UTF-8 always (de, pt-BR, zh-CN texts; an ASCII-only English text reads the same).
        email.set_content(message.body, charset="utf-8")
        if message.html is not None:
            email.add_alternative(message.html, subtype="html", charset="utf-8")
        for attachment in message.attachments:
            maintype, subtype = attachment.mime_type.split("/", 1)
            email.add_attachment(attachment.content, maintype=maintype, subtype=subtype,
                                 filename=attachment.filename)
        # After the attachments: turning the message multipart moves Content-* headers inward.
        email["Content-Language"] = message.language
        s = self.settings
        # The connect timeout covers the TCP connection and the server's greeting; after it,
        # every reply gets the send timeout. A server that accepts and never answers costs at
        # most these, never a stalled sender.
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_connect_timeout) as smtp:
            if smtp.sock is not None:
                smtp.sock.settimeout(s.smtp_send_timeout)
            smtp.timeout = s.smtp_send_timeout  # also for the socket STARTTLS wraps
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password or "")
            smtp.send_message(email)


def message_id(key: str | None, mail_from: str) -> str:
    """A Message-ID; the same for every attempt at one outbox message (derived from its
    dedupe key), so a message sent again after a sender died can be recognized as one."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "wellpanel.invalid"
    if key is None:
        return make_msgid(domain=domain)
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


class ConsoleChannel:
    """Prints messages (never the address) and keeps the latest for the demo mailbox page."""

    def __init__(self, keep: int = 50) -> None:
        self.recent: deque[Message] = deque(maxlen=keep)

    def send(self, message: Message) -> None:
        self.recent.append(message)
        attached = "".join(f"Attachment: {a.summary}\n" for a in message.attachments)
        print(f"\n--- message (console channel) ---\nSubject: {message.subject}\n{attached}\n"
              f"{message.body}\n---------------------------------\n", flush=True)


def make_channel(settings: Settings) -> Channel:
    return ConsoleChannel() if settings.notify_channel == "console" else SMTPChannel(settings)
