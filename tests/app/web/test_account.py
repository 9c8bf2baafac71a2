"""Participant controls through HTTP, on both backends: sign out (this browser, every device),
the back button after a submission, the thank-you page, and "download my data"."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import func, select

from app.audit.models import AuditEvent
from app.participants.models import Participant
from app.scheduling import service as scheduling
from app.surveys import service as surveys
from app.surveys.models import SurveyInstance, SurveyResponse
from app.web.common import TEMPLATES
from tests.support.flows import fresh_link
from tests.support.pages import csrf_of

STATEMENTS = ["read_information", "voluntary", "data_use", "adult_confirmed"]
BASELINE = ["baseline", "who5", "phq9", "gad7", "ucla3", "swls", "social_contact", "ai_usage",
            "ai_dependence"]


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert match, f"no {name} field on the page"
    return match.group(1)


def _signed_in(app: Any, smtp: Any, email: str, lang: str = "en") -> tuple[TestClient, str]:
    """A browser that joined through the pages, opened its link and consented; and the link."""
    web = TestClient(app, follow_redirects=False)
    page = web.get(f"/join/keep4o-panel?lang={lang}")
    joined = web.post(f"/join/keep4o-panel?lang={lang}", data={
        "csrf_token": _csrf(page.text), "lang": lang, "email": email,
        "timezone": "Europe/Berlin", "screening_adult": "yes", "screening_uses_ai_chat": "yes"})
    assert joined.status_code == 200, joined.text
    link = smtp.to(email)[-1].link().replace("http://testserver", "")
    assert web.get(link).status_code == 303
    consent = web.get("/p/consent")
    signed = web.post("/p/consent", data={
        "csrf_token": _csrf(consent.text), "version": _field(consent.text, "version"),
        "language": _field(consent.text, "language"), "decision": "consent",
        "signature_name": "Account Tester", "statements": STATEMENTS})
    assert signed.status_code == 303, signed.text
    return web, link


def _instances(session: Any, participant: Participant) -> dict[str, SurveyInstance]:
    """The participant's open questionnaires by instrument."""
    session.rollback()
    rows = session.exec(select(SurveyInstance).where(
        SurveyInstance.participant_id == participant.id,
        SurveyInstance.status == "open")).all()
    return {i.instrument_key: i for i in rows}


def _participant(session: Any, web: TestClient) -> Participant:
    """The participant whose session this browser holds."""
    from app.auth import service as auth

    session.rollback()
    found = auth.participant_for_token(session, web.cookies["wp_session"],
                                       now=web.app.state.clock())  # type: ignore[attr-defined]
    assert found is not None
    return found[0]


def _answers(session: Any, instance: SurveyInstance, **chosen: Any) -> dict[str, Any]:
    """Valid answers to the instrument: the first option of every shown item (or ``chosen``)."""
    instrument, _ = surveys.instrument_of(session, instance)
    answers: dict[str, Any] = {}
    for item in instrument.items:
        if item.show_if is not None and not item.show_if.holds(answers.get(item.show_if.item)):
            continue
        if item.id in chosen:
            answers[item.id] = chosen[item.id]
        elif item.type == "single_choice":
            answers[item.id] = item.options[0].value
        elif item.type == "multiple_choice":
            answers[item.id] = [item.options[0].value]
        elif item.type in ("integer", "number"):
            answers[item.id] = item.min if item.min is not None else 0
        elif item.required:
            answers[item.id] = "fine"
    return answers


def _as_form(answers: dict[str, Any]) -> dict[str, Any]:
    return {k: [str(x) for x in v] if isinstance(v, list) else str(v)
            for k, v in answers.items()}


def _submit_api(web: TestClient, instance: SurveyInstance, answers: dict[str, Any]) -> None:
    response = web.post(f"/api/v1/me/surveys/{instance.id}/responses",
                        json={"answers": answers},
                        headers={"Idempotency-Key": f"api-{instance.id}",
                                 "Origin": "http://testserver"})  # the cookie, from this site
    assert response.status_code == 201, response.text


