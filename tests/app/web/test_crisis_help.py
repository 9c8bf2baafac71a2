"""Crisis help for every offered country: the study file's lines, the crisis page after PHQ-9
item 9 > 0, the public /help page, the header link and the line at the end of every email."""

from __future__ import annotations

import re
from datetime import date

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from app.config import PROJECT_ROOT
from app.scheduling.dispatcher import tick
from app.studies import crisis
from app.studies import service as studies
from app.studies.models import ProtocolVersion, Study
from tests.support.flows import STUDY, fresh_link, join, joined_and_consented
from tests.support.studyfiles import StudyCopy

LANGUAGES = ["en", "de", "pt-BR", "zh-CN"]
SURVEYS = PROJECT_ROOT / "surveys"
STUDY_FILE = SURVEYS / "studies" / f"{STUDY}.yaml"
BASELINE = {"age_band": "age_25_34", "gender": "woman", "living_situation": "alone",
            "ai_use_since": "year_2024", "ai_personal_use_since": "year_2024",
            "gpt4o_before_retirement": "daily", "gpt4o_after_retirement": "never"}
PHQ9_RISK = {f"phq9_{i}": "1" for i in range(1, 9)} | {"phq9_9": "2"}


def _shipped() -> tuple[dict, dict]:  # type: ignore[type-arg]
    """The shipped study file and its instruments, as `study load` reads them."""
    data = studies.read_study_file(STUDY_FILE, SURVEYS)
    return data, studies.resolve_instruments(STUDY_FILE, data, SURVEYS)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def _text(html: str) -> str:
    """The page's visible text (tags dropped), so a number in an attribute does not count."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# ---- the study file ---------------------------------------------------------------------------

def test_every_offered_country_has_a_complete_line_and_emergency_numbers() -> None:
    data, instruments = _shipped()
    config = data["crisis_resources"]
    offered = crisis.offered_countries(config, instruments)  # read from the question's options
    source = config["country_from"]
    options = next(i for i in instruments[source["instrument"]]["definition"]["items"]
                   if i["id"] == source["item"])["options"]
    assert len(offered) == len(options) - len(source["not_a_country"]) >= 28
    assert {"jp", "cn", "hk", "tw", "in", "pt", "us", "de", "br"} <= set(offered)
    for code in offered:
        entry = config["countries"].get(code)
        assert entry is not None, f"{code}: no crisis line"
        assert entry["emergency"] and all(re.fullmatch(r"[0-9]{2,5}", e["number"])
                                          for e in entry["emergency"]), code
        for line in entry["lines"]:
            assert line["name"]["en"].strip(), code
            assert line.get("phone") or line.get("url"), code
            assert line.get("url", "https://").startswith("https://"), code
            assert line["hours"] == "24/7" or line["hours"]["en"], code
            assert re.match(r"https?://[^/]+\.[a-z]+/", line["source"] + "/"), code
            assert date.fromisoformat(line["checked"]) == date(2026, 12, 3), code
    for code in source["not_a_country"]:
        assert code not in config["countries"]


def test_the_emergency_number_follows_the_country_not_the_language() -> None:
    data, _ = _shipped()
    config = data["crisis_resources"]
    for language in LANGUAGES:
        us = crisis.for_country(config, "us", language)
        assert us is not None and [e.number for e in us.emergency] == ["911"]
        assert us.lines[0].phone == "988" and us.lines[0].tel == "988"
    japan = crisis.for_country(config, "jp", "zh-CN")
    assert japan is not None and japan.name == "日本"
    assert japan.lines[0].tel == "0120279338"
    assert crisis.for_country(config, "other", "de") is None


# ---- study load refuses incomplete or unsafe crisis resources ---------------------------------

@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["countries"]["jp"]["lines"][0].update(url="javascript:alert(1)"),
     "must be an https:// address"),
    (lambda c: c["countries"]["pt"]["lines"][1].update(url="data:text/html,<b>x</b>"),
     "must be an https:// address"),
    (lambda c: c["countries"].pop("tw"), "offers tw but there is no crisis line"),
    (lambda c: [c["countries"]["in"]["lines"][0].pop(k) for k in ("phone", "url")
                if k in c["countries"]["in"]["lines"][0]],
     "needs a phone number or an https:// url"),
    (lambda c: c["countries"]["cn"]["lines"][0].pop("source"), "'source' is a required"),
    (lambda c: c["countries"]["hk"].update(emergency=[]), "emergency"),
])
def test_study_load_refuses_bad_crisis_resources_and_stores_nothing(
        tmp_path, session, loaded_study, change, message) -> None:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    data = copy.read()
    change(data["crisis_resources"])
    copy.write(data)
    study = session.exec(select(Study).where(Study.key == STUDY)).one()
    before = studies.protocol_count(session, study.id)  # type: ignore[arg-type]
    with pytest.raises(studies.StudyLoadError) as refused:
        studies.load_study(session, copy.file, copy.surveys, actor="test")
    assert message in str(refused.value) and "crisis_resources" in str(refused.value)
    session.rollback()
    assert studies.protocol_count(session, study.id) == before  # type: ignore[arg-type]


def test_a_country_added_to_the_question_needs_a_line(tmp_path, session, loaded_study) -> None:  # type: ignore[no-untyped-def]
    """The check reads the question's options: a new option without a line is refused."""
    copy = StudyCopy(tmp_path)
    baseline = copy.surveys / "instruments" / "baseline.yaml"
    text = baseline.read_text("utf-8").replace(
        "      - {value: za, label: country_za}\n",
        "      - {value: za, label: country_za}\n      - {value: ke, label: country_ke}\n")
    text = re.sub(r"(\n( +)country_za: [^\n]+)", r"\1\n\2country_ke: \"Kenya\"", text)
    baseline.write_text(text, "utf-8")
    with pytest.raises(studies.StudyLoadError, match="offers ke but there is no crisis line"):
        studies.load_study(session, copy.file, copy.surveys, actor="test")


