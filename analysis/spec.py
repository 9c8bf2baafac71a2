"""The panel Data Package contract (app exporter -> analysis), as constants and small builders.

A panel export is a directory with ``datapackage.json`` (a Frictionless Data Package) and one file
per resource (CSV by default, or Parquet). This module is the single definition of that contract:
the analysis loader (:mod:`analysis.panel`) validates against it, the simulator
(:mod:`analysis.simulate`) writes it, and the app's exporter imports it.

Exporter checklist (everything here is importable)::

    from analysis import spec
    spec.RESOURCES["responses"].columns        # contract columns, in order
    spec.table_schema("responses", df.columns, extra_types={...})   # Table Schema dict
    spec.wellpanel_property(generated_by=spec.GENERATED_BY_EXPORT, export_profile="strict",
                            study={...}, deidentification={...}, software={...})
    analysis.datapackage.write_datapackage(frames, out_dir, wellpanel=...)   # optional helper

Conventions:
- CSV: UTF-8, header row, empty cell = missing (``missingValues: [""]``), booleans written
  ``true``/``false``, integers without a decimal point.
- Time is ``day``: whole days since the participant's enrollment (day 0). Waves are ~14 days
  apart; ``wave`` 0 is the baseline. The ``strict`` profile carries no calendar information;
  ``research`` adds ``week_since_<event key>`` (integer weeks, negative before the event) to
  ``responses`` and ``panel`` for each study event listed in ``wellpanel.events``.
- Extra columns may appear in any resource; they must be described in the Table Schema and are
  loaded generically by their declared type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1
PROPERTY = "wellpanel"  # name of the custom top-level property in datapackage.json
DESCRIPTOR_FILE = "datapackage.json"
MISSING_VALUES = [""]
CSV_TRUE = "true"
CSV_FALSE = "false"
# CSV text cells: a quote is put before a text that starts (after any quotes) with a formula
# character (= + - @ tab CR), so spreadsheets do not run it (OWASP CSV injection; the app's
# app/core/csv_cells.py); readers remove it again (CSV_NEUTRALIZED), which restores the text.
CSV_FORMULA = r"^('*[=+\-@\t\r])"
CSV_NEUTRALIZED = r"^'(?='*[=+\-@\t\r])"

GENERATED_BY_EXPORT = "wellpanel export"
GENERATED_BY_SIMULATOR = "analysis.simulate"
GENERATED_BY = (GENERATED_BY_EXPORT, GENERATED_BY_SIMULATOR)
PROFILE_STRICT = "strict"
PROFILE_RESEARCH = "research"
PROFILE_SIMULATED = "simulated"
PROFILES = (PROFILE_STRICT, PROFILE_RESEARCH, PROFILE_SIMULATED)

EVENT_PREFIX = "week_since_"  # research profile: week_since_<event key>
SUBSCALE_PREFIX = "subscale_"  # responses: optional subscale_<name> numbers

STATUSES = ("active", "paused", "withdrawn", "completed")
MODELS = (
    "gpt4o_chatgpt",
    "gpt4o_api",
    "gpt_newer",
    "claude",
    "gemini",
    "companion_app",
    "other",
)
MODELS_4O = ("gpt4o_chatgpt", "gpt4o_api")  # their hours add up to panel.hours_4o
PURPOSES = ("companionship", "emotional_support", "advice", "work", "creative")
COMPANION_PURPOSES = ("companionship", "emotional_support")  # -> panel.companion_use
FRAMING_LABELS = {
    1: "a tool",
    2: "mostly a tool",
    3: "somewhere between a tool and a partner",
    4: "mostly a partner",
    5: "a partner",
}
ACCESS_LOSS_DISTRESS_LABELS = {
    0: "not at all",
    1: "a little",
    2: "moderately",
    3: "a lot",
    4: "extremely",
}


@dataclass(frozen=True)
class Event:
    """A dated study event that research exports align to via ``week_since_<key>``."""

    key: str
    date: str  # ISO date; never exported in the strict profile
    description: str


GPT4O_RETIREMENT = Event(
    key="gpt4o_retirement",
    date="2026-02-13",
    description="OpenAI retired GPT-4o from ChatGPT on 2026-02-13 (API access continued).",
)
EVENTS = {GPT4O_RETIREMENT.key: GPT4O_RETIREMENT}


@dataclass(frozen=True)
class Instrument:
    """An outcome instrument and the meaning of its primary ``score``."""

    key: str
    title: str
    score: str
    minimum: float
    maximum: float
    higher_is_better: bool
    n_items: int
    severity_cutoffs: tuple[tuple[float, str], ...] = ()  # (upper bound inclusive, label)

    def severity(self, score: float) -> str | None:
        for upper, label in self.severity_cutoffs:
            if score <= upper:
                return label
        return None


# The study's instrument files (surveys/instruments/<key>.yaml, which the exporter scores with)
# are the source of truth for ranges and item counts; tests/analysis/test_spec_instruments.py
# fails when these summaries drift from them.
INSTRUMENTS: dict[str, Instrument] = {
    i.key: i
    for i in (
        Instrument(
            "who5",
            "WHO-5 Well-Being Index",
            "percentage score 0-100 (raw sum x 4); higher = better wellbeing",
            0,
            100,
            True,
            5,
            ((28, "likely depression"), (50, "poor wellbeing"), (100, "adequate")),
        ),
        Instrument(
            "phq9",
            "PHQ-9 depression",
            "sum score 0-27; higher = more depressive symptoms",
            0,
            27,
            False,
            9,
            (
                (4, "minimal"),
                (9, "mild"),
                (14, "moderate"),
                (19, "moderately severe"),
                (27, "severe"),
            ),
        ),
        Instrument(
            "gad7",
            "GAD-7 anxiety",
            "sum score 0-21; higher = more anxiety",
            0,
            21,
            False,
            7,
            ((4, "minimal"), (9, "mild"), (14, "moderate"), (21, "severe")),
        ),
        Instrument(
            "ucla3",
            "UCLA 3-item loneliness",
            "sum score 3-9; higher = lonelier",
            3,
            9,
            False,
            3,
            ((5, "not lonely"), (9, "lonely")),
        ),
        Instrument(
            "swls",
            "Satisfaction With Life Scale",
            "sum score 5-35; higher = more satisfied",
            5,
            35,
            True,
            5,
        ),
        Instrument(
            "social_contact",
            "Social contact",
            "sum score 0-9 of 3 items on the past 2 weeks (meeting in person, remote contact, "
            "close people), each 0-3; higher = more social contact",
            0,
            9,
            True,
            3,
        ),
        Instrument(
            "ai_dependence",
            "AI dependence",
            "mean score 1-5 of 6 agreement items (item 6 reverse-scored); higher = more "
            "dependence on AI; subscales emotional_dependence and problematic_use (means 1-5)",
            1,
            5,
            False,
            6,
        ),
    )
}
OUTCOMES = tuple(INSTRUMENTS)  # wide panel outcome columns
CONFIRMATORY_OUTCOMES = ("who5", "phq9", "gad7", "ucla3", "ai_dependence")


# --------------------------------------------------------------------------------------------
# Resources and their fields
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """A contract column. ``nullable`` False means every row must have a value."""

    name: str
    type: str  # Table Schema type: string | integer | number | boolean
    description: str
    nullable: bool = True
    unit: str | None = None
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    labels: Mapping[Any, str] | None = None  # value labels (codebook)

    def table_schema_field(self) -> dict[str, Any]:
        f: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "title": self.name.replace("_", " "),
            "description": self.description,
        }
        if self.unit:
            f["unit"] = self.unit  # custom property (Table Schema allows extra properties)
        cons: dict[str, Any] = {}
        if not self.nullable:
            cons["required"] = True
        if self.enum is not None:
            cons["enum"] = list(self.enum)
        if self.minimum is not None:
            cons["minimum"] = self.minimum
        if self.maximum is not None:
            cons["maximum"] = self.maximum
        if cons:
            f["constraints"] = cons
        if self.labels:
            f["categories"] = [{"value": v, "label": lab} for v, lab in self.labels.items()]
        if self.type == "boolean":
            f["trueValues"] = [CSV_TRUE]
            f["falseValues"] = [CSV_FALSE]
        return f


@dataclass(frozen=True)
class PatternField:
    """Optional columns named ``<prefix><key>`` (e.g. ``week_since_gpt4o_retirement``)."""

    prefix: str
    type: str
    description: str
    unit: str | None = None


@dataclass(frozen=True)
class ResourceSpec:
    name: str
    title: str
    description: str
    fields: tuple[FieldSpec, ...]
    primary_key: tuple[str, ...]
    patterns: tuple[PatternField, ...] = field(default_factory=tuple)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def types(self) -> dict[str, str]:
        return {f.name: f.type for f in self.fields}

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def pattern_for(self, column: str) -> PatternField | None:
        return next((p for p in self.patterns if column.startswith(p.prefix)), None)


_PID = FieldSpec("pid", "string", "Participant pseudonym (keyed hash, export-specific)", False)
_WAVE = FieldSpec(
    "wave", "integer", "Measurement wave, 0 = baseline; waves are ~14 days apart", False, minimum=0
)
_DAY = FieldSpec(
    "day",
    "integer",
    "Day of the answer, in days since the participant's enrollment",
    False,
    unit="days",
    minimum=0,
)
_EVENT_PATTERN = PatternField(
    EVENT_PREFIX,
    "integer",
    "Whole weeks since the study event <key> listed in wellpanel.events (negative before it); "
    "research profile only",
    "weeks",
)

PARTICIPANTS = ResourceSpec(
    name="participants",
    title="Participants",
    description="One row per participant: status and baseline covariates (may be suppressed).",
    primary_key=("pid",),
    fields=(
        _PID,
        # both are quasi-identifiers: empty when de-identification suppresses them
        FieldSpec("status", "string", "Participation status at export (empty if suppressed)",
                  enum=STATUSES),
        FieldSpec(
            "days_in_study",
            "integer",
            "Days from enrollment to the last answer or export (empty if suppressed)",
            unit="days",
            minimum=0,
        ),
        FieldSpec("age_band", "string", "Age band at baseline (empty if suppressed)"),
        FieldSpec("gender", "string", "Gender at baseline (empty if suppressed)"),
        FieldSpec("region", "string", "Broad region at baseline (empty if suppressed)"),
        FieldSpec(
            "living_situation", "string", "Living situation at baseline (empty if suppressed)"
        ),
        FieldSpec(
            "used_4o_before_retirement",
            "boolean",
            "Used GPT-4o before its retirement from ChatGPT (baseline report)",
        ),
    ),
)

RESPONSES = ResourceSpec(
    name="responses",
    title="Instrument scores",
    description="Long: one row per participant x instrument x wave answered.",
    primary_key=("pid", "instrument", "wave"),
    fields=(
        _PID,
        FieldSpec(
            "instrument", "string", "Instrument key (see wellpanel.codebook.instruments)", False
        ),
        _WAVE,
        _DAY,
        FieldSpec(
            "score",
            "number",
            "The instrument's primary score (e.g. WHO-5 percentage 0-100, PHQ-9 sum 0-27)",
        ),
        FieldSpec("severity", "string", "Severity band of the score, where the instrument has one"),
        FieldSpec("n_items_answered", "integer", "Items answered", minimum=0),
        FieldSpec("valid", "boolean", "Enough items answered for a valid score", False),
    ),
    patterns=(
        PatternField(SUBSCALE_PREFIX, "number", "Subscale score <name> of the instrument"),
        _EVENT_PATTERN,
    ),
)

_PURPOSE_FIELDS = tuple(
    FieldSpec(f"purpose_{p}", "boolean", f"Used AI for {p.replace('_', ' ')} in the recall period")
    for p in PURPOSES
)

USAGE = ResourceSpec(
    name="usage",
    title="AI model usage",
    description="Long: one row per participant x wave x model. Wave-level answers (framing, "
    "purposes, access loss) are repeated on each model row of the wave.",
    primary_key=("pid", "wave", "model"),
    fields=(
        _PID,
        _WAVE,
        _DAY,
        FieldSpec("model", "string", "Model or product family", False, enum=MODELS),
        FieldSpec("used", "boolean", "Used this model in the recall period", False),
        FieldSpec(
            "hours_per_week",
            "number",
            "Self-reported hours per week with this model",
            unit="hours/week",
            minimum=0,
        ),
        FieldSpec(
            "framing",
            "integer",
            "How the participant relates to the AI: 1 = a tool ... 5 = a partner",
            minimum=1,
            maximum=5,
            labels=FRAMING_LABELS,
        ),
        *_PURPOSE_FIELDS,
        FieldSpec(
            "access_loss",
            "boolean",
            "Lost access to a preferred model during the recall period",
        ),
        FieldSpec(
            "access_loss_distress",
            "integer",
            "Distress about the loss, 0 = not at all ... 4 = extremely; empty unless access_loss",
            minimum=0,
            maximum=4,
            labels=ACCESS_LOSS_DISTRESS_LABELS,
        ),
    ),
)

PANEL = ResourceSpec(
    name="panel",
    title="Wide panel",
    description="Convenience table: one row per participant x wave with any answer; outcome "
    "scores are empty when not administered or missed.",
    primary_key=("pid", "wave"),
    fields=(
        _PID,
        _WAVE,
        _DAY,
        *(
            # no range constraint: latent (unrounded) simulations may exceed the scale; the
            # loader warns about out-of-range scores instead
            FieldSpec(k, "number", f"{i.title}: {i.score}; empty if not administered or missed")
            for k, i in INSTRUMENTS.items()
        ),
        FieldSpec(
            "hours_4o",
            "number",
            "Hours per week with GPT-4o (gpt4o_chatgpt + gpt4o_api)",
            unit="hours/week",
            minimum=0,
        ),
        FieldSpec(
            "hours_other_ai",
            "number",
            "Hours per week with all other AI models",
            unit="hours/week",
            minimum=0,
        ),
        FieldSpec(
            "hours_total",
            "number",
            "Hours per week with any AI model",
            unit="hours/week",
            minimum=0,
        ),
        FieldSpec(
            "framing",
            "integer",
            "1 = a tool ... 5 = a partner",
            minimum=1,
            maximum=5,
            labels=FRAMING_LABELS,
        ),
        FieldSpec("companion_use", "boolean", "Used AI for companionship or emotional support"),
        FieldSpec(
            "access_loss", "boolean", "Lost access to a preferred model in the recall period"
        ),
    ),
    patterns=(_EVENT_PATTERN,),
)

RESOURCES: dict[str, ResourceSpec] = {r.name: r for r in (PARTICIPANTS, RESPONSES, USAGE, PANEL)}
REQUIRED_RESOURCES = tuple(RESOURCES)


def event_column(event_key: str) -> str:
    """Column name of the week-since alignment for a study event."""
    return f"{EVENT_PREFIX}{event_key}"


def table_schema(
    resource: str,
    columns: Iterable[str] | None = None,
    extra_types: Mapping[str, str] | None = None,
    extra_descriptions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Frictionless Table Schema for ``resource`` with the given columns, in their order.

    Contract columns get their contract field; ``week_since_*``/``subscale_*`` their pattern;
    any other column needs a type in ``extra_types`` (string | integer | number | boolean).
    """
    spec = RESOURCES[resource]
    cols = list(columns) if columns is not None else list(spec.columns)
    extra_types = dict(extra_types or {})
    extra_descriptions = dict(extra_descriptions or {})
    fields = []
    for c in cols:
        fs = spec.field(c)
        if fs is not None:
            fields.append(fs.table_schema_field())
            continue
        pat = spec.pattern_for(c)
        if pat is not None:
            key = c[len(pat.prefix) :]
            f = {
                "name": c,
                "type": pat.type,
                "title": c.replace("_", " "),
                "description": pat.description.replace("<key>", key).replace("<name>", key),
            }
            if pat.unit:
                f["unit"] = pat.unit
            if pat.type == "boolean":
                f["trueValues"], f["falseValues"] = [CSV_TRUE], [CSV_FALSE]
            fields.append(f)
            continue
        if c not in extra_types:
            raise KeyError(f"column {c!r} of resource {resource!r} needs a type in extra_types")
        f = {
            "name": c,
            "type": extra_types[c],
            "title": c.replace("_", " "),
            "description": extra_descriptions.get(c, "Additional column"),
        }
        if extra_types[c] == "boolean":
            f["trueValues"], f["falseValues"] = [CSV_TRUE], [CSV_FALSE]
        fields.append(f)
    return {
        "fields": fields,
        "primaryKey": list(spec.primary_key),
        "missingValues": list(MISSING_VALUES),
    }