def _page_post(web: TestClient, instance: SurveyInstance, answers: dict[str, Any],
               key: str | None = None):  # type: ignore[no-untyped-def]
    form = web.get(f"/p/surveys/{instance.id}")
    assert form.status_code == 200 and 'id="survey-form"' in form.text
    data = {"csrf_token": _csrf(form.text),
            "idempotency_key": key or _field(form.text, "idempotency_key"),
            **_as_form(answers)}
    return web.post(f"/p/surveys/{instance.id}", data=data), data


def _count(session: Any, model: Any, *where: Any) -> int:
    session.rollback()
    return session.exec(select(func.count()).select_from(model).where(*where)).one()


def _ledger(session: Any, action: str) -> list[AuditEvent]:
    session.rollback()
    return list(session.exec(select(AuditEvent).where(AuditEvent.action == action)).all())


# ---- sign out ------------------------------------------------------------------------------

def test_sign_out_ends_this_session_only(app, smtp, session):
    web, _ = _signed_in(app, smtp, "out@example.org")
    other = TestClient(app, follow_redirects=False)  # a second device, with a new link
    assert other.get(f"/p/login/{fresh_link(other, smtp, 'out@example.org')}").status_code == 303
    home = web.get("/p")
    assert 'action="/p/sign-out"' in home.text and 'id="sign-out"' in home.text
    old = web.cookies["wp_session"]

    out = web.post("/p/sign-out", data={"csrf_token": _csrf(home.text)})
    assert out.status_code == 303 and out.headers["location"] == "/p/signed-out?lang=en"
    assert re.search(r'wp_session=""?;.*Max-Age=0', out.headers["set-cookie"])
    page = web.get(out.headers["location"])
    assert page.status_code == 200 and 'id="signed-out"' in page.text
    assert 'id="sign-out"' not in page.text  # no longer signed in

    # The old cookie value is dead on the pages and in the API; the other device is not.
    replayed = TestClient(app, follow_redirects=False, cookies={"wp_session": old})
    again = replayed.get("/p")
    assert again.status_code == 401 and "text/html" in again.headers["content-type"]
    api = TestClient(app).get("/api/v1/me", headers={"Authorization": f"Bearer {old}"})
    assert api.status_code == 401 and api.json()["error"]["code"] == "unauthorized"
    assert other.get("/p").status_code == 200

    [entry] = _ledger(session, "participant.sign_out")
    assert entry.details == {"credential": "session"} and "@" not in json.dumps(
        [entry.details, entry.old_value, entry.new_value])


def test_sign_out_in_the_participants_language_and_with_an_ended_session(app, smtp):
    web, _ = _signed_in(app, smtp, "raus@example.org", lang="de")
    home = web.get("/p")
    assert "Abmelden" in home.text
    old = web.cookies["wp_session"]
    out = web.post("/p/sign-out", data={"csrf_token": _csrf(home.text)}, follow_redirects=True)
    assert out.status_code == 200 and "Sie sind abgemeldet" in out.text
    # The old cookie value now gets the "please open your link" page, in German.
    web.cookies.set("wp_session", old)
    again = web.get("/p")
    assert again.status_code == 401 and 'lang="de"' in again.text
    assert "Bitte öffnen Sie den persönlichen Link" in again.text
    # Signing out again with the dead cookie (an old tab) is no error page either.
    stale = TestClient(app, follow_redirects=False, cookies={"wp_session": "no-such-session"})
    again = stale.post("/p/sign-out", data={"csrf_token": csrf_of(stale.get("/help"))})
    assert again.status_code == 303 and again.headers["location"].startswith("/p/signed-out")


