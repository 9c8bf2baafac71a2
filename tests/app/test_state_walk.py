"""Every participant state over every participant route: what each person may see and do.

One app and database per backend; each state is made once, through the real routes (join,
consent, decline, pause, withdraw, a new consent version that asks everyone to sign again, the
schedule's end). Then every (state, route, method) is sent and checked against EXPECT: the
status, for refusals the error code (JSON body or the error page's data-code) or where the page
sends the person, and for every refusal or bad input that nothing was written. A route that is
not in EXPECT fails test_every_participant_route_has_expectations.

Probes that are allowed are made harmless where the route allows it (a body that fails
validation after the gate: reaching validation shows the gate let the request through); the few
that change something (pause, resume, sign-out) are undone after they answered.
"""

from __future__ import annotations

import html
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from app.audit.models import AuditEvent
from app.auth import service as auth
from app.auth.models import ParticipantCredential
from app.config import Settings
from app.consent import service as consent
from app.consent.models import ConsentRecord, Withdrawal
from app.i18n import translator
from app.main import create_app
from app.notify.models import OutboxMessage
from app.participants import erasure
from app.participants import service as participants
from app.participants.models import Contact, Participant
from app.scheduling.dispatcher import tick
from app.studies import service as studies
from app.surveys.models import SurveyResponse
from tests.app.test_route_guards import _api_routes
from tests.support.clock import Clock
from tests.support.dbview import observer_engine
from tests.support.flows import STUDY, consent_body, fresh_link, join
from tests.support.smtp import SMTPServer
from tests.support.studyfiles import StudyCopy

NEW_VERSION = "2.0"  # the amendment every consented person must sign again
STATES = ("visitor", "joined", "declined", "active", "paused", "reconsent", "completed",
          "withdrawn_stop", "withdrawn_delete")
GONE = ("visitor", "withdrawn_stop", "withdrawn_delete")  # no credential that opens anything
SIGNED_IN = tuple(s for s in STATES if s not in GONE)
BOGUS_ID = 987654
BOGUS_UUID = "00000000-0000-4000-8000-000000000000"
BOGUS_TOKEN = "not-a-real-token-0123456789abcdef"
INELIGIBLE = translator("en")("ineligible.heading")


# ---- what each state may do on each route --------------------------------------------------

@dataclass(frozen=True)
class Expect:
    status: int
    code: str | None = None  # error code: the JSON error body's, or the error page's data-code
    location: str | None = None  # a redirect's target (prefix)
    gate: bool = False  # a redirect that refuses (to the consent form, home): writes nothing
    present: tuple[str, ...] = ()  # text the page must show
    absent: tuple[str, ...] = ()  # text the page must not show
    restore: str | None = None  # undo what an allowed probe changed: "credentials", "status"


def ok(status: int = 200, **kw: Any) -> Expect:
    return Expect(status, **kw)


def to(location: str, **kw: Any) -> Expect:
    """An allowed redirect."""
    return Expect(303, location=location, **kw)


def gate_to(location: str) -> Expect:
    """A refusal that sends the person elsewhere (pages do that instead of a bare 403)."""
    return Expect(303, location=location, gate=True)


def no(status: int, code: str) -> Expect:
    return Expect(status, code=code)


UNAUTHORIZED = no(401, "unauthorized")


def everyone(expect: Expect) -> dict[str, Expect]:
    return dict.fromkeys(STATES, expect)


def signed_in(expect: Expect, **others: Expect) -> dict[str, Expect]:
    """Anyone with a live credential; visitors and withdrawn people (whose credentials all
    ended) get 401."""
    return {**dict.fromkeys(GONE, UNAUTHORIZED), **dict.fromkeys(SIGNED_IN, expect), **others}


def api_gated(expect: Expect, **others: Expect) -> dict[str, Expect]:
    """Study data through the API: only with consent on the current version."""
    return signed_in(expect, **{"joined": no(403, "consent_required"),
                                "declined": no(403, "consent_required"),
                                "reconsent": no(403, "reconsent_required"), **others})


def page_gated(expect: Expect, refused: Expect = gate_to("/p/consent"),
               **others: Expect) -> dict[str, Expect]:
    """Study pages: only with consent on the current version; others go to the consent form."""
    return signed_in(expect, **{"joined": refused, "declined": refused, "reconsent": refused,
                                **others})


