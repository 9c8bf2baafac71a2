"""Compliance page: completion over time (line), per instrument and wave (table), and a
participant x wave heat map, from app.scheduling.compliance."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.audit import service as audit
from app.auth.deps import NowDep, SessionDep, SettingsDep
from app.core.errors import AppError
from app.scheduling import compliance
from app.web import charts
from app.web.console_common import Researcher, staff_render

router = APIRouter(prefix="/researcher")
HEAT_MAP_ROWS = 200  # participants drawn in the heat map (the earliest enrolled)


def _study_key(request: Request, settings: SettingsDep) -> str:
    return (request.query_params.get("study") or settings.default_study)[:64]


HEAT_COLOURS = {"completed": "#2f855a", "expired": "#dd6b20", "missed": "#c53030",
                "open": "#63b3ed", "planned": "#e2e8f0"}


@router.get("/compliance", response_class=HTMLResponse)
def compliance_page(request: Request, member: Researcher, session: SessionDep,
                    settings: SettingsDep, now: NowDep) -> HTMLResponse:
    key = _study_key(request, settings)
    try:
        study = compliance.find_study(session, key)
    except AppError as exc:
        return staff_render(request, "staff/compliance.html", member, study=key,
                            error=exc.message, status_code=exc.status_code)
    report = compliance.compliance(session, study, secret_key=settings.secret_key, now=now)
    weeks = compliance.compliance_by_week(session, study)
    matrix = compliance.participant_wave_matrix(session, study, secret_key=settings.secret_key,
                                                limit=HEAT_MAP_ROWS)
    audit.append(session, actor=f"staff:{member.id}", action="staff.view_compliance",
                 details={"study": key, "participants": len(matrix.rows)}, now=now)
    session.commit()
    line = charts.line_chart([w.week_start.isoformat() for w in weeks],
                             {"completion rate": [w.completion_rate for w in weeks]},
                             title="Completed share of closed surveys, by week scheduled")
    heat = charts.heat_map([r.pseudonym for r in matrix.rows], matrix.waves,
                           [[r.cells.get(w) for w in matrix.waves] for r in matrix.rows],
                           title="Participant by wave", categories=HEAT_COLOURS)
    return staff_render(request, "staff/compliance.html", member, study=key, report=report,
                        weeks=weeks, matrix=matrix, line=line, heat=heat, error=None,
                        heat_rows=HEAT_MAP_ROWS)