def test_sign_out_everywhere_revokes_every_session_and_link(app, smtp, session, clock):
    web, _ = _signed_in(app, smtp, "all@example.org")
    other = TestClient(app, follow_redirects=False)
    assert other.get(f"/p/login/{fresh_link(other, smtp, 'all@example.org')}").status_code == 303
    clock.advance(minutes=1)  # (one new-link email per address and moment)
    link = f"/p/login/{fresh_link(other, smtp, 'all@example.org')}"  # emailed, not yet opened
    settings = web.get("/p/settings")
    assert 'action="/p/sign-out/everywhere"' in settings.text
    out = web.post("/p/sign-out/everywhere", data={"csrf_token": _csrf(settings.text)})
    assert out.status_code == 303 and "everywhere=1" in out.headers["location"]
    assert "wp_session" in out.headers["set-cookie"]
    assert other.get("/p").status_code == 401
    assert TestClient(app).get(link).status_code == 401  # the emailed link is dead too
    [entry] = _ledger(session, "participant.sign_out_everywhere")
    assert entry.details == {"sessions_revoked": 2, "links_revoked": 1, "apis_revoked": 0}


def test_sign_out_through_the_api(client, smtp):
    from tests.support.flows import joined_and_consented

    person = joined_and_consented(client, smtp, "api-out@example.org")
    assert client.post("/api/v1/me/sign-out", headers=person.headers).status_code == 204
    assert client.get("/api/v1/me", headers=person.headers).status_code == 401


# ---- the back button after a submission ----------------------------------------------------

def test_back_and_resubmit_show_the_saved_answers_and_store_once(app, smtp, session):
    web, _ = _signed_in(app, smtp, "back@example.org", lang="de")
    participant = _participant(session, web)
    who5 = _instances(session, participant)["who5"]
    answers = _answers(session, who5, who5_1=4)
    first, data = _page_post(web, who5, answers)
    assert first.status_code == 303 and first.headers["location"] != "/p"

    german = surveys.instrument_of(session, who5)[0].localized("de")
    item = german.items[0]
    label = next(o.label for o in item.options if o.value == 4)
    saved = web.get(f"/p/surveys/{who5.id}")  # the back button
    assert saved.status_code == 200 and 'id="answers-saved"' in saved.text
    assert "Ihre Antworten wurden gespeichert" in saved.text
    assert item.text in saved.text and label in saved.text
    assert 'id="survey-form"' not in saved.text
    assert saved.headers["cache-control"] == "no-store"

    same = web.post(f"/p/surveys/{who5.id}", data=data, follow_redirects=True)
    other_key = web.post(f"/p/surveys/{who5.id}", follow_redirects=True,
                         data=data | {"idempotency_key": "another-key-123", "who5_1": "0"})
    for again in (same, other_key):
        assert again.status_code == 200 and 'id="answers-saved"' in again.text
        assert again.url.path == f"/p/surveys/{who5.id}"
        assert "Idempotency" not in again.text and label in again.text
    assert _count(session, SurveyResponse, SurveyResponse.instance_id == who5.id) == 1


def test_survey_form_is_not_kept_in_the_history_cache(app, smtp, session):
    web, _ = _signed_in(app, smtp, "nocache@example.org")
    who5 = _instances(session, _participant(session, web))["who5"]
    assert web.get(f"/p/surveys/{who5.id}").headers["cache-control"] == "no-store"


# ---- the thank-you page --------------------------------------------------------------------

def _answer_all_but(web: TestClient, session: Any, participant: Participant, last: str
                    ) -> SurveyInstance:
    open_now = _instances(session, participant)
    assert set(open_now) <= set(BASELINE) and last in open_now
    for key, instance in open_now.items():
        if key != last:
            _submit_api(web, instance, _answers(session, instance))
    return open_now[last]


def _localtime(moment: Any, zone: str, lang: str) -> str:
    return TEMPLATES.env.from_string("{{ m | localtime(z) }}").render(m=moment, z=zone,
                                                                    lang=lang)