def decline_body(person: Someone) -> dict[str, Any]:
    """A decline of the current version; for someone who may still decide (joined), a
    signature without a name (refused as incomplete) so the walk leaves them undecided."""
    if person.state == "joined":
        return consent_body(version=NEW_VERSION, signature_name=None)
    return consent_body(version=NEW_VERSION, decision="decline", signature_name=None,
                        statements=[])


def decline_form(person: Someone) -> dict[str, Any]:
    if person.state == "joined":
        return {"version": NEW_VERSION, "language": "en", "decision": "consent"}
    return {"version": NEW_VERSION, "language": "en", "decision": "decline"}


def withdrawal_scope(person: Someone) -> str:
    """A scope that does not exist (refused after the gate, so nothing starts), except for
    someone who declined: a real one, which must be refused."""
    return "stop_contact" if person.state == "declined" else "not-a-scope"


@dataclass(frozen=True)
class Probe:
    expect: dict[str, Expect]
    body: Any = None  # JSON (API) or form fields (pages, CSRF added); or a function of the person
    params: Callable[[Someone], dict[str, Any]] | None = None  # path parameters
    headers: dict[str, str] = field(default_factory=dict)


NO_DECLINE = ('value="decline"',)
WITHDRAW_INSTEAD = ('id="withdraw-instead"',)
CONSENT_FORM = page_gated(ok(absent=NO_DECLINE, present=WITHDRAW_INSTEAD),
                          joined=ok(present=NO_DECLINE), declined=to("/p/consent/records/"),
                          reconsent=ok(absent=NO_DECLINE, present=WITHDRAW_INSTEAD))
REFUSED_DECLINE_PAGE = Expect(409, absent=NO_DECLINE)