# ---- the crisis page after PHQ-9 item 9 > 0 ---------------------------------------------------

def _signed_in(app, client, smtp, email: str, language: str) -> tuple[TestClient, dict]:  # type: ignore[no-untyped-def, type-arg]
    person = joined_and_consented(client, smtp, email, language=language)
    listed = client.get("/api/v1/me/surveys", headers=person.headers).json()
    web = TestClient(app)
    link = fresh_link(client, smtp, person)
    assert web.get(f"/p/login/{link}", follow_redirects=False).status_code == 303
    return web, {s["instrument"]: s["id"] for s in listed}


def _answer(web: TestClient, instance_id: str, answers: dict, lang: str):  # type: ignore[no-untyped-def, type-arg]
    page = web.get(f"/p/surveys/{instance_id}")
    assert page.status_code == 200, page.text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
    return web.post(f"/p/surveys/{instance_id}", data={
        "csrf_token": _csrf(page.text), "idempotency_key": key.group(1) if key else "",
        **answers}, follow_redirects=False)


CASES = [  # country, language, its line's number, its emergency numbers, numbers never shown
    ("us", "de", "988", ["911"], ["112", "110"]),
    ("jp", "en", "0120-279-338", ["119", "110"], ["112", "911", "999"]),
    ("cn", "zh-CN", "12356", ["120", "110"], ["112", "911"]),
    ("hk", "zh-CN", "18111", ["999"], ["112", "120", "911"]),
    ("tw", "zh-CN", "1925", ["119", "110"], ["120", "112"]),
    ("in", "en", "14416", ["112"], ["911", "999"]),
    ("pt", "pt-BR", "1411", ["112"], ["192", "190", "188"]),
    ("br", "pt-BR", "188", ["192", "190"], ["112"]),
    ("de", "en", "0800 111 0 111", ["112"], ["911", "999"]),
    ("za", "de", "0800 567 567", ["112", "10177"], ["911"]),
]


