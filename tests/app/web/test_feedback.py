"""The optional feedback page: a participant's own scores over the waves they submitted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.auth import service as auth
from app.scheduling.dispatcher import tick
from app.studies import service as studies
from app.studies.service import StudyLoadError
from tests.support.flows import Person, fresh_link, joined_and_consented, sign_in_again
from tests.support.studyfiles import StudyCopy

FEEDBACK = {"enabled": True, "scores": [
    {"instrument": "who5", "score": "percentage",
     "label": {"en": "Wellbeing (WHO-5)", "de": "Wohlbefinden (WHO-5)"}},
    {"instrument": "phq9", "score": "total"}]}


def _study_with(tmp_path: Path, session: Session, block: dict, now) -> None:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data["participant_feedback"] = block
    copy.write(data)
    studies.load_study(session, copy.file, copy.surveys, actor="test", now=now)


@pytest.fixture
def feedback_on(tmp_path, session, loaded_study, clock) -> None:  # type: ignore[no-untyped-def]
    _study_with(tmp_path, session, FEEDBACK, clock())


def _browser(app, smtp, person: Person) -> TestClient:  # type: ignore[no-untyped-def]
    web = TestClient(app)
    answer = web.get(f"/p/login/{fresh_link(web, smtp, person)}")
    assert answer.status_code == 200, (answer.history, answer.text[-1500:])
    return web


def _answer_who5(client, person: Person, value: int, key: str) -> None:  # type: ignore[no-untyped-def]
    listed = client.get("/api/v1/me/surveys", headers=person.headers).json()
    who5 = next(s["id"] for s in listed if s["instrument"] == "who5")
    answered = client.post(f"/api/v1/me/surveys/{who5}/responses",
                           json={"answers": {f"who5_{i}": value for i in range(1, 6)}},
                           headers=person.headers | {"Idempotency-Key": key})
    assert answered.status_code == 201, answered.text


def _table(html: str, key: str) -> list[str]:
    section = re.search(rf'<section class="feedback" id="score-{key}".*?</section>', html, re.S)
    assert section, f"no section for {key}"
    return re.findall(r'<td class="num">([^<]*)</td>', section.group(0))


def _irb_page(app, engine) -> str:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        token = auth.add_staff(s, "irb-feedback", "irb")
    web = TestClient(app)
    page = web.get("/staff/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    web.post("/staff/login", data={"csrf_token": csrf, "token": token})
    versions = web.get("/staff/irb/consent-versions")
    assert versions.status_code == 200
    return versions.text


def test_off_by_default_the_page_is_not_found_and_the_irb_sees_off(app, client, smtp, engine):
    person = joined_and_consented(client, smtp, "fb-off@example.org", language="de")
    web = _browser(app, smtp, person)
    home = web.get("/p")
    assert home.status_code == 200 and 'href="/p/feedback"' not in home.text
    page = web.get("/p/feedback")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert '<html lang="de">' in page.text
    irb = _irb_page(app, engine)
    assert 'id="participant-feedback"' in irb
    assert "keep4o-panel: Participant feedback: off" in irb


def test_on_shows_own_scores_of_submitted_waves_only(app, client, smtp, session, clock, engine,
                                                     feedback_on):
    alice = joined_and_consented(client, smtp, "fb-alice@example.org")
    bob = joined_and_consented(client, smtp, "fb-bob@example.org")
    web = _browser(app, smtp, alice)
    home = web.get("/p")
    assert 'href="/p/feedback" id="feedback-link"' in home.text
    before = web.get("/p/feedback")
    assert before.status_code == 200 and 'id="feedback-none"' in before.text
    assert "<svg" not in before.text and "<table" not in before.text  # nothing before a wave

    _answer_who5(client, alice, 3, "alice-baseline")  # raw 15 -> 60 %
    _answer_who5(client, bob, 1, "bob-baseline")  # raw 5 -> 20 %
    clock.advance(days=15)  # the first biweekly occasion (day 14, 18:00 local) is open
    tick(app.state.engine, app.state.settings, app.state.channel, now=clock())
    sign_in_again(client, smtp, alice)  # her first session has ended by now
    _answer_who5(client, alice, 4, "alice-wave1")  # raw 20 -> 80 %

    clock.advance(minutes=1)  # (a new link at the same instant would be the same message)
    page = _browser(app, smtp, alice).get("/p/feedback")  # a new session: two weeks passed
    assert page.status_code == 200
    assert _table(page.text, "who5-percentage") == ["60", "80"]
    assert "Wellbeing (WHO-5)" in page.text  # the study file's label
    assert re.search(r'<svg [^>]*role="img" aria-label="Wellbeing \(WHO-5\): your scores by date"',
                     page.text)
    assert page.text.count('<circle class="point"') == 2
    assert "Possible scores: 0 to 100." in page.text
    assert "20" not in _table(page.text, "who5-percentage")  # never Bob's
    phq9 = re.search(r'id="score-phq9-total".*?</section>', page.text, re.S)
    assert phq9 and "No score yet for this questionnaire." in phq9.group(0)

    bobs = _browser(app, smtp, bob).get("/p/feedback")
    assert _table(bobs.text, "who5-percentage") == ["20"]

    irb = _irb_page(app, engine)
    assert "keep4o-panel: Participant feedback: on (scores: who5 percentage, phq9 total)" in irb


@pytest.mark.parametrize("lang", ["en", "de", "pt-BR", "zh-CN"])
def test_the_page_renders_in_every_language(app, client, smtp, feedback_on, lang):
    person = joined_and_consented(client, smtp, f"fb-{lang.lower()}@example.org", language=lang)
    _answer_who5(client, person, 2, f"language-{lang}")
    page = _browser(app, smtp, person).get("/p/feedback")
    assert page.status_code == 200 and f'<html lang="{lang}">' in page.text
    assert _table(page.text, "who5-percentage") == ["40"]


def test_study_load_refuses_a_score_the_instrument_does_not_define(tmp_path, session,
                                                                   loaded_study, clock):
    bad = {"enabled": True, "scores": [{"instrument": "who5", "score": "total"}]}
    with pytest.raises(StudyLoadError, match="who5 has no score 'total'"):
        _study_with(tmp_path, session, bad, clock())
