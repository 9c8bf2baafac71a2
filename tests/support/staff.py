"""Staff test helpers: make a member, log a browser in, read the ledger's staff rows."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from app.audit.models import AuditEvent
from app.auth import service as auth
from app.auth.models import StaffMember


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def add_member(engine: Any, name: str, role: str, now: datetime | None = None) -> str:
    """A new staff member's token (created at `now`: pass the test clock's time)."""
    with Session(engine) as s:
        return auth.add_staff(s, name, role, now=now)


def member(engine: Any, name: str) -> StaffMember:
    with Session(engine) as s:
        return s.exec(select(StaffMember).where(StaffMember.name == name)).one()


def post_login(web: TestClient, token: str) -> Any:
    page = web.get("/staff/login")
    return web.post("/staff/login", data={"csrf_token": csrf(page.text), "token": token},
                    follow_redirects=False)


def logged_in(app: Any, token: str) -> TestClient:
    web = TestClient(app)
    response = post_login(web, token)
    assert response.status_code == 303 and response.headers["location"] == "/staff"
    return web


def ledger(engine: Any, prefix: str = "staff.") -> list[AuditEvent]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEvent).where(col(AuditEvent.action).startswith(prefix))
                           .order_by(col(AuditEvent.id))).all())


def actions(engine: Any, action: str) -> list[AuditEvent]:
    return [row for row in ledger(engine, action) if row.action == action]