EXPECT: dict[tuple[str, str], Probe] = {
    # ---- public: the same for everyone, a credential or not --------------------------------
    ("GET", "/"): Probe(everyone(to(f"/join/{STUDY}"))),
    ("GET", "/join"): Probe(everyone(to(f"/join/{STUDY}"))),
    ("GET", "/join/{key}"): Probe(everyone(ok())),
    ("POST", "/join/{key}"): Probe(everyone(ok(present=(INELIGIBLE,))), body={
        "email": "walk-ineligible@example.org", "timezone": "UTC",
        "screening_adult": "no", "screening_uses_ai_chat": "yes"}),
    ("GET", "/help"): Probe(everyone(ok())),
    ("GET", "/p/signed-out"): Probe(everyone(ok())),
    ("POST", "/p/language"): Probe(everyone(Expect(303)), body={"language": "en", "next": "/help"}),
    ("GET", "/p/email/undo/{token}"): Probe(everyone(ok())),
    ("POST", "/p/email/undo/{token}"): Probe(everyone(ok(404))),
    # An unsubscribe token is a keyed hash of one person, not a credential: a made-up one finds
    # nobody, whoever sends it, and changes nothing (tests/app/notify/test_unsubscribe.py walks
    # the real tokens, the withdrawn's included).
    ("GET", "/p/unsubscribe/{token}"): Probe(everyone(Expect(404)),
                                            params=lambda p: {"token": BOGUS_TOKEN}),
    ("POST", "/p/unsubscribe/{token}"): Probe(everyone(Expect(404)),
                                             body={"List-Unsubscribe": "One-Click"},
                                             params=lambda p: {"token": BOGUS_TOKEN}),
    ("GET", "/demo/mailbox"): Probe(everyone(no(404, "not_found"))),  # demo installations only
    ("GET", "/api/v1/studies/{key}"): Probe(everyone(ok())),
    ("POST", "/api/v1/studies/{key}/enrollments"): Probe(everyone(ok(202)), body={
        "email": "walk-ineligible@example.org", "screening": {"adult": False,
                                                              "uses_ai_chat": True}}),
    # A link opens once; the withdrawn try their unused link from before withdrawing.
    ("GET", "/p/login/{token}"): Probe(everyone(no(401, "invalid_link")),
                                       params=lambda p: {"token": p.old_link or BOGUS_TOKEN}),
    ("POST", "/api/v1/session"): Probe(everyone(no(401, "invalid_link")),
                                       body=lambda p: {"link": p.old_link or BOGUS_TOKEN}),
    # Signing out never ends on an error page, whatever the cookie.
    ("POST", "/p/sign-out"): Probe(everyone(to("/p/signed-out")) | dict.fromkeys(
        SIGNED_IN, to("/p/signed-out", restore="credentials"))),

    # ---- pages ---------------------------------------------------------------------------
    ("GET", "/p"): Probe(page_gated(ok())),
    ("GET", "/p/consent"): Probe(CONSENT_FORM),
    # Once consented, a decline is refused (the form of a tab opened before signing).
    ("POST", "/p/consent"): Probe(signed_in(
        REFUSED_DECLINE_PAGE, joined=ok(422), declined=to("/p/consent/records/", gate=True)),
        body=decline_form),
    ("GET", "/p/consent/records/{record_id}"): Probe(signed_in(
        ok(), joined=no(404, "not_found"))),
    ("POST", "/p/consent/records/{record_id}/email"): Probe(signed_in(
        to("/p/consent/records/"), joined=no(404, "not_found"))),
    # Leaving is withdrawing; someone who declined has nothing to withdraw from.
    ("GET", "/p/withdraw"): Probe(signed_in(
        ok(), declined=to("/p/consent/records/", gate=True))),
    ("POST", "/p/withdraw"): Probe(signed_in(ok(422), declined=no(409, "declined")),
                                   body=lambda p: {"scope": withdrawal_scope(p)}),
    ("POST", "/p/withdraw/confirm"): Probe(signed_in(no(404, "not_found")), body={
        "withdrawal_id": str(BOGUS_ID), "confirm_token": BOGUS_TOKEN}),
    ("GET", "/p/settings"): Probe(page_gated(ok())),
    ("POST", "/p/settings/pause"): Probe(page_gated(
        to("/p/settings?done=paused", restore="status"),
        completed=no(422, "invalid_state")), body={"action": "pause"}),
    ("POST", "/p/settings/preferences"): Probe(page_gated(to("/p/settings?done=preferences"))),
    ("POST", "/p/settings/email"): Probe(page_gated(ok(422)), body={"email": "not-an-address"}),
    ("GET", "/p/email/confirm/{token}"): Probe(page_gated(ok())),
    ("POST", "/p/email/confirm/{token}"): Probe(page_gated(ok(404))),
    ("GET", "/p/surveys/{instance_id}"): Probe(page_gated(ok(), refused=gate_to("/p"))),
    ("POST", "/p/surveys/{instance_id}"): Probe(page_gated(
        ok(422), refused=gate_to("/p"), completed=no(409, "survey_expired")),
        body={"idempotency_key": "walk-probe-0001"}),
    ("GET", "/p/surveys/{instance_id}/thanks"): Probe(page_gated(
        to("/p/surveys/"), refused=gate_to("/p"))),
    ("GET", "/p/feedback"): Probe(page_gated(ok())),
    ("GET", "/p/data"): Probe(signed_in(ok())),
    ("GET", "/p/data/my-data.json"): Probe(signed_in(ok())),
    ("GET", "/p/data/my-data.zip"): Probe(signed_in(ok())),
    ("POST", "/p/sign-out/everywhere"): Probe(signed_in(
        to("/p/signed-out", restore="credentials"))),

    # ---- the JSON API --------------------------------------------------------------------
    ("GET", "/api/v1/me"): Probe(signed_in(ok())),
    ("GET", "/api/v1/me/consent/document"): Probe(signed_in(ok())),
    ("POST", "/api/v1/me/consent"): Probe(signed_in(
        no(409, "already_consented"), joined=no(422, "signature_required"),
        declined=no(409, "declined")), body=decline_body),
    ("GET", "/api/v1/me/consent/records"): Probe(signed_in(ok())),
    ("GET", "/api/v1/me/consent/records/{record_id}"): Probe(signed_in(
        ok(), joined=no(404, "not_found"))),
    ("GET", "/api/v1/me/consent/records/{record_id}/copy.pdf"): Probe(signed_in(
        ok(), joined=no(404, "not_found"))),
    ("POST", "/api/v1/me/consent/records/{record_id}/email"): Probe(signed_in(
        ok(202), joined=no(404, "not_found"), declined=no(409, "nothing_to_send"))),
    ("POST", "/api/v1/me/withdrawal"): Probe(signed_in(
        no(422, "validation_failed"), declined=no(409, "declined")),
        body=lambda p: {"scope": withdrawal_scope(p)}),
    ("POST", "/api/v1/me/withdrawal/{withdrawal_id}/confirm"): Probe(
        signed_in(no(404, "not_found")), body={"confirm_token": BOGUS_TOKEN}),
    ("GET", "/api/v1/me/upcoming"): Probe(api_gated(ok())),
    ("PATCH", "/api/v1/me/settings"): Probe(api_gated(ok()), body={}),
    ("POST", "/api/v1/me/pause"): Probe(api_gated(
        ok(restore="status"), completed=no(422, "invalid_state"))),
    ("POST", "/api/v1/me/resume"): Probe(api_gated(
        ok(restore="status"), completed=no(422, "invalid_state"))),
    ("POST", "/api/v1/me/email"): Probe(api_gated(no(422, "validation_failed")),
                                        body={"email": "not-an-address"}),
    ("POST", "/api/v1/me/email/confirm"): Probe(api_gated(no(404, "not_found")),
                                                body={"token": BOGUS_TOKEN}),
    ("GET", "/api/v1/me/surveys"): Probe(api_gated(ok())),
    ("GET", "/api/v1/me/surveys/{instance_id}"): Probe(api_gated(ok())),
    ("POST", "/api/v1/me/surveys/{instance_id}/responses"): Probe(  # no Idempotency-Key
        api_gated(no(422, "idempotency_key_required")), body={"answers": {}}),
    ("GET", "/api/v1/me/data"): Probe(signed_in(ok())),
    ("POST", "/api/v1/me/api-tokens"): Probe(signed_in(ok(201))),
    ("GET", "/api/v1/me/api-tokens"): Probe(signed_in(ok())),
    ("DELETE", "/api/v1/me/api-tokens/{token_id}"): Probe(signed_in(no(404, "not_found"))),
    ("POST", "/api/v1/me/sign-out"): Probe(signed_in(ok(204, restore="credentials"))),
    ("POST", "/api/v1/me/sign-out-everywhere"): Probe(signed_in(
        ok(restore="credentials"))),
}
PARTICIPANT_PREFIXES = ("/p/", "/join", "/help", "/api/v1/me", "/api/v1/session",
                        "/api/v1/studies", "/demo")


