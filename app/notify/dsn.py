"""Asynchronous bounces from a mailbox: RFC 3464 delivery status notifications in a Maildir.

Point the study's bounce address (the envelope sender, or where the mail server files DSNs) at
a Maildir and run `wellpanel mail read-bounces DIR` now and then (cron, a systemd timer). Each
new message is read once and then moved to cur/ with the Seen flag. A DSN (multipart/report;
report-type=delivery-status) whose recipient block says `Action: failed` with a 5.x.x `Status`
marks that address undeliverable (app/notify/bounces.py), with the SMTP code from its
`Diagnostic-Code` when there is one; delayed or transient reports change nothing. Anything else
in the mailbox is only marked seen. Addresses are never logged or printed.
"""

from __future__ import annotations

import logging
import mailbox
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from pathlib import Path

from sqlmodel import Session

from app.notify import bounces

log = logging.getLogger("wellpanel.notify")
_SMTP_CODE = re.compile(r"\b([245]\d\d)\b")


@dataclass
class DsnReport:
    read: int = 0  # new messages looked at
    reports: int = 0  # of which delivery status notifications
    permanent: int = 0  # failed recipients with a 5.x.x status
    marked: int = 0  # participants whose address was marked undeliverable


def failed_recipients(message: Message) -> list[tuple[str, int | None]]:
    """(address, SMTP code or None) of each recipient a DSN reports as failed for good."""
    if message.get_content_type() != "multipart/report" or (
            message.get_param("report-type") or "").lower() != "delivery-status":
        return []
    found: list[tuple[str, int | None]] = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        for block in blocks[1:] if isinstance(blocks, list) else []:  # [0]: per-message fields
            recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
            action = (block.get("Action") or "").strip().lower()
            status = (block.get("Status") or "").strip()
            if recipient and action == "failed" and status.startswith("5"):
                found.append((recipient, _code(block.get("Diagnostic-Code"))))
    return found


def _address(field: str | None) -> str | None:
    """The address of an `rfc822; person@example.org` field."""
    if not field:
        return None
    kind, _, address = str(field).partition(";")
    address = address.strip().strip("<>")
    return address.lower() if kind.strip().lower() == "rfc822" and "@" in address else None


def _code(diagnostic: str | None) -> int | None:
    """The SMTP reply code of `smtp; 550 5.1.1 ...`, if it is a 5xx."""
    if not diagnostic:
        return None
    match = _SMTP_CODE.search(str(diagnostic))
    return int(match.group(1)) if match and match.group(1).startswith("5") else None


def read_maildir(session: Session, directory: Path, *, secret_key: str, now: datetime
                 ) -> DsnReport:
    """Read the Maildir's new messages once. Commits what they showed, and only then moves
    them to cur/ (Seen): a failed commit leaves them new for the next run."""
    box = mailbox.Maildir(directory, create=False)
    report = DsnReport()
    read: list[tuple[str, mailbox.MaildirMessage]] = []
    for key in list(box.iterkeys()):
        message = box[key]
        if message.get_subdir() != "new":
            continue
        read.append((key, message))
        report.read += 1
        recipients = failed_recipients(message)
        if message.get_content_type() == "multipart/report":
            report.reports += 1
        for address, code in recipients:
            report.permanent += 1
            report.marked += bounces.bounce_reported(session, address, "permanent", code,
                                                     secret_key=secret_key, now=now,
                                                     source="dsn")
    session.commit()
    for key, message in read:
        message.set_subdir("cur")
        message.add_flag("S")
        box[key] = message
    log.info("bounce mailbox read", extra={"read": report.read, "reports": report.reports,
                                           "permanent": report.permanent,
                                           "marked": report.marked})
    return report
