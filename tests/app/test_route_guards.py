"""Every route is guarded as its kind requires; a new route without its guard fails here."""

from __future__ import annotations

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.auth.deps import consent_gate, current_participant, current_staff
from app.config import Settings
from app.main import create_app
from app.web.routes import web_participant

# Participant routes that must work before or without current consent.
CONSENT_EXEMPT = {
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/me/consent/document"),
    ("POST", "/api/v1/me/consent"),
    ("GET", "/api/v1/me/consent/records"),
    ("GET", "/api/v1/me/consent/records/{record_id}"),
    ("GET", "/api/v1/me/consent/records/{record_id}/copy.pdf"),
    ("POST", "/api/v1/me/consent/records/{record_id}/email"),  # the copy, as copy.pdf
    ("POST", "/api/v1/me/withdrawal"),
    ("POST", "/api/v1/me/withdrawal/{withdrawal_id}/confirm"),
    # Signing out and reading one's own data work whatever the consent state (a participant
    # who declined keeps access until the session ends; withdrawal ends every credential).
    ("POST", "/api/v1/me/sign-out"),
    ("POST", "/api/v1/me/sign-out-everywhere"),
    ("GET", "/api/v1/me/data"),
    # A participant's own API tokens: managing credentials needs no consent (like signing out).
    ("POST", "/api/v1/me/api-tokens"),
    ("GET", "/api/v1/me/api-tokens"),
    ("DELETE", "/api/v1/me/api-tokens/{token_id}"),
}
PUBLIC = {
    ("GET", "/api/v1/studies/{key}"),
    ("POST", "/api/v1/studies/{key}/enrollments"),
    ("POST", "/api/v1/session"),  # the emailed link is the credential (used once)
    # The mail provider's bounce webhook: a shared secret compared in constant time, 404 while
    # unset (tests/app/notify/test_undeliverable.py)
    ("POST", "/api/v1/notify/bounces"),
}
# Survey pages check consent through the same service and redirect to the consent form.
WEB_DATA_PREFIX = "/p/surveys"


def _calls(dependant: Dependant) -> set:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


def _api_routes(routes: list) -> list[APIRoute]:
    """API routes, looking inside included routers (FastAPI >= 0.160 keeps them nested)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += _api_routes(route.original_router.routes)
    return found


def _routes() -> list[tuple[str, str, set]]:
    app = create_app(Settings(database_url="sqlite://", environment="test"))
    routes = [(method, route.path, _calls(route.dependant))
              for route in _api_routes(app.routes) for method in route.methods]
    assert len(routes) > 20, "route discovery found too little; FastAPI internals changed?"
    return routes


def test_every_participant_data_route_has_the_consent_gate():
    missing = [(m, p) for m, p, calls in _routes()
               if p.startswith("/api/v1/me") and (m, p) not in CONSENT_EXEMPT
               and consent_gate not in calls]
    assert missing == []
    assert any(consent_gate in calls for _, p, calls in _routes()
               if p.startswith("/api/v1/me/surveys"))


def test_exempt_participant_routes_still_need_a_participant():
    for method, path, calls in _routes():
        if (method, path) in CONSENT_EXEMPT:
            assert current_participant in calls, (method, path)


def test_survey_pages_use_the_participant_session_and_the_gate():
    import inspect

    from app.web import survey_routes

    for method, path, calls in _routes():
        if path.startswith(WEB_DATA_PREFIX):
            assert web_participant in calls, (method, path)
    for name in ("survey_page", "survey_submit"):
        assert "_gate(" in inspect.getsource(getattr(survey_routes, name))


def test_every_staff_api_route_checks_a_role():
    for method, path, calls in _routes():
        if path.startswith(("/api/v1/irb", "/api/v1/researcher", "/api/v1/admin",
                            "/api/v1/staff")):
            role_checks = [c for c in calls if hasattr(c, "allowed_roles")]
            assert role_checks and current_staff in calls, (method, path)


def test_no_other_unguarded_api_routes():
    for method, path, calls in _routes():
        if not path.startswith("/api/"):
            continue
        guarded = current_participant in calls or current_staff in calls
        assert guarded or (method, path) in PUBLIC, f"{method} {path} has no guard"