def participant_routes(app: Any) -> set[tuple[str, str]]:
    """Every (method, path) a participant or visitor can call (staff, ops and static files
    are other tests' business)."""
    return {(method, route.path) for route in _api_routes(app.routes) for method in route.methods
            if route.path in ("/", "/p") or route.path.startswith(PARTICIPANT_PREFIXES)}


def test_every_participant_route_has_expectations():
    app = create_app(Settings(database_url="sqlite://", environment="test"))
    routes = participant_routes(app)
    assert len(routes) > 50, "route discovery found too little; FastAPI internals changed?"
    assert routes - set(EXPECT) == set(), "add these routes to EXPECT, for every state"
    assert set(EXPECT) - routes == set(), "these routes are gone: remove them from EXPECT"
    for key, probe in EXPECT.items():
        assert set(probe.expect) == set(STATES), key


# ---- the people --------------------------------------------------------------------------

@dataclass
class Someone:
    state: str
    email: str
    web: TestClient  # their browser (session cookie, when they have one)
    csrf: str | None = None  # the CSRF token their browser's forms carry
    bearer: str | None = None  # their API client's session token
    api_token: str | None = None  # an API token made from that session
    participant_id: str | None = None
    record_id: int | None = None
    instance_id: str | None = None
    old_link: str | None = None  # withdrawn: an emailed link they never used

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer}"} if self.bearer else {}


@dataclass
class World:
    backend: str
    app: Any
    client: TestClient
    engine: Engine
    clock: Clock
    smtp: SMTPServer
    people: dict[str, Someone] = field(default_factory=dict)
    reminders: dict[str, int] = field(default_factory=dict)  # reminder emails from one tick

    def email(self, state: str) -> str:
        return f"walk-{state}-{self.backend}@example.org"


