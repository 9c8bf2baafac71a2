"""Web hardening (#13 part 5): the security headers on every answer of every route (pages, API,
PDFs, errors, static files), a CSP with a fresh nonce and no inline script or handler in any
page, no-store, HSTS in production only, the API docs off in production, no reflected Host."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session
from starlette.routing import Mount

from app.auth import service as auth
from app.config import Settings
from app.main import create_app
from tests.support.flows import joined_and_consented
from tests.support.pages import csrf_of, signed_in_browser

TEMPLATES = Path(__file__).resolve().parents[3] / "app" / "web" / "templates"
# The policy, written out here (not imported) so that a weakened one fails.
CSP = re.compile(
    r"default-src 'self'; script-src 'self' 'nonce-(?P<nonce>[A-Za-z0-9_-]{22})'; "
    r"style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    r"form-action 'self'; frame-ancestors 'none'")
DOCS = ("/docs", "/redoc")
FIXED = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
         "x-frame-options": "DENY"}
EVIL = "evil.example"


# ---- walking every route ---------------------------------------------------------------------
def every_route(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(method, path template) of every route, routers nested in routers with their prefixes
    (FastAPI >= 0.160 keeps included routers nested), and the static mount."""
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if hasattr(route, "original_router"):
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif isinstance(route, Mount):
                found.append(("GET", prefix + route.path + "/site.css"))
            else:
                found.extend((m, prefix + route.path) for m in sorted(route.methods))

    walk(app.routes, "")
    paths = {p for _, p in found}
    assert len(paths) > 80 and {"/staff/researcher/enrollment", "/api/v1/me", "/p/surveys/"
                                "{instance_id}", "/static/site.css", "/docs"} <= paths, \
        "route discovery found too little; FastAPI internals changed?"
    return found


def _filled(template: str) -> str:
    """Dummy values for path parameters: '1' is a valid int and string (and found nowhere)."""
    return re.sub(r"\{[^}]+\}", "1", template)


