"""The IRB reads the ledger: entries filtered by time, action, actor and participant
pseudonym, newest first and paginated, as CSV (formula cells neutralized), never with a raw
participant id or address; the latest checkpoints and the public key; incremental verification.
In the browser (staff pages) and the JSON API."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session, select

from app.audit import service as audit
from app.auth import service as auth
from app.consent import service as consent
from app.participants.models import Participant
from tests.support import tamper
from tests.support.flows import joined_and_consented


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


@pytest.fixture
def irb(engine):  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return {"Authorization": f"Bearer {auth.add_staff(s, 'irb-ledger', 'irb')}"}


@pytest.fixture
def web(app, engine) -> TestClient:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        token = auth.add_staff(s, "irb-web-ledger", "irb")
    client = TestClient(app)
    page = client.get("/staff/login")
    assert client.post("/staff/login", data={"csrf_token": _csrf(page.text), "token": token},
                       follow_redirects=False).status_code == 303
    return client


@pytest.fixture
def people(client, smtp, clock, session, settings):  # type: ignore[no-untyped-def]
    """Two participants a day apart; returns [(email, participant id, pseudonym)]."""
    out = []
    for i in range(2):
        email = f"ledger-{i}-{id(client)}@example.org"
        joined_and_consented(client, smtp, email)
        clock.advance(days=1)
    session.rollback()
    for participant in session.exec(select(Participant).order_by(Participant.created_at)).all():
        out.append((participant.id, consent.irb_pseudonym(settings.secret_key, participant.id)))
    return out


def test_entries_are_pseudonymized_filtered_and_paginated(client, irb, people, session):
    raw_ids = [pid for pid, _ in people]
    first = client.get("/api/v1/irb/audit/entries?limit=3", headers=irb)
    assert first.status_code == 200
    body = first.json()
    assert len(body["entries"]) == 3 and body["next_before"] is not None
    seqs = [e["seq"] for e in body["entries"]]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    older = client.get(f"/api/v1/irb/audit/entries?limit=3&before={body['next_before']}",
                       headers=irb).json()
    assert older["entries"][0]["seq"] == seqs[-1] - 1
    everything = client.get("/api/v1/irb/audit/entries?limit=500", headers=irb).text
    assert not any(pid in everything for pid in raw_ids)  # never a raw participant id
    assert "@example.org" not in everything
    assert f"participant:{people[0][1]}" in everything

    pid, pseudonym = people[0]
    about = client.get(f"/api/v1/irb/audit/entries?pseudonym={pseudonym}&limit=500",
                       headers=irb).json()["entries"]
    assert about and all(pseudonym in (e["actor"] + str(e["target"])) for e in about)
    assert {"consent.sign", "participant.enroll"} <= {e["action"] for e in about} or \
        "consent.sign" in {e["action"] for e in about}
    signed = client.get("/api/v1/irb/audit/entries?action=consent.sign", headers=irb).json()
    assert len(signed["entries"]) == 2
    prefix = client.get("/api/v1/irb/audit/entries?action=consent.&limit=500",
                        headers=irb).json()["entries"]
    assert {e["action"] for e in prefix} >= {"consent.sign"}
    assert all(e["action"].startswith("consent.") for e in prefix)
    by_actor = client.get(f"/api/v1/irb/audit/entries?actor=participant:{pseudonym}&limit=500",
                          headers=irb).json()["entries"]
    assert by_actor and all(e["actor"] == f"participant:{pseudonym}" for e in by_actor)


def test_time_filter_and_unknown_pseudonym(client, irb, people, clock):
    day_two = (clock() - timedelta(days=1)).date().isoformat()
    window = client.get(f"/api/v1/irb/audit/entries?from={day_two}&to={day_two}"
                        "&action=consent.sign", headers=irb).json()["entries"]
    assert [e["target"] is not None for e in window] == [True]  # the second signing only
    assert window[0]["at"].startswith(day_two)
    unknown = client.get("/api/v1/irb/audit/entries?pseudonym=0000000000000000", headers=irb)
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"] == {"field": "pseudonym"}


def test_csv_download_neutralizes_formulas(client, irb, people, session, clock):
    session.rollback()
    audit.append(session, actor="=HYPERLINK(\"http://x\")", action="test.formula",
                 target="+cmd", details={"note": "@SUM(1)"}, now=clock())
    session.commit()
    got = client.get("/api/v1/irb/audit/entries?format=csv", headers=irb)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.text)))
    forged = next(r for r in rows if r["action"] == "test.formula")
    assert forged["actor"].startswith("'=") and forged["target"] == "'+cmd"
    assert not any(pid in got.text for pid, _ in people)
    session.rollback()
    total = session.execute(text("SELECT count(*) FROM audit_events")).scalar()
    assert [r["seq"] for r in rows] == [str(i) for i in range(1, total + 1)]  # oldest first


def test_checkpoints_and_incremental_verification_in_the_api(client, irb, people, app,
                                                             settings):
    status = client.get("/api/v1/irb/audit/checkpoints", headers=irb).json()
    assert status["report"]["ok"] and status["report"]["anchored"]
    assert status["checkpoints"][0]["kind"] == "checkpoint"
    assert status["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert status["key_id"] == status["checkpoints"][0]["key_id"]
    again = client.get("/api/v1/irb/audit/verify", headers=irb).json()
    assert again["ok"] and again["mode"] == "incremental"
    assert again["verified_from"] > 1
    full = client.get("/api/v1/irb/audit/verify?full=true", headers=irb).json()
    assert full["mode"] == "full" and full["verified_from"] == 1


def test_api_verify_catches_a_rewrite(client, irb, people, session):
    tamper.unprotect(session)
    tamper.edit_and_rehash(session, 2)
    report = client.get("/api/v1/irb/audit/verify", headers=irb).json()
    assert not report["ok"]
    assert (report["first_broken"]["problem"], report["first_broken"]["seq"]) == ("rewritten", 2)


def test_the_irb_reads_filters_and_downloads_in_the_browser(people, web):
    pid, pseudonym = people[1]
    home = web.get("/staff")
    assert "/staff/irb/ledger" in home.text
    page = web.get("/staff/irb/ledger")
    assert page.status_code == 200 and "consent.sign" in page.text
    assert pid not in page.text and "@example.org" not in page.text
    assert f"participant:{pseudonym}" in page.text
    about = web.get(f"/staff/irb/ledger?pseudonym={pseudonym}&action=consent.")
    assert about.status_code == 200 and about.text.count("<tr>") >= 2
    assert people[0][1] not in about.text
    unknown = web.get("/staff/irb/ledger?pseudonym=ffffffffffffffff")
    assert unknown.status_code == 422 and 'aria-invalid="true"' in unknown.text
    assert 'aria-describedby="pseudonym-error"' in unknown.text
    csv_file = web.get(f"/staff/irb/ledger.csv?pseudonym={pseudonym}")
    assert csv_file.headers["content-type"].startswith("text/csv")
    assert pseudonym in csv_file.text and pid not in csv_file.text


def test_the_browser_pages_paginate(people, web, session, clock):
    session.rollback()  # a fresh snapshot: the login wrote since
    for i in range(60):
        audit.append(session, actor="test", action="test.page", target=f"t:{i}", now=clock())
    session.commit()
    first = web.get("/staff/irb/ledger?action=test.page")
    assert first.text.count("<code>t:") == 50
    older = re.search(r'href="(/staff/irb/ledger\?[^"]*before=\d+)"', first.text)
    assert older is not None
    second = web.get(older.group(1).replace("&amp;", "&"))
    assert second.text.count("<code>t:") == 10 and "<code>t:0<" in second.text


def test_the_audit_page_shows_checkpoints_and_key_and_a_broken_ledger(people, web, session):
    page = web.get("/staff/irb/audit")
    assert 'id="chain-status"' in page.text and "intact" in page.text
    assert "BEGIN PUBLIC KEY" in page.text and "checkpoint" in page.text
    session.rollback()  # a fresh snapshot: the page wrote since
    tamper.unprotect(session)
    session.execute(text("DELETE FROM audit_events WHERE id > 3"))
    session.commit()
    broken = web.get("/staff/irb/audit")
    assert "truncated" in broken.text and "are missing" in broken.text


def test_out_of_range_paging_is_refused_or_ignored(client, irb, people, web):
    huge = "9" * 30
    refused = client.get(f"/api/v1/irb/audit/entries?before={huge}", headers=irb)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_failed"
    assert web.get(f"/staff/irb/ledger?before={huge}").status_code == 200  # the newest page
