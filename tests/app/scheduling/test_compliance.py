"""Compliance for researchers, on counts built through the real flows: participants join and
consent through the API, `wellpanel scheduler tick --now` opens, invites (real SMTP) and expires,
and they view and answer through the API with the links from their invitation emails."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from app.auth import service as auth
from app.config import get_settings
from app.consent.service import irb_pseudonym
from app.participants.models import Contact
from app.scheduling import compliance
from app.studies import service as studies
from tests.support.flows import Person, exchange, joined_and_consented, link_token
from tests.support.studyfiles import StudyCopy

# Every 14 days at 10:00 Berlin (09:00 UTC in November and December), open for 48 hours.
CORE = {"name": "core", "instruments": ["who5", "gad7"], "cadence": {"every_days": 14},
        "local_time": "10:00", "open_for_hours": 48, "reminders_hours": [24]}
ANSWERS = {"who5": {f"who5_{i}": 3 for i in range(1, 6)},
           "gad7": {f"gad7_{i}": 1 for i in range(1, 8)}}
WAVE = [datetime(2026, 11, 16, 9, tzinfo=UTC), datetime(2026, 11, 30, 9, tzinfo=UTC),
        datetime(2026, 12, 14, 9, tzinfo=UTC)]
runner = CliRunner()


@pytest.fixture
def core_study(tmp_path, session, loaded_study) -> str:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data["schedule"] = {"study_length_days": 70, "entries": [CORE]}
    copy.write(data)
    studies.load_study(session, copy.file, copy.surveys, actor="test")
    return loaded_study


@pytest.fixture
def cli_env(db_url, settings, monkeypatch):  # type: ignore[no-untyped-def]
    """`wellpanel` in this process, on the test's database and SMTP server."""
    for name in ("database_url", "secret_key", "smtp_host", "smtp_port", "notify_channel",
                 "base_url", "environment"):
        monkeypatch.setenv(f"WELLPANEL_{name.upper()}", str(getattr(settings, name)))
    get_settings.cache_clear()
    from app.cli import app as wellpanel

    yield wellpanel
    get_settings.cache_clear()


@pytest.fixture
def staff(engine):  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return {role: {"Authorization": f"Bearer {auth.add_staff(s, role + '-c', role)}"}
                for role in ("researcher", "irb")}


@dataclass
class Panel:
    ids: dict[str, str]  # name -> internal participant id (for the test's own checks only)
    emails: dict[str, str]

    def pseudonym(self, name: str, secret: str) -> str:
        return irb_pseudonym(secret, self.ids[name])


def _tick(cli, at: datetime) -> dict:  # type: ignore[no-untyped-def,type-arg]
    result = runner.invoke(cli, ["scheduler", "tick", "--now", at.isoformat()])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def _invited(client, smtp, email: str) -> Person:  # type: ignore[no-untyped-def]
    """The participant, signed in with the link of their latest invitation email."""
    return Person(email, exchange(client, link_token(smtp.to(email)[-1].link())))


def _answer(client, person: Person, instruments: list[str], *, view_only=(),  # type: ignore[no-untyped-def]
            ) -> None:
    listed = client.get("/api/v1/me/surveys", headers=person.headers)
    assert listed.status_code == 200, listed.text
    for survey in listed.json():
        key = survey["instrument"]
        if key in instruments or key in view_only:
            assert client.get(f"/api/v1/me/surveys/{survey['id']}",
                              headers=person.headers).status_code == 200
        if key in instruments:
            response = client.post(
                f"/api/v1/me/surveys/{survey['id']}/responses", json={"answers": ANSWERS[key]},
                headers=person.headers | {"Idempotency-Key": f"k-{survey['id']}"})
            assert response.status_code == 201, response.text