def _copy_sqlite(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          smtp: SMTPServer) -> Iterator[World]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"walk-{backend}")
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "sqlite":
        path = tmp / "walk.db"
        _copy_sqlite(request.getfixturevalue("sqlite_loaded_template"), path)
        url = f"sqlite:///{path}"
    else:
        server = request.getfixturevalue("pg_server")
        name = server.create_database(template=request.getfixturevalue("pg_loaded_template"))
        url = server.url(name)
        drop = lambda: server.drop_database(name)  # noqa: E731
    # Rate limits off: the walk sends hundreds of refused requests from one address on purpose.
    settings = Settings(database_url=url, environment="test", secret_key="test-secret-0123456789",
                        smtp_host="127.0.0.1", smtp_port=smtp.port, notify_channel="smtp",
                        base_url="http://testserver", log_json=False, export_dir=tmp / "exports",
                        rate_limits_enabled=False)
    clock = Clock()
    app = create_app(settings, clock=clock)
    engine = observer_engine(url)
    with TestClient(app) as client:
        world = World(backend, app, client, engine, clock, smtp)
        _make_states(world, tmp)
        yield world
    engine.dispose()
    app.state.engine.dispose()
    drop()


def _csrf(web: TestClient) -> str:
    page = web.get("/help")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "no CSRF field on /help"
    return found.group(1)


def _next_minute(world: World) -> None:
    world.clock.advance(minutes=1)  # two links at one instant to one address are one email


def _join(world: World, state: str) -> Someone:
    """Joined through the API (a session token) and in a browser (a session cookie)."""
    email = world.email(state)
    person = join(world.client, world.smtp, email)
    _next_minute(world)
    web = TestClient(world.app)
    opened = web.get(f"/p/login/{fresh_link(world.client, world.smtp, email)}",
                     follow_redirects=False)
    assert opened.status_code == 303, opened.text
    with Session(world.engine) as s:
        contact = s.exec(select(Contact).where(Contact.email == email)).one()
    _next_minute(world)
    return Someone(state, email, web, bearer=person.token, participant_id=contact.participant_id)


def _sign(world: World, person: Someone, version: str) -> None:
    signed = world.client.post("/api/v1/me/consent", headers=person.headers,
                               json=consent_body(version=version))
    assert signed.status_code == 201, signed.text
    person.record_id = signed.json()["id"]
    surveys = world.client.get("/api/v1/me/surveys", headers=person.headers).json()
    person.instance_id = person.instance_id or surveys[0]["id"]


def _consented(world: World, state: str, version: str = NEW_VERSION) -> Someone:
    person = _join(world, state)
    _sign(world, person, version)
    return person


def _sign_in_again(world: World, person: Someone) -> None:
    """New credentials after the clock passed the end of the first ones."""
    _next_minute(world)
    person.bearer = auth_exchange(world, fresh_link(world.client, world.smtp, person.email))
    _next_minute(world)
    person.web.cookies.clear()
    opened = person.web.get(f"/p/login/{fresh_link(world.client, world.smtp, person.email)}",
                            follow_redirects=False)
    assert opened.status_code == 303, opened.text


def auth_exchange(world: World, link: str) -> str:
    answer = world.client.post("/api/v1/session", json={"link": link})
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


def _withdrawn(world: World, state: str, scope: str) -> Someone:
    person = _consented(world, state)
    made = world.client.post("/api/v1/me/api-tokens", headers=person.headers)
    assert made.status_code == 201, made.text
    person.api_token = made.json()["token"]
    person.old_link = fresh_link(world.client, world.smtp, person.email)  # never used
    started = world.client.post("/api/v1/me/withdrawal", json={"scope": scope},
                                headers=person.headers).json()
    done = world.client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                             json={"confirm_token": started["confirm_token"]},
                             headers=person.headers)
    assert done.status_code == 200, done.text
    return person


def _amend_consent(world: World, tmp: Path) -> None:
    """A new consent version that requires everyone to sign again (and the feedback page on,
    so that route is walked past its 'not in this study' answer)."""
    copy = StudyCopy(tmp)
    copy.add_consent_version(NEW_VERSION, requires_reconsent=True)
    data = copy.read()
    data["participant_feedback"]["enabled"] = True
    copy.write(data)
    with Session(world.engine) as s:
        studies.load_study(s, copy.file, copy.surveys, actor="test")


