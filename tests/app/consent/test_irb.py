from __future__ import annotations

import csv
import io

import pytest
from sqlmodel import Session, select

from app.audit.models import AuditEvent
from app.auth import service as auth
from app.consent import service as consent
from app.participants.models import Participant
from tests.support.flows import consent_body, join, joined_and_consented


@pytest.fixture
def staff(engine):  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return {role: {"Authorization": f"Bearer {auth.add_staff(s, role + '-1', role)}"}
                for role in ("researcher", "irb", "admin")}


IRB_ROUTES = ["/api/v1/irb/consent-versions", "/api/v1/irb/consent-log",
              "/api/v1/irb/audit/verify"]


@pytest.mark.parametrize("path", IRB_ROUTES)
def test_irb_routes_check_the_role(client, staff, path):
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer nonsense"}).status_code == 401
    refused = client.get(path, headers=staff["researcher"])
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert client.get(path, headers=staff["irb"]).status_code == 200
    assert client.get(path, headers=staff["admin"]).status_code == 200


def test_consent_versions_show_hashes_and_approval(client, staff):
    versions = client.get("/api/v1/irb/consent-versions", headers=staff["irb"]).json()
    assert [(v["version"], v["current"]) for v in versions] == [("1.0", False), ("1.1", True)]
    assert all(v["approval_ref"].startswith("IRB-2026-0412") for v in versions)
    assert set(versions[0]["languages"]) == {"en", "de", "pt-BR"}
    assert set(versions[1]["languages"]) == {"en", "de", "pt-BR", "zh-CN"}
    assert all(len(h) == 64 for v in versions for h in v["languages"].values())


def test_consent_log_filters_csv_and_history(client, smtp, staff, session, clock, settings):
    joined_and_consented(client, smtp, "a@example.org")
    clock.advance(days=3)
    declined = join(client, smtp, "b@example.org")
    client.post("/api/v1/me/consent", headers=declined.headers,
                json=consent_body(decision="decline", signature_name=None, statements=[]))
    log = client.get("/api/v1/irb/consent-log", headers=staff["irb"]).json()
    assert [e["action"] for e in log] == ["consent", "decline"]
    assert all("example.org" not in str(e) for e in log)
    only_decline = client.get("/api/v1/irb/consent-log?action=decline",
                              headers=staff["irb"]).json()
    assert [e["action"] for e in only_decline] == ["decline"]
    first_day = client.get("/api/v1/irb/consent-log?from=2026-11-02&to=2026-11-02",
                           headers=staff["irb"]).json()
    assert [e["action"] for e in first_day] == ["consent"]
    wrong_version = client.get("/api/v1/irb/consent-log?version=0.9", headers=staff["irb"])
    assert wrong_version.json() == []
    bad_date = client.get("/api/v1/irb/consent-log?from=yesterday", headers=staff["irb"])
    assert bad_date.status_code == 422 and "from" in bad_date.json()["error"]["message"]
    exported = client.get("/api/v1/irb/consent-log?format=csv", headers=staff["irb"])
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["action"] for r in rows] == ["consent", "decline"]
    pseudonym = rows[0]["pseudonym"]
    history = client.get(f"/api/v1/irb/participants/{pseudonym}/consent-history",
                         headers=staff["irb"]).json()
    assert history["status"] == "active" and [e["action"] for e in history["entries"]] == [
        "consent"]
    assert client.get("/api/v1/irb/participants/ffffffffffffffff/consent-history",
                      headers=staff["irb"]).status_code == 404
    session.rollback()
    actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert actions.count("staff.view_consent_log") == 5  # the refused request wrote nothing
    assert "staff.view_consent_history" in actions
    ids = {p.id for p in session.exec(select(Participant)).all()}
    assert pseudonym not in ids
    assert consent.irb_pseudonym(settings.secret_key, sorted(ids)[0]) in {r["pseudonym"]
                                                                         for r in rows}


def test_verify_endpoint_reports_the_chain(client, staff):
    report = client.get("/api/v1/irb/audit/verify", headers=staff["irb"]).json()
    assert report["ok"] is True and report["rows_checked"] >= 4
