"""The codebook inside ``datapackage.json``: everything needed to read the panel without the study.

Per instrument: title, version and content hash, citation, licence, recall period, item wording
and response options in every language the study used, scoring rules (items, reversal, range,
transformation, prorating, subscales, bands, interpretation), the translation status of each
language and how many answers were given in each (language, status), and which export columns
hold which item. Built from the protocol versions stored in the database (the instrument
definitions pinned when the study was loaded), never from files on disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analysis import spec
from app.core import csv_cells
from app.export import writers
from app.export.timeshift import TimePolicy
from app.surveys.instruments import Instrument

FREE_TEXT_WARNING = (
    "Free-text answers may contain names, places or other details that identify a participant. "
    "They were exported because the export asked for them explicitly; review them before sharing."
)


@dataclass(frozen=True)
class ItemColumn:
    """An exported item column: which instrument item (and option, for multiple choice)."""

    column: str
    instrument: str
    item: str
    option: Any = None
    type: str = "string"  # Table Schema type


def _opt_labels(inst: Instrument, label_key: str, languages: list[str]) -> dict[str, str]:
    return {
        lang: inst.languages[lang].options.get(label_key, label_key)
        for lang in languages
        if lang in inst.languages
    }


def instrument_entry(
    inst: Instrument,
    pinned: Mapping[str, Any],
    *,
    qi_items: set[str],
    include_free_text: bool,
    item_columns: Mapping[tuple[str, str], list[ItemColumn]],
    answered: Mapping[tuple[str, str], int],
    versions_in_data: Mapping[str, int],
) -> dict[str, Any]:
    languages = [lang for lang in pinned.get("languages", inst.languages) if lang in inst.languages]
    items = []
    for item in inst.items:
        is_text = item.type == "text"
        cols = item_columns.get((inst.key, item.id), [])
        entry: dict[str, Any] = {
            "id": item.id,
            "type": item.type,
            "required": item.required,
            "wording": {lang: inst.languages[lang].items.get(item.id, "") for lang in languages},
        }
        if item.options:
            entry["options"] = [
                {
                    "value": o.value,
                    **({"exclusive": True} if o.exclusive else {}),
                    "labels": _opt_labels(inst, o.label, languages),
                }
                for o in item.options
            ]
        for attr in ("min", "max", "max_length"):
            if getattr(item, attr) is not None:
                entry[attr] = getattr(item, attr)
        if item.reverse_scored:
            entry["reverse_scored"] = True
        if item.show_if is not None:
            entry["shown_if"] = item.show_if.model_dump(exclude_none=True)
        if is_text:
            entry["free_text"] = True
            entry["possibly_identifying"] = item.possibly_identifying
            if include_free_text and cols:
                entry["warning"] = FREE_TEXT_WARNING
        if item.id in qi_items:
            entry["quasi_identifier"] = True
            entry["exported_as"] = "participants (generalized; see wellpanel.deidentification)"
        elif cols:
            entry["exported_as"] = [f"responses.{c.column}" for c in cols]
        else:
            entry["exported_as"] = None
            if is_text and not include_free_text:
                entry["not_exported_because"] = "free text is excluded unless asked for"
        items.append(entry)
    out: dict[str, Any] = {
        "title": inst.title,
        "description": inst.description,
        "version": inst.version,
        "sha256": pinned.get("sha256"),
        "versions_in_data": dict(versions_in_data),
        "citation": inst.citation,
        "licence": inst.licence.model_dump(),
        "redistributable": inst.redistributable,
        "recall_period_days": inst.recall_period_days,
        "languages": {
            lang: {
                "translation_status": inst.languages[lang].translation_status,
                "source": inst.languages[lang].source,
                "note": inst.languages[lang].note,
                "title": inst.languages[lang].title,
                "instructions": inst.languages[lang].instructions,
            }
            for lang in languages
        },
        "answers_by_language": {
            f"{lang} ({status})": n
            for (lang, status), n in sorted(answered.items())
        },
        "items": items,
        "n_items": len(inst.items),
    }
    sc = inst.scoring
    if sc is not None:
        pr = sc.primary_range
        out["scoring"] = {
            "method": sc.method,
            "items": list(sc.items),
            "reverse_scored_items": [i.id for i in inst.items if i.reverse_scored],
            "reverse_rule": sc.reverse_rule,
            "raw_range": [sc.range.min, sc.range.max],
            "transform": sc.transform.model_dump() if sc.transform else None,
            "primary": sc.primary,
            "primary_range": [pr.min, pr.max],
            "min_answered": sc.min_answered,
            "prorate": sc.prorate.model_dump() if sc.prorate else None,
            "subscales": [
                {
                    "key": s.key,
                    "column": f"{spec.SUBSCALE_PREFIX}{s.key}",
                    "label": s.label,
                    "method": s.method,
                    "items": list(s.items),
                    "range": [s.range.min, s.range.max],
                    "min_answered": s.required_answers,
                }
                for s in sc.subscales
            ],
            "bands": [{"up_to": b.up_to, "key": b.key, "label": b.label} for b in sc.bands],
            "interpretation": sc.interpretation,
            "exported_as": "responses.score (primary), responses.severity (band key), "
            "responses.subscale_<key>; panel.<instrument> (valid primary scores)",
        }
        # the analysis package's summary fields (spec.default_codebook()), from the definition
        out["score"] = f"{sc.primary} ({sc.method}), {pr.min:g}-{pr.max:g}"
        out["range"] = [pr.min, pr.max]
        out["severity_bands"] = [{"max": b.up_to, "label": b.key} for b in sc.bands]
    return out


REASON_MEANINGS = {
    "not_administered": "the survey was not sent in that wave (not scheduled, or the "
    "participant's survey closed unanswered)",
    "skipped": "shown and left unanswered (an item), or answered with too few items for a "
    "valid score (a score)",
    "withdrawn": "the survey came after the participant's withdrawal (stop contact); "
    "nothing after it is exported",
    "not_applicable": "not shown: the item's display condition was not met",
}


def missing_values_entry() -> dict[str, Any]:
    """Missing values with their reasons, per format (issue 16 part 5)."""
    codes = writers.MISSING_CODES
    return {
        "reasons": {r: {"meaning": REASON_MEANINGS[r], "sav": code, "dta": f".{letter}"}
                    for r, (code, letter) in codes.items()},
        "reason_columns": {col: {"reason": reason, "resource": "responses" if
                                 col.startswith("items_") else "panel",
                                 "lists": "item columns" if col.startswith("items_")
                                 else "outcome columns"}
                           for col, reason in writers.REASON_COLUMNS.items()},
        "csv": "an empty cell; the row's reason columns (semicolon-separated column names) "
        "say why an item or outcome cell is empty",
        "parquet": "null; the reason columns as in CSV",
        "sav": "numbers with a reason: user-missing codes "
        + ", ".join(f"{c} {r.replace('_', ' ')}" for r, (c, _) in codes.items())
        + f" (declared missing range {min(c for c, _ in codes.values())}.."
        f"{max(c for c, _ in codes.values())}, with value labels); otherwise system-missing; "
        "text: empty string",
        "dta": "numbers with a reason: extended missing values "
        + ", ".join(f".{x} {r.replace('_', ' ')}" for r, (_, x) in codes.items())
        + " (with value labels); otherwise .; text: empty string",
        "without_reason": "cells with no reason column (e.g. usage hours, subscales) are "
        "empty because the answer was not given, a score was invalid, or de-identification "
        "suppressed it (see wellpanel.deidentification)",
    }


def time_entry(policy: TimePolicy, profile: str, events: list[Mapping[str, Any]]
               ) -> dict[str, Any]:
    """How the export releases time: the variables and what they can tell (issue 16 part 3)."""
    r = policy.day_resolution_days
    out: dict[str, Any] = {
        "summary": "no calendar dates in any row; time is counted from each participant's own "
        "enrollment" + ("" if profile == spec.PROFILE_RESEARCH
                        else "; no calendar information at all (strict profile)"),
        "variables": {
            "wave": "measurement wave (0 = baseline), whole two-week steps from enrollment to "
            "the time the survey was scheduled",
            "day": f"days from the participant's enrollment to the answer, both in the "
            f"participant's own time zone, rounded down to a multiple of {r} (0, {r}, "
            f"{2 * r}, ...): the day within those {r} is not released",
            "days_in_study": "the last such day of the participant, rounded the same way",
        },
        "day_resolution_days": r,
    }
    if profile == spec.PROFILE_RESEARCH:
        s, b = policy.max_shift_days, policy.event_band_weeks
        for e in events:
            col = spec.event_column(str(e["key"]))
            out["variables"][col] = (
                f"weeks from the event {e['key']} ({e.get('description', '')}) to the answer: "
                f"the participant's enrollment, moved by a secret offset of -{s}..{s} days, "
                f"is placed in a {b}-week band relative to the event and released as the "
                f"band's middle week ({b // 2}, {b + b // 2}, ... after the event; negative "
                f"before it); each row adds the whole weeks of its day (day // 7). Intervals "
                f"within a participant are right; the alignment of a participant to the event "
                f"is off by up to {b * 7 // 2} days plus the offset. Use it for event-time "
                f"analyses at {b}-week resolution")
        out.update({
            "uncertainty_days": policy.window_days,
            "date_precision_days": policy.date_precision_days,
            "max_shift_days": s,
            "event_band_weeks": b,
        })
    return out


def build_codebook(
    *,
    protocol: Mapping[str, Any],
    protocol_meta: Mapping[str, Any],
    instruments: Mapping[str, Instrument],
    qi_items: set[str],
    include_items: bool,
    include_free_text: bool,
    item_columns: list[ItemColumn],
    time_policy: TimePolicy | None = None,
    answered: Mapping[str, Mapping[tuple[str, str], int]],
    versions_in_data: Mapping[str, Mapping[str, int]],
    profile: str,
) -> dict[str, Any]:
    study = protocol["study"]
    by_item: dict[tuple[str, str], list[ItemColumn]] = {}
    for c in item_columns:
        by_item.setdefault((c.instrument, c.item), []).append(c)
    book = spec.default_codebook()
    book["instruments"] = {
        key: instrument_entry(
            inst,
            protocol["instruments"].get(key, {}),
            qi_items=qi_items,
            include_free_text=include_free_text,
            item_columns=by_item,
            answered=answered.get(key, {}),
            versions_in_data=versions_in_data.get(key, {}),
        )
        for key, inst in instruments.items()
    }
    book["study"] = {
        "key": study["key"],
        "title": study.get("title"),
        "languages": study.get("languages"),
        "default_language": study.get("default_language"),
        **dict(protocol_meta),
    }
    book["time"] = time_entry(time_policy or TimePolicy(), profile, study.get("events") or [])
    book["item_answers"] = {
        "included": include_items,
        "free_text_included": include_free_text,
        "columns": [
            {"column": c.column, "instrument": c.instrument, "item": c.item,
             **({"option": c.option} if c.option is not None else {})}
            for c in item_columns
        ],
        "coding": "single choice: the option value; multiple choice: one true/false column per "
        "option (<item>_<option>); numbers as answered; empty = not shown or not answered",
    }
    if include_free_text:
        book["item_answers"]["warning"] = FREE_TEXT_WARNING
    book["missing_values"] = missing_values_entry()
    book["csv_formula_neutralization"] = csv_cells.CODEBOOK_NOTE
    book["usage_coding"] = {
        "used": "the model was ticked in used_models",
        "hours_per_week": "hours_<model>; 0 when the model was not used; empty when used but "
        "the hours were not given",
        "purpose_companionship": "purposes includes companionship_romance",
        "purpose_other": "purposes includes other",
        "lost_access_to_model": "lost_access_models includes the model",
        "access_loss": "lost_access = yes",
        "access_loss_distress": "lost_access_feeling (0-4), empty unless access_loss",
    }
    return book