@pytest.mark.parametrize(("country", "lang", "line", "emergency", "never"), CASES)
def test_a_participant_sees_their_countrys_line_and_emergency_number(
        app, client, smtp, country, lang, line, emergency, never) -> None:  # type: ignore[no-untyped-def]
    web, surveys = _signed_in(app, client, smtp, f"crisis-{country}@example.org", lang)
    assert _answer(web, surveys["baseline"], BASELINE | {"country": country},
                   lang).status_code == 303
    page = _answer(web, surveys["phq9"], PHQ9_RISK, lang)
    assert page.status_code == 200 and 'class="crisis"' in page.text
    assert f'<html lang="{lang}">' in page.text
    text = _text(page.text)
    first_line = text.index(line)
    assert f'href="tel:{re.sub(r"[^0-9+]", "", line)}"' in page.text  # tappable
    for number in emergency:
        assert f'href="tel:{number}"' in page.text
        assert text.index(number, first_line + len(line)) > first_line  # line first, then these
    for number in never:
        assert not re.search(rf"(?<![0-9]){number}(?![0-9 ])", text), number
    assert text.index("findahelpline.com") > text.index(emergency[-1])  # the directory last
    assert "help.link" not in page.text and "help." not in text  # no missing locale keys


def test_an_unknown_country_gets_the_directory_and_the_generic_advice(app, client, smtp) -> None:  # type: ignore[no-untyped-def]
    from app.i18n import translator

    for lang, country in (("pt-BR", None), ("zh-CN", "other"), ("de", "prefer_not_to_say")):
        web, surveys = _signed_in(app, client, smtp, f"unknown-{lang.lower()}@example.org", lang)
        if country:
            assert _answer(web, surveys["baseline"], BASELINE | {"country": country},
                           lang).status_code == 303
        page = _answer(web, surveys["phq9"], PHQ9_RISK, lang)
        assert page.status_code == 200 and 'class="crisis"' in page.text
        t = translator(lang)
        assert t("help.call_local_emergency") in page.text
        assert 'href="tel:' not in page.text  # no number that might be the wrong one
        assert "https://findahelpline.com" in page.text
        assert f'href="/help?lang={lang}"' in page.text and t("help.full_list") in page.text


def test_the_api_lists_the_country_line_then_its_emergency_number(client, smtp) -> None:  # type: ignore[no-untyped-def]
    person = joined_and_consented(client, smtp, "api-jp@example.org", language="de")
    surveys = {s["instrument"]: s["id"]
               for s in client.get("/api/v1/me/surveys", headers=person.headers).json()}

    def post(instance: str, answers: dict, key: str):  # type: ignore[no-untyped-def, type-arg]
        return client.post(f"/api/v1/me/surveys/{instance}/responses", json={"answers": answers},
                           headers=person.headers | {"Idempotency-Key": key})

    assert post(surveys["baseline"], BASELINE | {"country": "jp"}, "k-base-0001").status_code == 201
    risky = post(surveys["phq9"], {k: int(v) for k, v in PHQ9_RISK.items()}, "k-phq9-0001")
    resources = risky.json()["crisis_resources"]
    assert [r["kind"] for r in resources] == ["line", "emergency", "emergency", "directory",
                                              "directory"]
    assert resources[0]["phone"] == "0120-279-338" and resources[0]["hours"] == "24/7"
    assert [r["phone"] for r in resources[1:3]] == ["119", "110"]
    assert resources[1]["name"] == "Rettungsdienst"  # in the participant's language


# ---- the public help page and the header link -------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_help_page_lists_every_offered_country_for_anyone(app, lang) -> None:  # type: ignore[no-untyped-def]
    from babel import Locale

    data, instruments = _shipped()
    config = data["crisis_resources"]
    page = TestClient(app).get(f"/help?lang={lang}")
    assert page.status_code == 200 and f'<html lang="{lang}">' in page.text
    names = Locale.parse(lang.replace("-", "_")).territories
    for code in crisis.offered_countries(config, instruments):
        assert names[code.upper()] in page.text, code
        first = config["countries"][code]["lines"][0]
        if "phone" in first:
            assert f'href="tel:{re.sub(r"[^0-9+]", "", first["phone"])}"' in page.text, code
    assert "https://findahelpline.com" in page.text
    assert 'aria-current="page"' in page.text  # the header link marks where you are


def test_the_help_page_puts_the_signed_in_participants_country_first(app, client, smtp) -> None:  # type: ignore[no-untyped-def]
    web, surveys = _signed_in(app, client, smtp, "help-kr@example.org", "zh-CN")
    before = _text(web.get("/help").text)
    assert before.index("美国") < before.index("韩国")  # the offered order while unknown
    answered = _answer(web, surveys["baseline"], BASELINE | {"country": "kr"}, "zh-CN")
    assert answered.status_code == 303
    page = web.get("/help")
    assert page.status_code == 200 and '<html lang="zh-CN">' in page.text
    text = _text(page.text)
    assert text.index("韩国") < text.index("美国") and text.index("109") < text.index("988")


