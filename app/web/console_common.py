"""What every staff page shares: who is logged in, which role may open what, the layout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from app.auth import service as auth
from app.auth.deps import STAFF_COOKIE, NowDep, SessionDep
from app.auth.models import StaffMember
from app.core.errors import Forbidden, Unauthorized
from app.web.common import page_language, render

# (path, locale key, roles allowed): the IRB review pages, translated like the participant pages.
NAV: list[tuple[str, str, set[str]]] = [
    ("/staff/irb/consent-versions", "staff.nav_versions", {"irb"}),
    ("/staff/irb/consent-log", "staff.nav_log", {"irb"}),
    ("/staff/irb/participant", "staff.nav_participant", {"irb"}),
    ("/staff/irb/audit", "staff.nav_audit", {"irb"}),
    ("/staff/irb/ledger", "ledger.nav", {"irb"}),
]
# (path, label, roles allowed): the research console, in English only for now (staff-facing).
CONSOLE_NAV: list[tuple[str, str, set[str]]] = [
    ("/staff/researcher/enrollment", "Enrollment", {"researcher"}),
    ("/staff/researcher/compliance", "Compliance", {"researcher"}),
    ("/staff/researcher/safety", "Safety events", {"researcher", "safety"}),
    ("/staff/researcher/notifications", "Notifications", {"researcher"}),
    ("/staff/researcher/exports", "Exports", {"researcher"}),
    ("/staff/protocol", "Protocol", {"researcher", "irb"}),
    ("/staff/irb/safety-events", "Safety events (read-only)", {"irb"}),
    ("/staff/admin/staff", "Staff", {"admin"}),
]

class StaffLoginRequired(Unauthorized):
    """Answered with a redirect to the login page (see app.web.common.html_error)."""

    code = "staff_login_required"


def web_staff(request: Request, session: SessionDep, now: NowDep) -> StaffMember:
    """The staff member behind the session cookie; a participant's cookie is not one."""
    token = request.cookies.get(STAFF_COOKIE)
    ttl = request.app.state.settings.staff_token_ttl
    found = auth.staff_for_session(session, token, now=now, token_ttl=ttl) if token else None
    if found is None:  # also when the member was revoked or their token expired
        raise StaffLoginRequired("Please log in with your staff token.")
    if auth.touch_staff(session, found[0], now=now):
        session.commit()
    return found[0]


WebStaff = Annotated[StaffMember, Depends(web_staff)]


def staff_page(*roles: str) -> Callable[..., StaffMember]:
    """A page dependency: logged in (else the login page) and one of the roles (else 403)."""
    allowed = set(roles) | {"admin"}

    def dependency(member: WebStaff) -> StaffMember:
        if member.role not in allowed:
            raise Forbidden(f"The {member.role} role may not open this page; it is for "
                            f"{' or '.join(sorted(allowed))}.", code="wrong_role")
        return member

    dependency.allowed_roles = allowed  # type: ignore[attr-defined]
    return dependency


Researcher = Annotated[StaffMember, Depends(staff_page("researcher"))]
Reviewer = Annotated[StaffMember, Depends(staff_page("irb"))]


def nav_for(member: StaffMember | None) -> list[tuple[str, str]]:
    """Only the pages this role may open; the layout passes each label through t()."""
    if member is None:
        return []
    return [(path, label) for path, label, roles in CONSOLE_NAV + NAV
            if member.role == "admin" or member.role in roles]


def staff_render(request: Request, template: str, member: StaffMember | None,
                 status_code: int = 200, **context: Any) -> HTMLResponse:
    response = render(request, template, page_language(request), status_code=status_code,
                      member=member, nav=nav_for(member), current_path=request.url.path,
                      **context)
    # Staff pages show pseudonymous research data: never keep them in a shared cache.
    response.headers["Cache-Control"] = "no-store"
    return response