def _make_states(world: World, tmp: Path) -> None:
    people = world.people
    # completed: consented, then the schedule (364 days) ended and the retention job said so.
    people["completed"] = _consented(world, "completed", version=_shipped_version(world))
    world.clock.advance(days=370)
    with Session(world.engine) as s:
        assert erasure.erase_expired_contacts(s, now=world.clock()).completed == 1
    _sign_in_again(world, people["completed"])
    # reconsent: signed the version that was current, then the study moved to a new one.
    people["reconsent"] = _consented(world, "reconsent", version=_shipped_version(world))
    _amend_consent(world, tmp)
    _sign(world, people["completed"], NEW_VERSION)  # completed, and on the current version

    web = TestClient(world.app)
    screened = web.post(f"/join/{STUDY}", data={
        "csrf_token": _csrf(web), "email": world.email("visitor"), "timezone": "UTC",
        "screening_adult": "no", "screening_uses_ai_chat": "yes"})
    assert screened.status_code == 200 and INELIGIBLE in html.unescape(screened.text)
    people["visitor"] = Someone("visitor", world.email("visitor"), web)
    people["joined"] = _join(world, "joined")
    people["declined"] = declined = _join(world, "declined")
    answer = world.client.post("/api/v1/me/consent", headers=declined.headers, json=consent_body(
        version=NEW_VERSION, decision="decline", signature_name=None, statements=[]))
    assert answer.status_code == 201, answer.text
    declined.record_id = answer.json()["id"]
    people["active"] = _consented(world, "active")
    people["paused"] = _consented(world, "paused")
    assert world.client.post("/api/v1/me/pause", headers=people["paused"].headers
                             ).status_code == 200
    people["withdrawn_stop"] = _withdrawn(world, "withdrawn_stop", "stop_contact")
    people["withdrawn_delete"] = _withdrawn(world, "withdrawn_delete", "delete_data")
    _tick_after_two_days(world)


def _shipped_version(world: World) -> str:
    with Session(world.engine) as s:
        study = studies.get_study(s, STUDY)
        return consent.current_version(s, study.id).version  # type: ignore[arg-type]


STATUS_OF = {"joined": "enrolled", "declined": "declined", "active": "active",
             "paused": "paused", "reconsent": "active", "completed": "completed",
             "withdrawn_stop": "withdrawn", "withdrawn_delete": "withdrawn"}


def _status(world: World, person: Someone) -> str | None:
    if person.participant_id is None:
        return None
    with Session(world.engine) as s:
        return s.get(Participant, person.participant_id).status  # type: ignore[union-attr]


def _tick_after_two_days(world: World) -> None:
    """The baseline's first reminder (48 h) goes to whoever is still being asked."""
    before = {state: len(world.smtp.to(p.email)) for state, p in world.people.items()}
    world.clock.advance(hours=49)
    tick(world.app.state.engine, world.app.state.settings, world.app.state.channel,
         now=world.clock())
    world.reminders = {state: len(world.smtp.to(p.email)) - before[state]
                       for state, p in world.people.items()}


# ---- sending a probe ---------------------------------------------------------------------

def _counts(world: World) -> tuple[Any, ...]:
    """What a refused request must not change: records, answers, withdrawals, the ledger,
    messages, credentials (and revocations), addresses and every participant's status."""
    counts = [select(func.count()).select_from(model).scalar_subquery()
              for model in (ConsentRecord, SurveyResponse, Withdrawal, AuditEvent,
                            OutboxMessage, ParticipantCredential, Contact)]
    revoked = select(func.count()).select_from(ParticipantCredential).where(
        col(ParticipantCredential.revoked_at).is_not(None)).scalar_subquery()
    with Session(world.engine) as s:
        row = s.exec(select(*counts, revoked)).one()
        statuses = s.exec(select(Participant.id, Participant.status)).all()
    return (*row, frozenset(statuses))


def _path(template: str, person: Someone, probe: Probe) -> str:
    values = {"key": STUDY, "record_id": person.record_id or BOGUS_ID,
              "instance_id": person.instance_id or BOGUS_UUID, "withdrawal_id": BOGUS_ID,
              "token_id": BOGUS_ID, "token": BOGUS_TOKEN}
    if probe.params:
        values |= probe.params(person)
    return template.format(**values)


def _send(world: World, person: Someone, method: str, template: str, probe: Probe,
          bearer: str | None) -> Any:
    body = probe.body(person) if callable(probe.body) else probe.body
    path = _path(template, person, probe)
    if template.startswith("/api/"):
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return world.client.request(method, path, json=body, headers=headers | probe.headers)
    data = None
    if method == "POST":
        person.csrf = person.csrf or _csrf(person.web)
        data = {"csrf_token": person.csrf, **(body or {})}
    return person.web.request(method, path, data=data, follow_redirects=False)


