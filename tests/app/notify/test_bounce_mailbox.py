"""Asynchronous bounces from a Maildir (#15 part 4): RFC 3464 delivery status notifications read
once by `wellpanel mail read-bounces`; a 5.x.x failure marks the address undeliverable, delayed
and transient reports and other mail change nothing; no address is printed."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from app.notify import dsn
from app.notify.models import MailContact
from tests.support.factory import consented_participants

runner = CliRunner()


def _dsn(recipient: str, *, action: str = "failed", status: str = "5.1.1",
         diagnostic: str = "smtp; 550 5.1.1 <{r}>: Recipient address rejected") -> bytes:
    """A DSN as Postfix writes one (RFC 3464 multipart/report)."""
    return f"""From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: study@wellpanel.invalid
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"

--B0UND
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net. Your message could not be delivered.

--B0UND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Mon,  2 Nov 2026 09:00:01 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Diagnostic-Code: {diagnostic.format(r=recipient)}

--B0UND
Content-Type: text/rfc822-headers

Message-ID: <abc@wellpanel.invalid>
Subject: Your link

--B0UND--
""".replace("\n", "\r\n").encode()


def _undeliverable(engine, participant_id: str) -> tuple[int | None, str | None] | None:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        row = s.get(MailContact, participant_id)
        return None if row is None or row.undeliverable_at is None else (
            row.undeliverable_code, row.undeliverable_source)


def test_permanent_failures_in_the_bounce_mailbox_mark_addresses_once(
        cli, engine, session, clock, tmp_path: Path, backend, loaded_study):  # type: ignore[no-untyped-def]
    prefix = f"dsn-{backend}-"
    people = consented_participants(session, 4, now=clock(), prefix=prefix)
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    box.add(_dsn(f"{prefix}0@example.org"))
    box.add(_dsn(f"{prefix.upper()}1@EXAMPLE.ORG", status="5.2.1",
                 diagnostic="X-Postfix; mailbox disabled"))  # no SMTP code in it
    box.add(_dsn(f"{prefix}2@example.org", action="delayed", status="4.4.1",
                 diagnostic="smtp; 451 4.4.1 try later"))
    box.add(_dsn("stranger@example.org"))
    box.add(b"From: someone@example.org\r\nSubject: out of office\r\n\r\nAway.\r\n")
    result = runner.invoke(cli, ["mail", "read-bounces", str(tmp_path / "bounces"),
                                 "--now", clock().isoformat()])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output.strip().splitlines()[-1])
    assert counts | {"now": None} == {"now": None, "read": 5, "reports": 4, "permanent": 3,
                                      "marked": 2}
    assert "@" not in result.output
    assert _undeliverable(engine, people[0].id) == (550, "dsn")
    assert _undeliverable(engine, people[1].id) == (None, "dsn")
    assert _undeliverable(engine, people[2].id) is None  # delayed: not permanent
    assert _undeliverable(engine, people[3].id) is None
    assert all(m.get_subdir() == "cur" and "S" in m.get_flags() for m in box.values())
    again = runner.invoke(cli, ["mail", "read-bounces", str(tmp_path / "bounces")])
    assert json.loads(again.output.strip().splitlines()[-1])["read"] == 0  # each read once


def test_read_bounces_refuses_a_folder_that_is_no_maildir(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(cli, ["mail", "read-bounces", str(tmp_path)])
    assert result.exit_code == 2 and "not a Maildir" in result.output


@pytest.mark.parametrize("field,expected", [
    ("rfc822; Ann@Example.org", "ann@example.org"),
    ("rfc822;<ann@example.org>", "ann@example.org"),
    ("x400; c=US;a=;p=x", None),
    (None, None),
])
def test_recipient_fields(field, expected) -> None:  # type: ignore[no-untyped-def]
    assert dsn._address(field) == expected