def build_panel(client, smtp, session, clock, cli) -> Panel:  # type: ignore[no-untyped-def]
    """Four participants over three waves of who5 + gad7:

    - ana answers everything, 1 h, 2 h and 1 h after each wave opens;
    - bo views who5 of wave 0 only, then nothing (three missed sittings in a row);
    - cy answers who5 of wave 0 (after 3 h), misses wave 1, answers all of wave 2 (after 1.5 h);
    - di never opens anything (three missed sittings in a row).
    """
    smtp.clear()
    emails = {name: f"{name}@compliance.example.org" for name in ("ana", "bo", "cy", "di")}
    for email in emails.values():
        joined_and_consented(client, smtp, email)
    ids = {name: session.exec(select(Contact.participant_id)
                              .where(Contact.email == email)).one()
           for name, email in emails.items()}
    plans = [{"ana": (1, ["who5", "gad7"]), "bo": (1, []), "cy": (3, ["who5"])},
             {"ana": (2, ["who5", "gad7"])},
             {"ana": (1, ["who5", "gad7"]), "cy": (1.5, ["who5", "gad7"])}]
    for opens, plan in zip(WAVE, plans, strict=True):
        report = _tick(cli, opens)
        assert (report["opened"], report["invitations"], report["sent"]) == (8, 4, 4)
        for name, (hours, instruments) in sorted(plan.items(), key=lambda kv: kv[1][0]):
            clock.now = opens + timedelta(hours=hours)
            _answer(client, _invited(client, smtp, emails[name]), instruments,
                    view_only=["who5"] if name == "bo" else [])
        closed = _tick(cli, opens + timedelta(hours=48))
        assert closed["expired"] == 8 - sum(len(i) for _, i in plan.values())
    session.rollback()  # end the test's read snapshot: see what the ticks and answers wrote
    return Panel(ids, emails)


