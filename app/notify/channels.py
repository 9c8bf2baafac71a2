"""Where messages go: a real SMTP server, or the console for the demo."""

from __future__ import annotations

import hashlib
import logging
import smtplib
import ssl
from collections import deque
from dataclasses import dataclass
from email import policy as email_policy
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


# Extra headers (List-Unsubscribe...) are written exactly as given: the default policy would
# turn a header line longer than 78 characters without a space in it, such as
# List-Unsubscribe's <URL>, into RFC 2047 encoded words, which mail clients do not decode there
# (the one-click address would be lost). Only headers stored raw (set_raw) are affected; the
# others (Subject...) are still folded and encoded as usual.
HEADER_POLICY = email_policy.default.clone(refold_source="none")


class Channel(Protocol):
    def send(self, message: Message) -> None: ...


class SMTPChannel:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, message: Message) -> None:
        """One message over its own connection."""
        with self.batch() as connection:
            connection.send(message)

    def batch(self) -> SMTPBatch:
        """A connection for many messages: `with channel.batch() as c: c.send(m)...`."""
        return SMTPBatch(self)

    def build(self, message: Message) -> EmailMessage:
        email = EmailMessage(policy=HEADER_POLICY)
        email["From"] = self.settings.mail_from
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = message_id(message.key, self.settings.mail_from)
        for name, value in message.headers:
            if not (name + value).isascii() or any(c in name + value for c in "\r\n"):
                raise ValueError(f"header {name!r}: one line of ASCII only")
            email.set_raw(name, value)
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
        return email

    def connect(self) -> smtplib.SMTP:
        s = self.settings
        # The connect timeout covers the TCP connection and the server's greeting; after it,
        # every reply gets the send timeout. A server that accepts and never answers costs at
        # most these, never a stalled sender.
        smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_connect_timeout)
        try:
            if smtp.sock is not None:
                smtp.sock.settimeout(s.smtp_send_timeout)
            smtp.timeout = s.smtp_send_timeout  # also for the socket STARTTLS wraps
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


class SMTPBatch:
    """One SMTP connection for a batch of messages, opened at the first message.

    A connection the server drops between messages (an idle limit, a cap on messages per
    connection: 421, or a closed socket) is opened again, once per batch; a second drop, or a
    server that does not answer in time (a timeout is never retried here: it would double the
    wait), raises to the caller. A refusal of one message (4xx/5xx on RCPT or DATA) leaves the
    connection usable for the next (smtplib resets the transaction)."""

    def __init__(self, channel: SMTPChannel) -> None:
        self.channel = channel
        self.smtp: smtplib.SMTP | None = None
        self.connections = 0
        self.sent_on_connection = 0
        self.reconnected = False

    def __enter__(self) -> SMTPBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, *, quit: bool = True) -> None:
        """End the connection: QUIT when it is healthy, else just close (a QUIT to a silent
        server would wait another timeout)."""
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            if quit and smtp.sock is not None:
                smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass  # the messages are handed over already; a failed QUIT loses nothing
        finally:
            smtp.close()

    def _open(self) -> smtplib.SMTP:
        self.close()
        self.smtp = self.channel.connect()
        self.connections += 1
        self.sent_on_connection = 0
        return self.smtp

    def send(self, message: Message) -> None:
        email = self.channel.build(message)
        smtp = self.smtp
        if smtp is not None and smtp.sock is None:  # the server closed it (a 421) last time
            smtp = self._reopen(None)
        if smtp is None:
            smtp = self._open()
        try:
            smtp.send_message(email)
        except OSError as exc:  # smtplib's errors are OSErrors too
            if not _lost_connection(exc):
                raise  # this message was refused; the connection is fine for the next one
            if not self._dropped(exc):
                self.close(quit=False)
                if isinstance(exc, smtplib.SMTPServerDisconnected) or not isinstance(
                        exc, smtplib.SMTPException):
                    raise
                # a 421 at once: the server is not taking mail now (the batch waits)
                raise smtplib.SMTPServerDisconnected(
                    "the server is closing the connection (421)") from exc
            again = self._reopen(exc)
            try:
                again.send_message(email)
            except OSError as second:
                if _lost_connection(second):
                    self.close(quit=False)
                    raise smtplib.SMTPServerDisconnected(
                        "the connection was lost again right after reconnecting") from second
                raise
        self.sent_on_connection += 1

    def _reopen(self, exc: BaseException | None) -> smtplib.SMTP:
        """Connect again after a drop, once per batch; a second drop ends the batch (the
        caller gives the rest back for the next run)."""
        if self.reconnected:
            self.close(quit=False)
            raise smtplib.SMTPServerDisconnected(
                "the server dropped the connection twice in one batch") from exc
        self.reconnected = True
        log.info("smtp connection dropped; connecting again")
        return self._open()

    def _dropped(self, exc: BaseException) -> bool:
        """A connection that worked and was then closed by the server (not a silent one)."""
        return self.sent_on_connection > 0 and not _timed_out(exc)


def _lost_connection(exc: BaseException) -> bool:
    """The connection is gone (closed, reset, timed out, or the server said 421 and smtplib
    closed it), as opposed to a refusal of one message."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(code == 421 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def _timed_out(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError) or "timed out" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
