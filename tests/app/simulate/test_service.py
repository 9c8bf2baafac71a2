"""`simulate` stores a synthetic study through the services, on both databases: the same rows the
API would write, nobody contactable, nothing sent, the audit chain intact."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from analysis.panel import load_panel
from app.audit import service as audit
from app.consent.models import ConsentRecord, Withdrawal
from app.export.service import ExportOptions, export_panel
from app.notify.models import OutboxMessage
from app.participants.models import Contact, Participant, ScreeningTally
from app.simulate.service import SimulateOptions, SimulationError, simulate
from app.surveys.models import ResponseScore, SafetyEvent, SurveyInstance, SurveyResponse
from tests.conftest import SURVEYS_DIR

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
N, T, SEED = 20, 3, 1  # this seed draws every fate: completed, paused, both withdrawals


def run(engine, **kw):  # type: ignore[no-untyped-def]
    options = SimulateOptions(participants=kw.pop("participants", N), waves=kw.pop("waves", T),
                              seed=kw.pop("seed", SEED), **kw)
    return simulate(engine, options, surveys_dir=SURVEYS_DIR, now=NOW)


def test_stored_as_the_api_would_store_it_and_never_contacted(engine, session, tmp_path):
    result = run(engine)
    assert result.unanswerable == 0  # every drawn answer found its open survey
    fates = result.fates
    assert set(fates) == {"completed", "paused", "stop_contact", "delete_data", "ineligible",
                          "never_consented", "declined"}
    people = session.exec(select(Participant)).all()
    assert len(people) == result.people - fates["ineligible"]  # screened out: only counted
    statuses = Counter(p.status for p in people)
    assert statuses == {"completed": fates["completed"], "paused": fates["paused"],
                        "withdrawn": fates["stop_contact"] + fates["delete_data"],
                        "enrolled": fates["never_consented"], "declined": fates["declined"]}
    tally = {t.outcome: t.count for t in session.exec(select(ScreeningTally))}
    assert tally == {"eligible": len(people), "ineligible": fates["ineligible"]}
    # consent and withdrawal went through the consent service
    signed = session.exec(select(ConsentRecord).where(ConsentRecord.decision == "consent")).all()
    assert len(signed) == N and all(r.identity_verified_at is not None for r in signed)
    scopes = Counter(w.scope for w in session.exec(select(Withdrawal)).all())
    assert scopes == {"stop_contact": fates["stop_contact"], "delete_data": fates["delete_data"]}
    assert all(w.confirmed_at is not None for w in session.exec(select(Withdrawal)))
    report = audit.verify(session)
    assert report.ok and report.rows_checked > N * 3

    # answers scored, in the past, enrollment spread over months
    responses = session.exec(select(SurveyResponse)).all()
    assert 0 < len(responses) <= result.responses  # delete_data erased some
    scores = {s.response_id: s for s in session.exec(select(ResponseScore))}
    for r in responses:
        assert r.submitted_at < NOW
        assert (r.id in scores) == (r.instrument_key not in ("baseline", "ai_usage"))
        assert r.idempotency_key.startswith("simulate:")
    assert all(s.valid for s in scores.values())
    first = min(r.submitted_at for r in responses)
    assert (max(r.submitted_at for r in responses) - first).days > 60  # enrollment over months
    # the baseline asks the quasi-identifiers
    baseline = [r.answers for r in responses if r.instrument_key == "baseline"]
    assert baseline and all({"age_band", "gender", "country"} <= set(a) for a in baseline)
    assert len(session.exec(select(SafetyEvent)).all()) <= result.safety_events

    # nobody simulated can ever be contacted
    contacts = session.exec(select(Contact)).all()
    assert contacts and all(c.email.endswith("@example.invalid") for c in contacts)
    withdrawn = {p.id for p in session.exec(select(Participant).where(
        Participant.status == "withdrawn"))}
    assert not withdrawn & {c.participant_id for c in contacts}
    outbox = Counter(m.status for m in session.exec(select(OutboxMessage)))
    assert outbox and set(outbox) == {"cancelled"}  # queued by enroll, never delivered
    assert not session.exec(select(Participant).where(Participant.status == "active")).all()
    left = Counter(i.status for i in session.exec(select(SurveyInstance)))
    assert left["completed"] > 0 and left["expired"] > 0  # missed waves expired
    assert not left["planned"] and not left["open"]

    # exported, the waves are the panel's two-week waves (whatever the schedule entry)
    export_panel(engine, ExportOptions(out=tmp_path / "panel"))
    loaded = load_panel(tmp_path / "panel")
    assert not [w for w in loaded.warnings if "outside the scale" in w]  # spec = instruments
    wide = loaded.wide
    assert set(wide["wave"]) == set(range(T))
    assert all(14 * w <= d <= 14 * w + 3 for w, d in zip(wide["wave"], wide["day"], strict=True))
    four_weekly = wide[wide["swls"].notna()]
    assert set(four_weekly["wave"]) == {0, 2}  # baseline and day 28


def test_a_study_with_participants_is_refused_unless_appending(engine, session):
    run(engine, participants=6, waves=2, extras=False)
    before = len(session.exec(select(Participant)).all())
    with pytest.raises(SimulationError) as refused:
        run(engine, participants=6, waves=2, extras=False)
    assert refused.value.code == "study_not_empty" and "--append" in refused.value.message
    assert len(session.exec(select(Participant)).all()) == before
    run(engine, participants=6, waves=2, extras=False, append=True)
    session.rollback()  # a fresh snapshot (SQLite keeps the old one inside a transaction)
    emails = [c.email for c in session.exec(select(Contact))]
    assert len(session.exec(select(Participant)).all()) == before + 6
    assert len(set(emails)) == len(emails)


@pytest.mark.parametrize("waves", [1, 40])
def test_impossible_waves_are_refused_before_anyone_is_stored(engine, session, waves):
    with pytest.raises(SimulationError) as refused:
        run(engine, waves=waves)
    assert "waves" in refused.value.message
    assert not session.exec(select(Participant)).all()


@pytest.mark.parametrize("effects", [{"nonsense": {"within": 1}},
                                     {"who5": {"no_such_parameter": 1}}])
def test_unknown_effects_are_refused(engine, session, effects):
    with pytest.raises(SimulationError) as refused:
        run(engine, effects=effects)
    assert refused.value.details == {"field": "effects"}
    assert not session.exec(select(Participant)).all()


def test_an_unknown_study_is_refused(engine, session):
    with pytest.raises(SimulationError) as refused:
        run(engine, study="no-such-study")
    assert refused.value.code == "study_not_found"