def _requests(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Each route with each of its methods (reads first, so that changes come last), plus
    PUT, which no route has (405), and a path no route has (404)."""
    routes = every_route(app)
    paths = sorted({_filled(p) for _, p in routes})
    calls = [(m, _filled(p)) for m, p in routes]
    reads = [c for c in calls if c[0] in ("GET", "HEAD")]
    changes = [c for c in calls if c[0] not in ("GET", "HEAD")]
    odd = [("GET", "/no/such/page"), ("GET", "/api/v1/no-such"),  # 404
           ("GET", "/p/consent/records/abc"), ("GET", "/api/v1/me/consent/records/abc"),  # 422
           ("GET", "/p/"), ("GET", "/static")]  # 307 (Starlette's slash redirects)
    return reads + [("PUT", p) for p in paths] + odd + changes


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def inline_code(html: str, nonce: str | None) -> list[str]:
    """What in a page the CSP would refuse (or we allow nowhere): inline scripts without this
    answer's nonce, event-handler attributes, style attributes, javascript: URLs."""
    parser = _Tags()
    parser.feed(html)
    found = []
    for tag, attrs in parser.tags:
        if tag == "script" and "src" not in attrs and attrs.get("nonce") != nonce:
            found.append("an inline <script> without the nonce")
        found += [f"<{tag} {name}=...>" for name in attrs
                  if name.startswith("on") or name == "style"]
        found += [f"<{tag} {name}={value}>" for name, value in attrs.items()
                  if value and value.strip().lower().startswith("javascript:")]
        if tag == "style":
            found.append("a <style> element")
    return found


def header_problems(response, *, hsts: bool = False) -> list[str]:  # type: ignore[no-untyped-def]
    """What is missing from the security header set of one answer."""
    path, h = response.request.url.path, response.headers
    where = f"{response.request.method} {path} ({response.status_code})"
    problems = [f"{where}: {name} is {h.get(name)!r}" for name, value in FIXED.items()
                if h.get(name) != value]
    csp = h.get("content-security-policy", "")
    if path in DOCS:
        if "frame-ancestors 'none'" not in csp or "object-src 'none'" not in csp:
            problems.append(f"{where}: docs CSP {csp!r}")
    elif not CSP.fullmatch(csp):
        problems.append(f"{where}: CSP {csp!r}")
    if ("strict-transport-security" in h) != hsts:
        problems.append(f"{where}: HSTS {h.get('strict-transport-security')!r}")
    if not path.startswith("/static/") and h.get("cache-control") != "no-store":
        problems.append(f"{where}: Cache-Control {h.get('cache-control')!r}")
    kind = h.get("content-type", "")
    if kind.startswith("application/json") and kind != "application/json; charset=utf-8":
        problems.append(f"{where}: Content-Type {kind!r}")
    if (path.startswith("/api/") and kind.startswith("application/json")
            and not h.get("content-disposition", "").startswith("attachment")):
        problems.append(f"{where}: API answer without Content-Disposition: attachment")
    if h.get("content-type", "").startswith("text/html") and path not in DOCS:
        match = CSP.fullmatch(csp)
        problems += [f"{where}: {p}" for p in inline_code(response.text,
                                                           match and match["nonce"])]
    return problems


def _broken(app) -> None:  # type: ignore[no-untyped-def]
    """A route that fails, for the 500 answers (sent by Starlette's outermost error layer)."""

    def broken() -> None:
        raise RuntimeError("a deliberate bug")

    app.add_api_route("/p/broken", broken)
    app.add_api_route("/api/v1/broken", broken)


def _staff(app, engine, role: str = "admin") -> TestClient:  # type: ignore[no-untyped-def]
    """A staff member's browser, signed in to the pages and holding the API token."""
    with Session(engine) as s:
        token = auth.add_staff(s, f"walker-{role}", role)
    web = TestClient(app, raise_server_exceptions=False,
                     headers={"Authorization": f"Bearer {token}"})
    web.post("/staff/login", data={"csrf_token": csrf_of(web.get("/staff/login")),
                                   "token": token}, follow_redirects=False)
    assert web.get("/staff", follow_redirects=False).status_code == 200
    return web


def _participant(app, client, smtp) -> TestClient:  # type: ignore[no-untyped-def]
    """A participant's browser (session cookie) that also holds an API session token."""
    browser = signed_in_browser(app, smtp, "en")
    person = joined_and_consented(client, smtp, "walker-api@example.org")
    return TestClient(app, raise_server_exceptions=False, cookies=browser.cookies,
                      headers=person.headers)


def test_every_route_answers_with_the_security_headers(settings, clock, loaded_study, client,
                                                       smtp, engine):
    """Anonymous, as a participant (cookie and token) and as staff (pages and API), every
    method of every route, PUT (405) and unknown paths (404), dummy path values (404, 422),
    a failing route (500): each answer has the whole header set, no-store except static
    files, and no HTML answer has an inline script, handler or style. (Rate limits off: the
    walk's hundreds of refusals would otherwise turn into 429s; those are checked below.)"""
    app = _app_with(settings, clock, rate_limits_enabled=False)
    _broken(app)
    problems, statuses = [], set()
    try:
        visitors = [TestClient(app, raise_server_exceptions=False),
                    _participant(app, client, smtp), _staff(app, engine)]
        for visitor in visitors:
            for method, path in _requests(app):
                response = visitor.request(method, path, follow_redirects=False)
                statuses.add(response.status_code)
                problems += header_problems(response)
                if response.status_code >= 500 and "broken" not in path:
                    problems.append(f"{method} {path}: {response.status_code} "
                                    f"{response.text[:200]}")
    finally:
        app.state.engine.dispose()
    assert problems == [], "\n".join(problems)
    # the walk met the answers it is meant to check
    assert {200, 303, 307, 401, 403, 404, 405, 422, 500} <= statuses


def test_rate_limited_answers_get_the_headers_too(client):
    answers = [client.get(f"/p/login/guess-{i}") for i in range(40)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and all(header_problems(a) == [] for a in answers)


def test_static_files_may_be_cached_and_still_get_the_headers(client):
    css = client.get("/static/site.css")
    assert css.status_code == 200 and header_problems(css) == []
    assert "no-store" not in css.headers.get("cache-control", "")
    assert css.headers.get("etag")  # revalidated, not fetched again
    assert header_problems(client.get("/static/no-such.js")) == []


def test_the_nonce_is_new_on_every_answer(client):
    nonces = {CSP.fullmatch(client.get("/help").headers["content-security-policy"])["nonce"]  # type: ignore[index]
              for _ in range(5)}
    assert len(nonces) == 5


def test_participant_pages_pdfs_and_staff_pages_are_not_stored(app, client, smtp, engine):
    web = signed_in_browser(app, smtp, "en")
    pdf = web.get("/api/v1/me/consent/records/1/copy.pdf", headers={"Sec-Fetch-Site":
                                                                      "same-origin"})
    staff = _staff(app, engine, "irb")
    answers = [web.get("/p"), web.get("/p/settings"), web.get("/p/consent/records/1"), pdf,
               web.get("/api/v1/me"), staff.get("/staff/irb/consent-log"),
               staff.get("/api/v1/irb/consent-log")]
    assert pdf.headers["content-type"] == "application/pdf"
    for answer in answers:
        assert answer.status_code == 200, answer.request.url
        assert answer.headers["cache-control"] == "no-store", answer.request.url


def test_no_template_has_inline_script_handler_or_style():
    found = {}
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text("utf-8")
        if "email" in template.parts:
            continue  # emails are not web pages
        bad = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=\s*[\"']|\sstyle\s*="
                         r"|<style|javascript:", text, flags=re.IGNORECASE)
        if bad:
            found[str(template.relative_to(TEMPLATES))] = bad
    assert found == {}


def test_the_survey_page_carries_its_display_conditions_as_data(app, smtp):
    web = signed_in_browser(app, smtp, "en")
    surveys = web.get("/api/v1/me/surveys").json()
    phq9 = next(s["id"] for s in surveys if s["instrument"] == "phq9")
    page = web.get(f"/p/surveys/{phq9}")
    assert page.status_code == 200 and header_problems(page) == []
    assert 'data-conditions="{' in page.text and "WELLPANEL_CONDITIONS" not in page.text


# ---- production: HSTS, API docs --------------------------------------------------------------
def _app_with(settings: Settings, clock, **values: Any):  # type: ignore[no-untyped-def]
    return create_app(Settings(**settings.model_dump() | values), clock=clock)


def test_hsts_only_in_production(settings, clock, loaded_study, client):
    production = _app_with(settings, clock, environment="production")
    try:
        web = TestClient(production, raise_server_exceptions=False)
        for path in ("/help", "/api/v1/me", "/healthz", "/no/such/page", "/static/site.css"):
            answer = web.get(path)
            assert header_problems(answer, hsts=True) == [], path
            assert answer.headers["strict-transport-security"] == "max-age=31536000"
    finally:
        production.state.engine.dispose()
    assert "strict-transport-security" not in client.get("/help").headers


@pytest.mark.parametrize(("environment", "api_docs", "served"), [
    ("production", False, False), ("production", True, True), ("test", False, True),
    ("demo", False, True)])
def test_api_docs_are_off_in_production_unless_configured(settings, clock, loaded_study,
                                                          environment, api_docs, served):
    application = _app_with(settings, clock, environment=environment, api_docs=api_docs)
    try:
        web = TestClient(application)
        for path in ("/docs", "/redoc", "/openapi.json"):
            answer = web.get(path)
            assert answer.status_code == (200 if served else 404), path
            assert header_problems(answer, hsts=environment == "production") == []
        if served:  # FastAPI's inline script runs under this answer's nonce
            docs = web.get("/docs")
            nonce = re.search(r"'nonce-([^']+)'", docs.headers["content-security-policy"])
            assert nonce and f'<script nonce="{nonce.group(1)}">' in docs.text
            assert "<script>" not in docs.text
    finally:
        application.state.engine.dispose()


# ---- the Host header -------------------------------------------------------------------------
def test_a_foreign_host_is_refused_on_every_route(app):
    web = TestClient(app, raise_server_exceptions=False, headers={"Host": EVIL})
    probes = {"/healthz", "/readyz", "/metrics"}  # answered whatever the Host (by address)
    for method, path in _requests(app):
        answer = web.request(method, path, follow_redirects=False)
        if path in probes:
            assert answer.status_code != 400, (method, path)
        else:
            assert answer.status_code == 400, (method, path, answer.status_code)
        assert header_problems(answer) == []
        assert EVIL not in answer.text and EVIL not in str(answer.headers)
    api = web.get("/api/v1/me")
    assert api.json()["error"]["code"] == "invalid_host"
    page = web.get("/join")  # a page for browser routes, like every other error
    assert page.headers["content-type"].startswith("text/html") and 'data-code="invalid_host"' \
        in page.text


def test_the_base_url_host_and_loopback_are_served(app, settings, clock, loaded_study):
    web = TestClient(app)
    for host in ("testserver", "TestServer:80", "localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert web.get("/help", headers={"Host": host}).status_code == 200, host
    for host in ("testserver.evil.example", "", "testserver:x", "evil.example:80"):
        assert web.get("/help", headers={"Host": host}).status_code == 400, host
        # an orchestrator's probe by the container's address is answered
        assert web.get("/healthz", headers={"Host": host}).status_code == 200, host
    listed = _app_with(settings, clock, allowed_hosts="study.example.org, *.panel.example.org")
    try:
        web = TestClient(listed)
        for host, status in (("study.example.org", 200), ("eu.panel.example.org", 200),
                             ("panel.example.org", 400), ("testserver", 400),
                             ("localhost", 400)):
            assert web.get("/help", headers={"Host": host}).status_code == status, host
    finally:
        listed.state.engine.dispose()


def test_no_answer_echoes_the_host_even_when_any_host_is_allowed(settings, clock, loaded_study,
                                                                 client, smtp, engine):
    """With the Host check off (`*`), no redirect, header or page repeats a forged Host:
    Starlette's slash redirects are made relative, links come from the base URL."""
    application = _app_with(settings, clock, allowed_hosts="*", rate_limits_enabled=False)
    try:
        visitors = [TestClient(application, raise_server_exceptions=False),
                    _participant(application, client, smtp), _staff(application, engine)]
        echoed = []
        for visitor in visitors:
            visitor.headers["Host"] = EVIL
            for method, path in [*_requests(application), ("GET", "/api/v1/me/")]:
                answer = visitor.request(method, path, follow_redirects=False)
                if EVIL in answer.text or EVIL in str(answer.headers):
                    echoed.append(f"{method} {path} {answer.status_code}")
        assert echoed == []
        web = TestClient(application, headers={"Host": EVIL}, follow_redirects=False)
        assert web.get("/p/").headers["location"] == "/p"
        assert web.get("/static").headers["location"] == "/static/"
    finally:
        application.state.engine.dispose()


def test_public_origin_and_trusted_hosts_come_from_the_base_url():
    s = Settings(environment="test", base_url="HTTPS://Study.Example.org:443/panel/")
    assert s.public_origin == "https://study.example.org"
    assert s.trusted_hosts == ["study.example.org", "localhost", "127.0.0.1", "::1"]
    assert Settings(environment="test", base_url="http://[::1]:8000").public_origin == \
        "http://[::1]:8000"