def test_the_last_questionnaire_of_a_set_leads_to_the_thank_you_page(app, smtp, session,
                                                                      clock):
    web, _ = _signed_in(app, smtp, "thanks@example.org")
    participant = _participant(session, web)
    open_now = _instances(session, participant)
    # Not the last of the set: on to the next questionnaire, no thank-you yet.
    first, _ = _page_post(web, open_now["baseline"], _answers(session, open_now["baseline"]))
    assert first.status_code == 303 and first.headers["location"].startswith("/p/surveys/")
    assert not first.headers["location"].endswith("/thanks")
    last = _answer_all_but(web, session, participant, "ai_dependence")

    done, _ = _page_post(web, last, _answers(session, last))
    assert done.status_code == 303 and done.headers["location"] == f"/p/surveys/{last.id}/thanks"
    page = web.get(done.headers["location"])
    assert page.status_code == 200 and 'id="thanks"' in page.text
    # 1 baseline + 26 biweekly (days 14..364) + 13 monthly (days 28..364) in the study file
    assert "You have completed 1 of 40 questionnaire sets." in page.text
    assert "This is week 1 of 52 of the study." in page.text
    session.rollback()
    upcoming = scheduling.next_occasion(session, participant, now=clock.now)
    assert upcoming is not None and upcoming.schedule_entry == "biweekly"
    assert _localtime(upcoming.scheduled_at, participant.timezone, "en") in page.text
    # Reloading the thank-you page shows it again.
    assert web.get(f"/p/surveys/{last.id}/thanks").status_code == 200


def test_thank_you_page_is_not_shown_for_an_unfinished_set(app, smtp, session):
    web, _ = _signed_in(app, smtp, "unfinished@example.org")
    participant = _participant(session, web)
    who5 = _instances(session, participant)["who5"]
    _page_post(web, who5, _answers(session, who5))
    early = web.get(f"/p/surveys/{who5.id}/thanks")
    assert early.status_code == 303 and early.headers["location"] == f"/p/surveys/{who5.id}"
    stranger, _ = _signed_in(app, smtp, "stranger@example.org")
    assert stranger.get(f"/p/surveys/{who5.id}/thanks").status_code == 404  # not theirs


def test_crisis_page_comes_first_and_continues_to_the_thank_you_page(app, smtp, session):
    web, _ = _signed_in(app, smtp, "crisis-thanks@example.org")
    participant = _participant(session, web)
    phq9 = _answer_all_but(web, session, participant, "phq9")
    shown, _ = _page_post(web, phq9, _answers(session, phq9, phq9_9=1))
    assert shown.status_code == 200 and 'class="crisis"' in shown.text
    assert f'href="/p/surveys/{phq9.id}/thanks"' in shown.text
    assert web.get(f"/p/surveys/{phq9.id}/thanks").status_code == 200


# ---- download my data ----------------------------------------------------------------------

def _download(web: TestClient, name: str):  # type: ignore[no-untyped-def]
    response = web.get(f"/p/data/{name}")
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["cache-control"] == "no-store"
    return response