def test_every_participant_page_has_the_help_link(app, smtp) -> None:  # type: ignore[no-untyped-def]
    web = TestClient(app)
    link = re.compile(
        r'<header class="top">.*?<a class="helpnow" href="/help\?lang=(?P<lang>[^"]+)"', re.S)

    def check(response, lang: str) -> None:  # type: ignore[no-untyped-def]
        found = link.search(response.text)
        assert found and found.group("lang") == lang, response.url

    join_page = web.get("/join/keep4o-panel?lang=de")
    check(join_page, "de")
    sent = web.post("/join/keep4o-panel?lang=de", data={
        "csrf_token": _csrf(join_page.text), "lang": "de", "email": "pages@example.org",
        "timezone": "Europe/Berlin", "screening_adult": "yes", "screening_uses_ai_chat": "yes"})
    check(sent, "de")  # check-email
    check(web.get("/p/login/not-a-real-token"), "de")  # error page, in the chosen language
    token = smtp.to("pages@example.org")[-1].link().rsplit("/", 1)[1]
    consent_page = web.get(f"/p/login/{token}", follow_redirects=True)
    assert consent_page.url.path == "/p/consent"
    check(consent_page, "de")
    check(web.get("/p/withdraw"), "de")
    check(web.get("/help"), "de")


# ---- every email ends with the help line ------------------------------------------------------

def test_every_email_ends_with_the_help_link(app, client, smtp, clock) -> None:  # type: ignore[no-untyped-def]
    from app.i18n import translator
    from app.notify.render import MESSAGE_KINDS
    from tests.support.flows import consent_body

    smtp.clear()
    base = app.state.settings.base_url
    person = join(client, smtp, "mail-a@example.org", language="pt-BR")  # magic_link
    join(client, smtp, "mail-a@example.org", language="pt-BR")  # already_enrolled
    assert client.post("/api/v1/me/consent", headers=person.headers,
                       json=consent_body()).status_code == 201
    joined_and_consented(client, smtp, "mail-b@example.org", language="zh-CN")
    assert client.post("/api/v1/me/email", json={"email": "mail-new@example.org"},
                       headers=person.headers).status_code == 202  # email_change
    assert client.post("/api/v1/me/email", json={"email": "mail-b@example.org"},
                       headers=person.headers).status_code == 202  # email_change_taken
    confirm = re.search(r"/p/email/confirm/(\S+)", smtp.to("mail-new@example.org")[-1].body)
    assert confirm and client.post("/api/v1/me/email/confirm", json={"token": confirm.group(1)},
                                   headers=person.headers).status_code == 200
    # (email_changed_notice, to mail-a@, which keeps its language)
    engine, settings, channel = app.state.engine, app.state.settings, app.state.channel
    tick(engine, settings, channel, now=clock())  # plans the waves
    clock.advance(hours=49)
    tick(engine, settings, channel, now=clock())  # the baseline's 48-hour reminders
    clock.advance(days=14)
    tick(engine, settings, channel, now=clock())  # the first biweekly wave's invitations
    data, _ = _shipped()
    kinds_seen = set()
    for message in smtp.received:
        language = "zh-CN" if "mail-b@" in message.rcpt_tos[0] else "pt-BR"
        t = translator(language)
        subject = message.message["Subject"]
        kinds_seen |= {kind for kind in MESSAGE_KINDS
                       if t(f"email.{kind}.subject", study=data["title"][language]) == subject}
        line = t("help.email_footer", url=f"{base}/help?lang={language}")
        assert message.body.rstrip().endswith(line), (subject, message.body)
        assert message.body.count("/help?lang=") == 1  # once, as the last line
    assert set(MESSAGE_KINDS) <= kinds_seen, kinds_seen


def test_protocols_keep_the_crisis_block(session, loaded_study) -> None:  # type: ignore[no-untyped-def]
    stored = session.exec(select(ProtocolVersion)).all()[-1].content["study"]
    assert stored["crisis_resources"]["countries"]["jp"]["lines"][0]["phone"] == "0120-279-338"
