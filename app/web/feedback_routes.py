"""The participant's own scores over time (/p/feedback), when the study file enables it."""

from __future__ import annotations

from dataclasses import dataclass

from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import SessionDep
from app.consent import service as consent
from app.core.errors import NotFound
from app.i18n import translator
from app.participants.timezones import babel_locale, local_date, local_day_month
from app.studies import service as studies
from app.surveys import feedback
from app.web.charts import trend_chart
from app.web.common import page_language, render
from app.web.routes import WebParticipant

router = APIRouter(include_in_schema=False)


@dataclass
class TrendView:
    """One score's chart and table, with everything already in the page language."""

    key: str
    label: str
    note: str | None
    low: str
    high: str
    svg: str
    rows: list[tuple[str, str]]  # (date submitted, score)


def _number(value: float | None, lang: str, decimals: int) -> str:
    if value is None:
        return "–"
    return format_decimal(round(value, decimals), format="#,##0.#" if decimals else "#,##0",
                          locale=babel_locale(lang))


def _view(trend: feedback.ScoreTrend, zone: str, lang: str) -> TrendView:
    values = [p.value for p in trend.points]
    whole = all(v is None or float(v).is_integer() for v in values)
    decimals = 0 if whole else 1
    title = translator(lang)("feedback.chart_title", label=trend.label)
    days = [local_day_month(p.submitted_at, zone, lang) for p in trend.points]
    svg = trend_chart(days, values, title=title, y_min=trend.minimum, y_max=trend.maximum,
                      value_format=f".{decimals}f") if values else ""
    return TrendView(
        key=f"{trend.instrument}-{trend.score}", label=trend.label, note=trend.note,
        low=_number(trend.minimum, lang, decimals), high=_number(trend.maximum, lang, decimals),
        svg=svg, rows=[(local_date(p.submitted_at, zone, lang), _number(p.value, lang, decimals))
                       for p in trend.points])


@router.get("/p/feedback", response_class=HTMLResponse)
def feedback_page(request: Request, ctx: WebParticipant, session: SessionDep) -> Response:
    participant = ctx.participant
    if not feedback.enabled(studies.current_protocol(session, participant.study_id)):
        raise NotFound("There is no such page.")
    if participant.status == "withdrawn":
        return RedirectResponse("/p", status_code=303)
    state = consent.consent_state(session, participant)
    if state.needs_consent or state.needs_reconsent:
        return RedirectResponse("/p/consent", status_code=303)
    lang = page_language(request, participant.language)
    trends = [_view(trend, participant.timezone, lang)
              for trend in feedback.own_trends(session, participant)]
    return render(request, "feedback.html", lang, trends=trends,
                  any_scores=any(view.rows for view in trends))

