"""Logs of a full run never hold answers, contact details, tokens or internal ids.

A participant joins by email, opens the magic link, consents, answers the baseline (with a
free-text answer), changes settings and address, is exported, ticked over and withdraws, all with
every logger at DEBUG writing JSON. Then every line is searched for what must not be there.
"""

from __future__ import annotations

import contextlib
import json
import logging

from sqlmodel import select

from app.core.errors import AppError
from app.export.service import ExportOptions, export_panel
from app.participants.models import Participant
from app.scheduling.dispatcher import tick
from tests.support.flows import consent, fresh_link, join, sign_in_again

EMAIL = "private.person+logs@example.org"
NEW_EMAIL = "new.address.logs@example.net"
FREE_TEXT = "Zorblax-7731 my secret companion"
SIGNATURE = "Quintessa Logtest"
ANSWERS = {
    "baseline": None,  # filled from the instrument below
    "who5": {f"who5_{i}": 3 for i in range(1, 6)},
    "ai_usage": {"used_models": ["other"], "other_model_name": FREE_TEXT, "hours_other": 2,
                 "purposes": ["work"], "ai_framing": 1, "lost_access": "no"},
}


def _answer_all(client, person) -> int:  # type: ignore[no-untyped-def]
    """Answer every open survey it can with the fixed answers; the number stored."""
    stored = 0
    for survey in client.get("/api/v1/me/surveys", headers=person.headers).json():
        answers = ANSWERS.get(survey["instrument"])
        if not answers:
            continue
        response = client.post(f"/api/v1/me/surveys/{survey['id']}/responses",
                               json={"answers": answers},
                               headers=person.headers | {"Idempotency-Key": f"log-{survey['id']}"})
        assert response.status_code == 201, response.text
        stored += 1
    return stored


def test_a_full_run_logs_no_answers_contacts_tokens_or_ids(app, client, smtp, session, engine,
                                                           settings, clock, tmp_path, log_stream):
    person = join(client, smtp, EMAIL)
    opened = client.get(f"/p/login/{fresh_link(client, smtp, person)}", follow_redirects=False)
    assert opened.status_code in (200, 303)
    consent(client, person, signature_name=SIGNATURE)
    assert _answer_all(client, person) == 2
    assert client.patch("/api/v1/me/settings", json={"timezone": "Asia/Tokyo"},
                        headers=person.headers).status_code == 200
    assert client.post("/api/v1/me/email", json={"email": NEW_EMAIL},
                       headers=person.headers).status_code == 202
    with contextlib.suppress(AppError):  # one participant may be too few to export
        export_panel(engine, ExportOptions(out=tmp_path / "export", include_free_text=True,
                                           actor="test"), now=clock.now)
    clock.advance(days=15)
    tick(engine, settings, app.state.channel, now=clock.now)
    sign_in_again(client, smtp, person)  # the first session has ended by now
    started = client.post("/api/v1/me/withdrawal", json={"scope": "delete_data"},
                          headers=person.headers).json()
    done = client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                       json={"confirm_token": started["confirm_token"]}, headers=person.headers)
    assert done.status_code == 200, done.text
    tick(engine, settings, app.state.channel, now=clock.advance(days=1))
    session.rollback()
    participant_id = session.exec(select(Participant.id)).one()

    lines = [line for line in log_stream.getvalue().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "name", "message"} <= set(r) for r in records)
    names = {r["name"] for r in records}
    assert {"wellpanel.http", "wellpanel.scheduler"} <= names, names  # the run was logged
    requests = [r for r in records if r["name"] == "wellpanel.http"]
    opened_link = [r for r in requests if r.get("route") == "/p/login/{token}"]
    assert len(opened_link) == 1  # logged by its template, never the path with the token
    assert {"method": "GET", "status": 303}.items() <= opened_link[0].items()

    secrets = {"email": EMAIL, "new email": NEW_EMAIL, "email local part": "private.person",
               "free text": FREE_TEXT, "free text fragment": "Zorblax",
               "signature": SIGNATURE, "magic-link token": person.token,
               "confirmation token": started["confirm_token"],
               "participant id": participant_id}
    for line in lines:
        for what, value in secrets.items():
            assert value.lower() not in line.lower(), f"{what} found in a log line: {line[:300]}"
    # Nothing had to be masked by the formatter's last line of defence either.
    assert not [line for line in lines if "[email]" in line or "/p/login/[token]" in line]


def test_database_errors_in_tracebacks_hide_their_parameters(log_stream):
    from sqlalchemy.exc import IntegrityError

    try:
        raise IntegrityError("INSERT INTO survey_responses (answers) VALUES (?)",
                             {"answers": "my private answer"}, Exception("constraint failed"))
    except IntegrityError:
        logging.getLogger("wellpanel.test").exception("unhandled error")
    line = log_stream.getvalue().strip()
    record = json.loads(line)
    assert "INSERT INTO survey_responses" in record["exc_info"]
    assert "[parameters: hidden]" in record["exc_info"] and "my private answer" not in line