def test_download_my_data_as_json_and_csv_holds_mine_and_nothing_of_others(app, smtp, session):
    mine, _ = _signed_in(app, smtp, "mine@example.org")
    theirs, _ = _signed_in(app, smtp, "theirs@example.org")
    me, them = _participant(session, mine), _participant(session, theirs)
    my_who5 = _instances(session, me)["who5"]
    their_who5 = _instances(session, them)["who5"]
    _page_post(mine, my_who5, _answers(session, my_who5, who5_1=5))
    _page_post(theirs, their_who5, _answers(session, their_who5, who5_1=1))

    page = mine.get("/p/data")
    assert page.status_code == 200 and 'href="/p/data/my-data.json"' in page.text
    assert 'id="data-link"' in mine.get("/p").text and 'id="data-link"' in mine.get(
        "/p/settings").text

    raw = _download(mine, "my-data.json")
    assert raw.headers["content-type"].startswith("application/json")
    data = raw.json()
    assert data["contact"]["email"] == "mine@example.org"
    assert data["participant"]["status"] == "active" and data["participant"]["timezone"]
    [record] = data["consent_records"]
    assert record["signature_name"] == "Account Tester" and all(
        s["text"] for s in record["statements"])
    [response] = data["responses"]
    assert response["instance_id"] == my_who5.id and response["scores"]["raw"] is not None
    first = response["answers"][0]
    assert (first["item"], first["value"]) == ("who5_1", 5) and first["question"]
    assert {e["action"] for e in data["audit_log"]} >= {"consent.sign", "response.store"}
    assert any(i["instance_id"] == my_who5.id for i in data["schedule"])
    text = raw.text
    for foreign in ("theirs@example.org", their_who5.id, them.id, me.id):
        assert foreign not in text  # nobody else's data, and not even my internal id

    archive = zipfile.ZipFile(io.BytesIO(_download(mine, "my-data.zip").content))
    tables = {name: list(csv.DictReader(io.StringIO(archive.read(name).decode("utf-8-sig"))))
              for name in archive.namelist()}
    assert {"participant.csv", "contact.csv", "answers.csv", "audit_log.csv"} <= set(tables)
    assert tables["contact.csv"][0]["email"] == "mine@example.org"
    assert {row["instance_id"] for row in tables["answers.csv"]} == {my_who5.id}
    assert len(tables["answers.csv"]) == len(response["answers"])
    assert "theirs@example.org" not in json.dumps(tables)

    downloads = _ledger(session, "participant.data_download")
    assert [d.details for d in downloads] == [{"format": "json", "via": "web"},
                                              {"format": "csv", "via": "web"}]
    assert not any("@" in json.dumps(d.details) for d in downloads)


def test_a_signed_out_cookie_cannot_download(app, smtp):
    web, _ = _signed_in(app, smtp, "gone@example.org")
    old = web.cookies["wp_session"]
    web.post("/p/sign-out", data={"csrf_token": _csrf(web.get("/p").text)})
    replayed = TestClient(app, follow_redirects=False, cookies={"wp_session": old})
    for name in ("my-data.json", "my-data.zip"):
        assert replayed.get(f"/p/data/{name}").status_code == 401
    assert TestClient(app, follow_redirects=False).get("/api/v1/me/data", headers={
        "Authorization": f"Bearer {old}"}).status_code == 401


def test_api_download_before_withdrawal_and_nothing_after(client, smtp, session):
    from tests.support.flows import joined_and_consented

    person = joined_and_consented(client, smtp, "api-data@example.org")
    before = client.get("/api/v1/me/data", headers=person.headers)
    assert before.status_code == 200 and before.headers["cache-control"] == "no-store"
    assert before.json()["contact"]["email"] == "api-data@example.org"
    started = client.post("/api/v1/me/withdrawal", json={"scope": "stop_contact"},
                          headers=person.headers).json()
    client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                json={"confirm_token": started["confirm_token"]}, headers=person.headers)
    # Withdrawal ended every credential: the token opens nothing any more.
    after = client.get("/api/v1/me/data", headers=person.headers)
    assert after.status_code == 401
    assert [d.details["via"] for d in _ledger(session, "participant.data_download")] == ["api"]


def test_a_completed_participant_is_not_offered_a_pause(app, smtp, session):
    web, _ = _signed_in(app, smtp, "done@example.org")
    assert 'action="/p/settings/pause"' in web.get("/p/settings").text
    participant = session.exec(select(Participant)).one()
    participant.status = "completed"  # as the retention job marks it when the schedule ended
    session.add(participant)
    session.commit()
    page = web.get("/p/settings")
    assert page.status_code == 200 and 'action="/p/settings/pause"' not in page.text
