"""Where messages go: a real SMTP server, or the console for the demo."""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
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
        email.set_content(message.body)
        for attachment in message.attachments:
            maintype, subtype = attachment.mime_type.split("/", 1)
            email.add_attachment(attachment.content, maintype=maintype, subtype=subtype,
                                 filename=attachment.filename)
        # After the attachments: turning the message multipart moves Content-* headers inward.
        email["Content-Language"] = message.language
        s = self.settings
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password or "")
            smtp.send_message(email)


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