def _problems(response: Any, expect: Expect) -> list[str]:
    found = []
    if response.status_code != expect.status:
        found.append(f"status {response.status_code}, expected {expect.status}")
    if expect.code is not None:
        code = _error_code(response)
        if code != expect.code:
            found.append(f"code {code!r}, expected {expect.code!r}")
    if expect.location is not None:
        location = response.headers.get("location", "")
        if not location.startswith(expect.location):
            found.append(f"to {location!r}, expected {expect.location!r}")
    text = html.unescape(response.text)
    found += [f"shows {shown!r}" for shown in expect.absent if shown in text]
    found += [f"lacks {wanted!r}" for wanted in expect.present if wanted not in text]
    return found


def _error_code(response: Any) -> str | None:
    if response.headers.get("content-type", "").startswith("application/json"):
        error = response.json().get("error") if isinstance(response.json(), dict) else None
        return error.get("code") if error else None
    found = re.search(r'data-code="([^"]+)"', response.text)
    return found.group(1) if found else None


def _restore(world: World, person: Someone, what: str) -> None:
    now = world.clock()
    with Session(world.engine) as s:
        if what == "status":
            participant = s.get(Participant, person.participant_id)
            participants.set_paused(s, participant, person.state == "paused", now=now)  # type: ignore[arg-type]
            return
        # signed out: give them a live session again, as signing in anew would
        ttl = timedelta(hours=world.app.state.settings.session_ttl_hours)
        if person.participant_id is None:
            return
        person.bearer = auth.issue_participant_token(s, person.participant_id, "session", ttl,
                                                     now=now)
        cookie = auth.issue_participant_token(s, person.participant_id, "session", ttl, now=now)
        s.commit()
    person.web.cookies.set("wp_session", cookie)
    person.csrf = None  # a new session may come with a new CSRF token


def walk(world: World, state: str, credential: str = "session") -> list[str]:
    """Send every probe as `state`; the list of every way the answers differ from EXPECT."""
    person = world.people[state]
    problems = []
    for (method, template), probe in EXPECT.items():
        if credential == "api" and not template.startswith("/api/"):
            continue
        expect = probe.expect[state]
        refusal = expect.gate or expect.status >= 400 or state in GONE
        before = _counts(world) if refusal else None
        bearer = person.api_token if credential == "api" else person.bearer
        response = _send(world, person, method, template, probe, bearer)
        label = f"{state} {method} {template}"
        if response.status_code >= 500:
            problems.append(f"{label}: {response.status_code} {response.text[:300]}")
            continue
        problems += [f"{label}: {p}" for p in _problems(response, expect)]
        if refusal and _counts(world) != before:
            problems.append(f"{label}: refused ({response.status_code}) but wrote something")
        if expect.restore and response.status_code < 400:
            _restore(world, person, expect.restore)
        if method != "GET" and (status := _status(world, person)) != STATUS_OF.get(state):
            problems.append(f"{label}: changed the status to {status}")
            _restore(world, person, "status")
    return problems


@pytest.mark.parametrize("state", STATES)
def test_walk(world: World, state: str):
    problems = walk(world, state)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("state", ["withdrawn_stop", "withdrawn_delete"])
def test_walk_with_a_withdrawn_persons_api_token(world: World, state: str):
    """An API token made before withdrawing opens nothing either."""
    assert world.people[state].api_token
    problems = walk(world, state, credential="api")
    assert problems == [], "\n".join(problems)


def test_each_state_is_what_it_says(world: World):
    """The states the walk starts from: statuses, and who still holds an address."""
    assert {state: _status(world, p) for state, p in world.people.items()} == {
        "visitor": None, **STATUS_OF}
    with Session(world.engine) as s:
        visitor = s.exec(select(Contact).where(Contact.email == world.email("visitor"))).first()
        assert visitor is None  # screened out: nobody was made
        held = {state: s.get(Contact, p.participant_id) is not None
                for state, p in world.people.items() if p.participant_id}
    # a decline erases the address at once, a withdrawal of either scope too
    assert held == {"joined": True, "declined": False, "active": True, "paused": True,
                    "reconsent": True, "completed": True, "withdrawn_stop": False,
                    "withdrawn_delete": False}
    me = world.client.get("/api/v1/me", headers=world.people["reconsent"].headers).json()
    assert (me["needs_reconsent"], me["consent_current_version"]) == (True, NEW_VERSION)


