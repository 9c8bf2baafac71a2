"""Feedback to participants: their own scores over the waves they submitted.

Whether there is feedback, and which scores it shows, is the study file's ``participant_feedback``
block (off unless ``enabled``); the names of the scores come from the study's instruments (the
primary score's name, ``raw`` or a subscale), checked when the study is loaded. Only the
participant's own submitted responses are read, so nothing appears before a first submission.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from app.participants.models import Participant
from app.studies import service as studies
from app.surveys.instruments import Instrument
from app.surveys.models import ResponseScore, SurveyInstance, SurveyResponse

RAW = "raw"


@dataclass(frozen=True)
class ScorePoint:
    wave: int
    submitted_at: datetime
    value: float | None  # None: too few answers to score


@dataclass
class ScoreTrend:
    instrument: str
    score: str
    label: str
    note: str | None
    minimum: float
    maximum: float
    points: list[ScorePoint] = field(default_factory=list)


def setting(study: dict[str, Any]) -> dict[str, Any]:
    """The study file's participant_feedback block; off when the file has none."""
    return study.get("participant_feedback") or {"enabled": False, "scores": []}


def enabled(study: dict[str, Any]) -> bool:
    return bool(setting(study).get("enabled"))


def summary(study: dict[str, Any]) -> tuple[bool, list[str]]:
    """For reviewers: on or off, and the scores it would show ("who5 percentage")."""
    block = setting(study)
    return bool(block.get("enabled")), [f"{s['instrument']} {s['score']}"
                                        for s in block.get("scores", [])]


def settings_for(session: Session, study_keys: list[str]) -> list[tuple[str, bool, list[str]]]:
    """(study, on, scores) from each study's current protocol, for the IRB's pages."""
    out = []
    for key in dict.fromkeys(study_keys):
        study = studies.get_study(session, key)
        on, scores = summary(studies.current_protocol(session, study.id))  # type: ignore[arg-type]
        out.append((key, on, scores))
    return out


def score_ranges(instrument: Instrument) -> dict[str, tuple[float, float]]:
    """Every score the instrument defines, with its possible range."""
    scoring = instrument.scoring
    if scoring is None:
        return {}
    ranges = {scoring.primary: (scoring.primary_range.min, scoring.primary_range.max),
              RAW: (scoring.range.min, scoring.range.max)}
    ranges.update({s.key: (s.range.min, s.range.max) for s in scoring.subscales})
    return {name: (float(low), float(high)) for name, (low, high) in ranges.items()}


def problems(study: dict[str, Any], pinned: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with the block, for `study load`: each score must exist in its instrument."""
    found = []
    for i, wanted in enumerate(setting(study).get("scores", [])):
        where = f"participant_feedback/scores/{i}"
        definition = pinned.get(wanted["instrument"])
        if definition is None:
            found.append(f"{where}/instrument: {wanted['instrument']!r} is not one of the "
                         "study's instruments")
            continue
        names = score_ranges(Instrument.model_validate(definition["definition"]))
        if wanted["score"] not in names:
            found.append(f"{where}/score: {wanted['instrument']} has no score "
                         f"{wanted['score']!r} (it has: {', '.join(sorted(names)) or 'none'})")
    return found


def _value(row: ResponseScore, score: str) -> float | None:
    if score == row.primary_name:
        value = row.primary
    elif score == RAW:
        value = row.raw
    else:
        value = row.subscales.get(score)
    return None if value is None else float(value)


def own_trends(session: Session, participant: Participant) -> list[ScoreTrend]:
    """Each configured score over the participant's own submitted waves, oldest first.

    Labels come from the study file, else the instrument's title in the participant's
    language (its default language when it has none)."""
    protocol = studies.latest_protocol(session, participant.study_id)
    assert protocol is not None
    study, pinned = protocol.content["study"], protocol.content["instruments"]
    trends = []
    for wanted in setting(study).get("scores", []):
        instrument = Instrument.model_validate(pinned[wanted["instrument"]]["definition"])
        low, high = score_ranges(instrument)[wanted["score"]]
        texts = instrument.languages.get(participant.language) or instrument.languages.get(
            study["default_language"]) or next(iter(instrument.languages.values()))
        label = (studies.localized(wanted["label"], participant.language) if wanted.get("label")
                 else texts.title)
        note = studies.localized(wanted["note"], participant.language) if wanted.get(
            "note") else None
        trend = ScoreTrend(wanted["instrument"], wanted["score"], label, note, low, high)
        rows = session.exec(
            select(SurveyInstance.wave, SurveyResponse.submitted_at, ResponseScore)
            .join(SurveyInstance, col(SurveyInstance.id) == SurveyResponse.instance_id)
            .join(ResponseScore, col(ResponseScore.response_id) == SurveyResponse.id)
            .where(SurveyResponse.participant_id == participant.id,
                   SurveyResponse.instrument_key == wanted["instrument"])
            .order_by(col(SurveyResponse.submitted_at))).all()
        trend.points = [ScorePoint(wave, submitted_at, _value(row, wanted["score"]))
                        for wave, submitted_at, row in rows]
        trends.append(trend)
    return trends