def test_compliance_service_api_and_command_agree_on_known_counts(
        app, client, smtp, session, clock, core_study, cli_env, staff, settings):
    panel = build_panel(client, smtp, session, clock, cli_env)
    study = compliance.find_study(session, core_study)
    secret = settings.secret_key
    report = compliance.compliance(session, study, secret_key=secret, now=clock())
    rows = {(r.entry, r.instrument, r.wave): r for r in report.rows}
    # Waves 3 and 4 are planned (the horizon rolled forward) but not due: scheduled only.
    assert set(rows) == {("core", i, w) for i in ("who5", "gad7") for w in range(5)}
    who5, gad7 = rows[("core", "who5", 0)], rows[("core", "gad7", 0)]
    assert (who5.scheduled, who5.sent, who5.opened, who5.completed, who5.expired) == (4, 4, 3, 2, 2)
    assert who5.median_answer_seconds == 2 * 3600  # 1 h (ana) and 3 h (cy)
    assert who5.completion_rate == 0.5
    assert (gad7.scheduled, gad7.sent, gad7.opened, gad7.completed, gad7.expired) == (4, 4, 1, 1, 3)
    assert gad7.median_answer_seconds == 3600
    w1 = rows[("core", "who5", 1)]
    assert (w1.sent, w1.opened, w1.completed, w1.expired, w1.median_answer_seconds) == (
        4, 1, 1, 3, 2 * 3600)
    w2 = rows[("core", "gad7", 2)]
    assert (w2.completed, w2.expired, w2.median_answer_seconds) == (2, 2, 1.25 * 3600)
    later = rows[("core", "who5", 4)]
    assert (later.scheduled, later.sent, later.opened, later.completed, later.expired,
            later.completion_rate, later.median_answer_seconds) == (4, 0, 0, 0, 0, None, None)
    assert [(r.entry, r.instrument, r.wave) for r in report.rows][:2] == [
        ("core", "gad7", 0), ("core", "who5", 0)]  # in time order
    missing = sorted([panel.pseudonym("bo", secret), panel.pseudonym("di", secret)])
    assert (report.missed.threshold, report.missed.count, report.missed.pseudonyms) == (
        3, 2, missing)
    assert compliance.compliance(session, study, secret_key=secret, now=clock(),
                                 missed_in_a_row=4).missed.count == 0
    assert compliance.compliance(session, study, secret_key=secret, now=clock(),
                                 missed_in_a_row=1).missed.pseudonyms == sorted(
        [panel.pseudonym(n, secret) for n in ("bo", "cy", "di")])

    # The researcher API: the same report; pseudonyms, never ids or addresses.
    answer = client.get("/api/v1/researcher/compliance",
                        params={"study": core_study, "missed_in_a_row": 3},
                        headers=staff["researcher"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["missed"]["pseudonyms"] == missing
    assert [r["completed"] for r in body["rows"]] == [r.completed for r in report.rows]
    assert not any(v in answer.text for v in [*panel.ids.values(), *panel.emails.values()])

    # The command: a table in the terminal, and the same JSON.
    table = runner.invoke(cli_env, ["compliance", "--study", core_study])
    assert table.exit_code == 0, table.output
    assert "who5" in table.output and "2 participant(s) missed 3 or more" in table.output
    assert all(p in table.output for p in missing) and "@" not in table.output
    as_json = runner.invoke(cli_env, ["compliance", "--json", "--missed-in-a-row", "1"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["missed"]["count"] == 3

    # For the researcher console: completion per calendar week, and the heat map.
    weeks = compliance.compliance_by_week(session, study)
    assert [(w.week_start, w.scheduled, w.completed, w.expired) for w in weeks] == [
        (date(2026, 11, 16), 8, 3, 5), (date(2026, 11, 30), 8, 2, 6),
        (date(2026, 12, 14), 8, 4, 4), (date(2026, 12, 28), 8, 0, 0),
        (date(2027, 1, 11), 8, 0, 0)]
    assert [w.completion_rate for w in weeks] == [0.375, 0.25, 0.5, None, None]
    matrix = compliance.participant_wave_matrix(session, study, secret_key=secret)
    assert matrix.waves == [f"core:{w}" for w in range(5)]
    cells = {row.pseudonym: row.cells for row in matrix.rows}
    assert cells[panel.pseudonym("ana", secret)] == {
        "core:0": "completed", "core:1": "completed", "core:2": "completed",
        "core:3": "planned", "core:4": "planned"}
    assert [cells[panel.pseudonym(n, secret)]["core:0"] for n in ("bo", "cy", "di")] == [
        "expired", "expired", "missed"]  # viewed; half answered; never opened
    assert [cells[panel.pseudonym("cy", secret)][f"core:{w}"] for w in (1, 2)] == [
        "missed", "completed"]
    assert len(compliance.participant_wave_matrix(session, study, secret_key=secret,
                                                  limit=2).rows) == 2


@pytest.mark.parametrize("params", [
    {"missed_in_a_row": "0"}, {"missed_in_a_row": "many"}, {"missed_in_a_row": "101"},
    {"study": ""}, {"study": "x" * 65},
])
def test_bad_query_parameters_are_refused_with_422(client, staff, params):
    answer = client.get("/api/v1/researcher/compliance", params=params,
                        headers=staff["researcher"])
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_failed"


def test_unknown_study_is_404_and_only_researchers_may_look(client, staff):
    unknown = client.get("/api/v1/researcher/compliance", params={"study": "nope"},
                         headers=staff["researcher"])
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
    assert client.get("/api/v1/researcher/compliance").status_code == 401
    assert client.get("/api/v1/researcher/compliance", headers=staff["irb"]).status_code == 403
    empty = client.get("/api/v1/researcher/compliance", headers=staff["researcher"])
    assert empty.status_code == 200
    assert empty.json()["rows"] == [] and empty.json()["missed"]["count"] == 0


def test_command_refuses_an_unknown_study_with_exit_2(cli_env, loaded_study):
    result = runner.invoke(cli_env, ["compliance", "--study", "nope"])
    assert result.exit_code == 2 and "error: There is no study called 'nope'" in result.output
    bad = runner.invoke(cli_env, ["compliance", "--missed-in-a-row", "0"])
    assert bad.exit_code == 2


def test_without_a_loaded_study_there_is_nothing_to_report(session):
    from app.core.errors import NotFound

    with pytest.raises(NotFound, match="No study is loaded"):
        compliance.find_study(session, None)