def default_codebook() -> dict[str, Any]:
    """Codebook for ``wellpanel.codebook``: instruments, models, purposes, value labels."""
    return {
        "instruments": {
            k: {
                "title": i.title,
                "score": i.score,
                "range": [i.minimum, i.maximum],
                "higher_is_better": i.higher_is_better,
                "n_items": i.n_items,
                "severity_bands": [{"max": u, "label": lab} for u, lab in i.severity_cutoffs],
            }
            for k, i in INSTRUMENTS.items()
        },
        "models": list(MODELS),
        "models_4o": list(MODELS_4O),
        "purposes": list(PURPOSES),
        "framing": {str(k): v for k, v in FRAMING_LABELS.items()},
        "access_loss_distress": {str(k): v for k, v in ACCESS_LOSS_DISTRESS_LABELS.items()},
        "statuses": list(STATUSES),
        "time": "day = days since the participant's enrollment; waves ~14 days apart",
    }


def wellpanel_property(
    *,
    generated_by: str,
    export_profile: str,
    study: Mapping[str, Any],
    events: Iterable[Event | Mapping[str, Any]] = (GPT4O_RETIREMENT,),
    codebook: Mapping[str, Any] | None = None,
    deidentification: Mapping[str, Any] | None = None,
    software: Mapping[str, Any] | None = None,
    simulation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``wellpanel`` custom property of ``datapackage.json``.

    ``study`` needs ``key``, ``title`` and ``protocol_version``. Event dates are written only
    for the research and simulated profiles (the strict profile has no calendar information).
    """
    if generated_by not in GENERATED_BY:
        raise ValueError(f"generated_by must be one of {GENERATED_BY}")
    if export_profile not in PROFILES:
        raise ValueError(f"export_profile must be one of {PROFILES}")
    missing = [k for k in ("key", "title", "protocol_version") if k not in study]
    if missing:
        raise ValueError(f"study lacks {', '.join(missing)}")
    ev_list = []
    for e in events:
        d = (
            {"key": e.key, "description": e.description, "date": e.date}
            if isinstance(e, Event)
            else dict(e)
        )
        if export_profile == PROFILE_STRICT:
            d.pop("date", None)
        ev_list.append(d)
    prop: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "generated_by": generated_by,
        "export_profile": export_profile,
        "study": dict(study),
        "events": ev_list,
        "codebook": dict(codebook) if codebook is not None else default_codebook(),
        "deidentification": dict(deidentification or {}),
        "software": dict(software or {}),
    }
    if simulation is not None:
        prop["simulation"] = dict(simulation)
    return prop