def test_withdrawal_ended_every_credential(world: World):
    """Links, sessions and API tokens of the withdrawn: every one revoked (the walk shows
    each kind answering 401)."""
    with Session(world.engine) as s:
        for state in ("withdrawn_stop", "withdrawn_delete"):
            kinds = s.exec(select(ParticipantCredential.kind, ParticipantCredential.revoked_at)
                           .where(ParticipantCredential.participant_id
                                  == world.people[state].participant_id)).all()
            assert {kind for kind, _ in kinds} == {"link", "session", "api"}, state
            assert all(revoked is not None for _, revoked in kinds), state


def test_only_people_still_being_asked_get_reminders(world: World):
    """Two days after signing, the baseline's reminder goes to the active person only: not
    while paused, not while the consent form waits to be signed again, never after a decline
    or a withdrawal, nor once the schedule has ended."""
    assert world.reminders == {**dict.fromkeys(world.reminders, 0), "active": 1}


def test_the_irb_log_shows_no_decline_by_anyone_who_consented(world: World):
    """Declines sent by every consented state, through the API and from the page, are
    refused; of the walk's people, the IRB's consent log (and the ledger) hold one decline:
    the person who never consented."""
    client = world.client
    for state in ("active", "paused", "reconsent", "completed"):
        person = world.people[state]
        for body in (decline_body(person), consent_body(decision="decline", signature_name=None,
                                                        statements=[])):  # old version too
            refused = client.post("/api/v1/me/consent", json=body, headers=person.headers)
            assert refused.status_code == 409, (state, refused.text)
            assert refused.json()["error"]["code"] == "already_consented"
        page = person.web.post("/p/consent", data={"csrf_token": _csrf(person.web),
                                                   **decline_form(person)})
        assert page.status_code == 409 and 'value="decline"' not in page.text, state
    with Session(world.engine) as s:
        irb = {"Authorization": "Bearer " + auth.add_staff(
            s, f"walk-irb-{uuid.uuid4().hex[:8]}", "irb", now=world.clock())}
    log = client.get("/api/v1/irb/consent-log", headers=irb)
    assert log.status_code == 200, log.text
    secret = world.app.state.settings.secret_key
    pseudonym = {state: consent.irb_pseudonym(secret, p.participant_id)
                 for state, p in world.people.items() if p.participant_id}
    actions: dict[str, list[str]] = {}
    for entry in log.json():
        actions.setdefault(entry["pseudonym"], []).append(entry["action"])
    assert [state for state, p in pseudonym.items() if "decline" in actions.get(p, [])] \
        == ["declined"]
    assert actions[pseudonym["declined"]] == ["decline"]
    assert actions[pseudonym["active"]] == ["consent"]
    assert actions[pseudonym["reconsent"]] == ["consent"]  # signed 1.1, asked to sign 2.0
    assert actions[pseudonym["completed"]] == ["consent", "consent"]
    assert actions[pseudonym["withdrawn_stop"]] == ["consent", "withdraw"]
    with Session(world.engine) as s:
        declines = s.exec(select(AuditEvent.actor).where(
            AuditEvent.action == "consent.decline")).all()
    people = {f"participant:{p.participant_id}": state for state, p in world.people.items()}
    assert [people[actor] for actor in declines if actor in people] == ["declined"]


def test_a_withdrawal_asked_for_before_declining_is_not_confirmed_after(world: World):
    """Someone who declined never took part: a withdrawal they asked for while still
    undecided stays unconfirmed (no "withdraw" in the IRB log), and nothing is written."""
    _next_minute(world)
    person = _join(world, "undecided")
    started = world.client.post("/api/v1/me/withdrawal", json={"scope": "delete_data"},
                                headers=person.headers)
    assert started.status_code == 201, started.text
    declined = world.client.post("/api/v1/me/consent", headers=person.headers, json=consent_body(
        version=NEW_VERSION, decision="decline", signature_name=None, statements=[]))
    assert declined.status_code == 201, declined.text
    before = _counts(world)
    confirm = world.client.post(
        f"/api/v1/me/withdrawal/{started.json()['withdrawal_id']}/confirm",
        json={"confirm_token": started.json()["confirm_token"]}, headers=person.headers)
    assert confirm.status_code == 409 and confirm.json()["error"]["code"] == "declined"
    assert _counts(world) == before
    assert _status(world, person) == "declined"
