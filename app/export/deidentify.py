"""De-identification of an export: every released column classified, quasi-identifiers
generalized and suppressed across the package, disclosure risk measured (:mod:`app.export.risk`).

The study file classifies every column an export can release (``column_classes``)::

    column_classes:
      participants: {pid: other, status: quasi_identifier, age_band: quasi_identifier, ...}
      responses: {score: sensitive, "subscale_*": sensitive, "week_since_*": quasi_identifier, ...}
      usage: {...}
      panel: {...}
      items:                       # item answers (--items): per instrument, per-item overrides
        phq9: sensitive
        baseline: {class: quasi_identifier, items: {...}}

with the classes ``identifier`` (never released: the export refuses), ``quasi_identifier``,
``sensitive`` and ``other``; keys may be glob patterns. :func:`classify_release` refuses a
package holding a column without a class. The thresholds are in ``quasi_identifiers``::

    quasi_identifiers:
      fields: [age_band, gender, country, living_situation]   # baseline answers released
      k: 5                                                     # generalized in participants
      max_suppressed_share: 0.1
      max_individual_risk: 0.2                 # sdcMicro-style 1/f_k, per record
      max_expected_reidentifications: 60       # sum of individual risks
      sensitive: {field: phq9_band, l: 2, t: 0.35}

A participant's key is every quasi-identifier of the package: the participants table's
quasi-identifier columns (generalizable: each has a hierarchy, level 0 = finest released form,
last level = empty) and, per other table, the set of its quasi-identifier columns' row values on
the participant's earliest wave (released as they are: fixed here; a participant whose set is
shared by fewer than k is left out of the whole export, within ``max_suppressed_share``).
Every node of the generalization lattice that can still beat the best is evaluated (branch and
bound on the loss without suppression): participants in classes smaller than k (or less than
l-diverse, or farther than t from the file's sensitive distribution) are suppressed (their
generalizable cells blanked) until every class meets the thresholds; among the nodes that meet
all of them within ``max_suppressed_share`` the one with the least information loss wins (ARX's
approach: a full-domain generalization lattice searched for the optimum under a loss metric).
The loss is the normalised certainty penalty (NCP; Xu et al. 2006, one of ARX's metrics): a
value generalized to a group of g of a column's d leaves costs (g-1)/(d-1), an empty cell 1; the
loss is the mean over participants and generalizable columns. The report states the figures
measured on the released values (:func:`app.export.risk.measure`), never the declared ones.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.spec import STATUSES
from app.export import risk

DEFAULT_FIELDS = ("age_band", "gender", "country", "living_situation")
DEFAULT_K = 5
DEFAULT_MAX_SUPPRESSED_SHARE = 0.1
DEFAULT_L = 2
STAR = "*"  # fully generalized: released as an empty cell

# Output column per QI field (the contract's participants columns); others keep their name.
OUTPUT_COLUMN = {"country": "region"}

PREFER_NOT = "prefer not to say"


class DeidentificationError(ValueError):
    """The declared guarantees cannot be met, or the declaration is invalid."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class RemoveRecords(DeidentificationError):
    """Some participants' row-level quasi-identifiers are too rare for any generalization of
    the participants table to hide: the export must be made again without them (record
    suppression; they count towards ``max_suppressed_share``)."""

    def __init__(self, indices: list[int], columns: list[str]) -> None:
        super().__init__(f"{len(indices)} participant(s) to remove: rare values of "
                         f"{', '.join(columns)}")
        self.indices = indices


# ---- hierarchies ------------------------------------------------------------------------------

Level = Callable[[Any], Any]


@dataclass(frozen=True)
class Hierarchy:
    """Generalization levels of one QI: functions from the stored answer to the released value."""

    field: str
    column: str
    level_names: tuple[str, ...]
    levels: tuple[Level, ...]
    described: Mapping[str, Sequence[Any]] = field(default_factory=dict)  # level -> mapping doc
    values: tuple[str, ...] = ()  # "as answered" hierarchies: the item's option values

    @property
    def top(self) -> int:
        return len(self.levels) - 1

    @property
    def categories(self) -> list[str]:
        """Every value this hierarchy can release, in an order fixed by its definition: the
        finest level's values in the order of the instrument's options, then each coarser
        level's new values, then "prefer not to say" and "other". These are the column's
        SPSS/Stata codes (1, 2, ...), whatever values the data happen to hold."""
        out: list[str] = []
        tables = [t for t in self.described.values() if isinstance(t, Mapping)]
        for value in [*self.values, *(v for t in tables for v in t.values())]:
            if value not in out and value not in (STAR, PREFER_NOT, "other"):
                out.append(value)
        if tables or self.values:
            out += [PREFER_NOT, "other"]
        return out


def _table(mapping: Mapping[str, str]) -> Level:
    def f(value: Any) -> Any:
        if value is None:
            return None
        return mapping.get(str(value), "other")

    return f


def _star(_: Any) -> Any:
    return STAR


def _identity(value: Any) -> Any:
    if isinstance(value, list):  # a multiple-choice answer
        return ";".join(sorted(str(v) for v in value))
    return None if value is None else str(value)


def _keep(value: Any) -> Any:
    return value


def _round_down(step: int) -> Level:
    def f(value: Any) -> Any:
        return None if value is None else int(value) // step * step

    return f


_AGE_0 = {
    "age_18_24": "18-24",
    "age_25_34": "25-34",
    "age_35_44": "35-44",
    "age_45_54": "45-54",
    "age_55_64": "55-64",
    "age_65_plus": "65+",
    "prefer_not_to_say": PREFER_NOT,
}
_AGE_1 = {
    "age_18_24": "18-34",
    "age_25_34": "18-34",
    "age_35_44": "35-54",
    "age_45_54": "35-54",
    "age_55_64": "55+",
    "age_65_plus": "55+",
    "prefer_not_to_say": PREFER_NOT,
}
_GENDER_0 = {
    "woman": "woman",
    "man": "man",
    "non_binary": "non-binary",
    "another_gender": "another gender",
    "prefer_not_to_say": PREFER_NOT,
}
_GENDER_1 = {
    "woman": "woman",
    "man": "man",
    "non_binary": "another gender or not stated",
    "another_gender": "another gender or not stated",
    "prefer_not_to_say": "another gender or not stated",
}
_LIVING_0 = {
    "alone": "alone",
    "with_partner": "with partner",
    "with_family": "with family",
    "with_others": "with others",
    "other": "other",
    "prefer_not_to_say": PREFER_NOT,
}
_LIVING_1 = {
    "alone": "alone",
    "with_partner": "not alone",
    "with_family": "not alone",
    "with_others": "not alone",
    "other": "not alone",
    "prefer_not_to_say": PREFER_NOT,
}

# UN M49 subregions (lightly merged) -> continents. Unlisted codes fall into "other".
_SUBREGIONS: dict[str, tuple[str, str]] = {
    "Northern America": ("Americas", "us ca bm gl pm"),
    "Latin America and the Caribbean": (
        "Americas",
        "mx gt bz sv hn ni cr pa cu do ht jm tt bs bb pr co ve ec pe bo cl ar uy py br gy sr",
    ),
    "Northern Europe": ("Europe", "gb ie is no se fi dk ee lv lt"),
    "Western Europe": ("Europe", "de at ch fr nl be lu li mc"),
    "Southern Europe": ("Europe", "es pt it gr mt si hr ba rs me mk al ad sm va xk"),
    "Eastern Europe": ("Europe", "pl cz sk hu ro bg ua by md ru"),
    "Eastern Asia": ("Asia", "cn hk mo tw jp kr kp mn"),
    "South-eastern Asia": ("Asia", "sg my id th vn ph kh la mm bn tl"),
    "Southern Asia": ("Asia", "in pk bd lk np bt mv af ir"),
    "Central Asia": ("Asia", "kz uz tm kg tj"),
    "Western Asia": ("Asia", "tr il ae sa qa kw bh om jo lb sy iq ye cy ge am az ps"),
    "Northern Africa": ("Africa", "eg ma dz tn ly sd"),
    "Sub-Saharan Africa": (
        "Africa",
        "za ng ke gh et tz ug rw sn ci cm zw zm mz ao na bw mu mg ml bf ne td so cd cg ga",
    ),
    "Australia and New Zealand": ("Oceania", "au nz"),
    "Pacific Islands": ("Oceania", "fj pg sb vu ws to ki fm mh pw nr tv"),
}
COUNTRY_SUBREGION = {c: sub for sub, (_, cs) in _SUBREGIONS.items() for c in cs.split()}
COUNTRY_CONTINENT = {c: cont for _, (cont, cs) in _SUBREGIONS.items() for c in cs.split()}
for _code in ("other",):
    COUNTRY_SUBREGION[_code] = COUNTRY_CONTINENT[_code] = "other"
COUNTRY_SUBREGION["prefer_not_to_say"] = COUNTRY_CONTINENT["prefer_not_to_say"] = PREFER_NOT


def _country_level(table: Mapping[str, str]) -> Level:
    def f(value: Any) -> Any:
        if value is None:
            return None
        return table.get(str(value).lower(), "other")

    return f


def hierarchy_for(field_name: str, option_values: Sequence[Any] = ()) -> Hierarchy:
    """The generalization hierarchy of a QI field; unknown fields get ``value -> *``."""
    col = OUTPUT_COLUMN.get(field_name, field_name)

    def doc(*tables: Mapping[str, str]) -> dict[str, Any]:
        return {f"level_{i}": dict(t) for i, t in enumerate(tables)}

    if field_name == "age_band":
        return Hierarchy(
            field_name,
            col,
            ("10-year bands", "20-year bands (18-34, 35-54, 55+)", "not released"),
            (_table(_AGE_0), _table(_AGE_1), _star),
            doc(_AGE_0, _AGE_1),
        )
    if field_name == "gender":
        return Hierarchy(
            field_name,
            col,
            ("as answered", "woman / man / another gender or not stated", "not released"),
            (_table(_GENDER_0), _table(_GENDER_1), _star),
            doc(_GENDER_0, _GENDER_1),
        )
    if field_name == "living_situation":
        return Hierarchy(
            field_name,
            col,
            ("as answered", "alone / not alone", "not released"),
            (_table(_LIVING_0), _table(_LIVING_1), _star),
            doc(_LIVING_0, _LIVING_1),
        )
    if field_name == "country":
        values = [str(v) for v in option_values] or sorted(COUNTRY_SUBREGION)
        sub = {v: COUNTRY_SUBREGION.get(v, "other") for v in values}
        cont = {v: COUNTRY_CONTINENT.get(v, "other") for v in values}
        return Hierarchy(
            field_name,
            col,
            ("world subregion (UN M49)", "continent", "not released"),
            (_country_level(COUNTRY_SUBREGION), _country_level(COUNTRY_CONTINENT), _star),
            doc(sub, cont),
            # codes in the fixed order of the regions, whichever countries the item offers
            values=(*_SUBREGIONS, *dict.fromkeys(cont for cont, _ in _SUBREGIONS.values())),
        )
    if field_name == "status":
        return Hierarchy(field_name, col, ("as released", "not released"), (_keep, _star),
                         values=tuple(STATUSES))
    if field_name == "used_4o_before_retirement":
        return Hierarchy(field_name, col, ("as released", "not released"), (_keep, _star))
    if field_name == "days_in_study":
        return Hierarchy(field_name, col,
                         ("as released", "rounded down to 4 weeks", "not released"),
                         (_keep, _round_down(28), _star))
    return Hierarchy(field_name, col, ("as answered", "not released"), (_identity, _star),
                     values=tuple(str(v) for v in option_values))


# ---- configuration ----------------------------------------------------------------------------

_QI_KEYS = {"fields", "k", "max_suppressed_share", "sensitive", "l", "max_individual_risk",
            "max_expected_reidentifications"}


@dataclass(frozen=True)
class QIConfig:
    fields: tuple[str, ...] = DEFAULT_FIELDS
    k: int = DEFAULT_K
    max_suppressed_share: float = DEFAULT_MAX_SUPPRESSED_SHARE
    sensitive: str | None = None
    l_diversity: int = DEFAULT_L
    declared: bool = False  # False: defaults used, the study file declares nothing
    t_closeness: float | None = None  # largest EMD allowed (None: not required)
    max_individual_risk: float | None = None  # largest 1/f_k allowed
    max_expected_reidentifications: float | None = None  # largest sum of 1/f_k allowed

    @property
    def effective_k(self) -> int:
        """k, raised so that 1/f_k stays within max_individual_risk."""
        if not self.max_individual_risk:
            return self.k
        return max(self.k, math.ceil(1 / self.max_individual_risk - 1e-9))

    def as_dict(self) -> dict[str, Any]:
        return {
            "fields": list(self.fields),
            "k": self.k,
            "max_suppressed_share": self.max_suppressed_share,
            "sensitive": self.sensitive,
            "l": self.l_diversity if self.sensitive else None,
            "t": self.t_closeness if self.sensitive else None,
            "max_individual_risk": self.max_individual_risk,
            "max_expected_reidentifications": self.max_expected_reidentifications,
            "source": "study file (quasi_identifiers)" if self.declared else "defaults",
        }


def _number(where: str, value: Any, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low or (
            high is not None and value > high):
        span = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
        raise DeidentificationError(f"{where}: a number {span}, not {value!r}")
    return float(value)


def parse_config(study: Mapping[str, Any]) -> QIConfig:
    """Read ``quasi_identifiers`` from the study file content; defaults when absent."""
    raw = study.get("quasi_identifiers")
    if raw is None:
        return QIConfig()
    where = "study file: quasi_identifiers"
    if not isinstance(raw, Mapping):
        raise DeidentificationError(f"{where}: must be a mapping")
    unknown = sorted(set(raw) - _QI_KEYS)
    if unknown:
        raise DeidentificationError(f"{where}: unknown key(s) {', '.join(unknown)}")
    fields = raw.get("fields", list(DEFAULT_FIELDS))
    if (
        not isinstance(fields, list)
        or not all(isinstance(f, str) and f for f in fields)
        or len(set(fields)) != len(fields)
    ):
        raise DeidentificationError(f"{where}.fields: a list of distinct item names")
    k = raw.get("k", DEFAULT_K)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise DeidentificationError(f"{where}.k: a whole number of at least 1, not {k!r}")
    share = _number(f"{where}.max_suppressed_share",
                    raw.get("max_suppressed_share", DEFAULT_MAX_SUPPRESSED_SHARE), 0, 1)
    max_risk = raw.get("max_individual_risk")
    if max_risk is not None:
        max_risk = _number(f"{where}.max_individual_risk", max_risk, 0, 1)
        if max_risk <= 0:
            raise DeidentificationError(f"{where}.max_individual_risk: above 0 (1/f_k > 0)")
    max_er = raw.get("max_expected_reidentifications")
    if max_er is not None:
        max_er = _number(f"{where}.max_expected_reidentifications", max_er, 0)
    sensitive = raw.get("sensitive")
    l_div = raw.get("l", DEFAULT_L)
    t = None
    if isinstance(sensitive, Mapping):
        extra = sorted(set(sensitive) - {"field", "l", "t"})
        if extra:
            raise DeidentificationError(f"{where}.sensitive: unknown key(s) {', '.join(extra)}")
        l_div = sensitive.get("l", l_div)
        if "t" in sensitive:
            t = _number(f"{where}.sensitive.t", sensitive["t"], 0, 1)
        sensitive = sensitive.get("field")
    if sensitive is not None and not (isinstance(sensitive, str) and sensitive):
        raise DeidentificationError(f"{where}.sensitive: a field name or {{field, l, t}}")
    if not isinstance(l_div, int) or isinstance(l_div, bool) or l_div < 1:
        raise DeidentificationError(f"{where}.sensitive.l: a whole number of at least 1")
    if sensitive is not None and sensitive in fields:
        raise DeidentificationError(f"{where}.sensitive: {sensitive!r} is also a quasi-identifier")
    return QIConfig(tuple(fields), k, share, sensitive, l_div, declared=True, t_closeness=t,
                    max_individual_risk=max_risk, max_expected_reidentifications=max_er)


# ---- column classes ---------------------------------------------------------------------------

IDENTIFIER = "identifier"
QUASI_IDENTIFIER = "quasi_identifier"
SENSITIVE = "sensitive"
OTHER = "other"
CLASSES = (IDENTIFIER, QUASI_IDENTIFIER, SENSITIVE, OTHER)
TABLES = ("participants", "responses", "usage", "panel")


@dataclass(frozen=True)
class ColumnClasses:
    """The study file's ``column_classes``: table -> {column or glob: class}; item answers per
    instrument (a default class and per-item overrides)."""

    tables: Mapping[str, Mapping[str, str]]
    items: Mapping[str, tuple[str | None, Mapping[str, str]]]

    def of_column(self, table: str, column: str) -> str | None:
        entries = self.tables.get(table, {})
        if column in entries:
            return entries[column]
        return next((c for pat, c in entries.items() if fnmatch.fnmatchcase(column, pat)), None)

    def of_item(self, instrument: str, item: str) -> str | None:
        default, overrides = self.items.get(instrument, (None, {}))
        return overrides.get(item, default)


def _class(where: str, value: Any) -> str:
    if value not in CLASSES:
        raise DeidentificationError(
            f"study file: {where}: {value!r} is not a privacy class (use one of "
            f"{', '.join(CLASSES)})")
    return str(value)


def parse_classes(study: Mapping[str, Any]) -> ColumnClasses:
    """Read and check ``column_classes``; a missing block classifies nothing (so any export
    is refused by :func:`classify_release`)."""
    raw = study.get("column_classes")
    where = "column_classes"
    if raw is None:
        return ColumnClasses({}, {})
    if not isinstance(raw, Mapping):
        raise DeidentificationError(f"study file: {where}: a mapping of tables to columns")
    unknown = sorted(set(raw) - {*TABLES, "items"})
    if unknown:
        raise DeidentificationError(
            f"study file: {where}: unknown table(s) {', '.join(map(str, unknown))} (tables: "
            f"{', '.join(TABLES)}, and items)")
    tables: dict[str, dict[str, str]] = {}
    for table in TABLES:
        entries = raw.get(table) or {}
        if not isinstance(entries, Mapping):
            raise DeidentificationError(f"study file: {where}.{table}: a mapping column -> class")
        tables[table] = {str(c): _class(f"{where}.{table}.{c}", v) for c, v in entries.items()}
    items: dict[str, tuple[str | None, dict[str, str]]] = {}
    for inst, spec_ in (raw.get("items") or {}).items():
        at = f"{where}.items.{inst}"
        if isinstance(spec_, str):
            items[str(inst)] = (_class(at, spec_), {})
            continue
        if not isinstance(spec_, Mapping) or set(spec_) - {"class", "items"}:
            raise DeidentificationError(
                f"study file: {at}: a class, or {{class: <class>, items: {{<item>: <class>}}}}")
        default = _class(f"{at}.class", spec_["class"]) if "class" in spec_ else None
        overrides = spec_.get("items") or {}
        if not isinstance(overrides, Mapping):
            raise DeidentificationError(f"study file: {at}.items: a mapping item -> class")
        items[str(inst)] = (default, {str(i): _class(f"{at}.items.{i}", c)
                                      for i, c in overrides.items()})
    return ColumnClasses(tables, items)


def classify_release(
    classes: ColumnClasses,
    columns: Mapping[str, Sequence[str]],
    item_of: Mapping[tuple[str, str], tuple[str, str]],
) -> dict[str, dict[str, str]]:
    """The class of every column the package will hold (table -> column -> class);
    ``item_of`` maps (table, column) of item answers to (instrument, item). Refuses, naming
    the column, a column without a class or one classified identifier."""
    out: dict[str, dict[str, str]] = {}
    for table, cols in columns.items():
        out[table] = {}
        for col in cols:
            item = item_of.get((table, col))
            if item is not None and table != "participants":  # answers: by instrument
                cls = classes.of_item(*item)
            else:  # the participants table names its columns; a moved answer falls back
                cls = classes.of_column(table, col) or (classes.of_item(*item) if item else None)
            if cls is None:
                where = (f"column_classes.items.{item[0]} (item {item[1]})" if item
                         else f"column_classes.{table}")
                raise DeidentificationError(
                    f"column {col!r} of {table} has no privacy class in the study file "
                    f"({where}): every released column must be classified as one of "
                    f"{', '.join(CLASSES)}; nothing was written",
                    details={"table": table, "column": col})
            if cls == IDENTIFIER:
                raise DeidentificationError(
                    f"column {col!r} of {table} is classified identifier in the study file: "
                    "identifiers are never released; nothing was written",
                    details={"table": table, "column": col})
            out[table][col] = cls
    return out


# ---- the search -------------------------------------------------------------------------------


@dataclass
class NodeResult:
    levels: tuple[int, ...]
    suppressed: np.ndarray  # bool per participant
    n_suppressed: int
    loss: float
    feasible: bool
    reason: str | None


@dataclass
class Anonymized:
    """Released QI values (column -> list, None = empty cell), suppression flags and report."""

    columns: dict[str, list[Any]]
    suppressed: list[bool]
    report: dict[str, Any]


def _codes(values: Sequence[Any]) -> np.ndarray:
    """Integer codes of released values: 0 for an empty cell (no answer, or not released),
    which is also what a suppressed cell becomes."""
    return risk.class_ids([None, *(None if v == STAR else _hashable(v) for v in values)])[1:]


def _compress(codes: np.ndarray) -> tuple[np.ndarray, int]:
    _, inverse = np.unique(codes, return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse, int(inverse.max(initial=-1)) + 1


def _ncp(raw_codes: np.ndarray, gen_values: Sequence[Any], domain: int) -> np.ndarray:
    """Normalised certainty penalty of each participant's generalized value: (g-1)/(d-1), g the
    number of leaves (distinct raw answers) generalized to the same value."""
    if domain <= 1:
        return np.zeros(len(raw_codes))
    leaves: dict[Any, set[int]] = {}
    for rc, v in zip(raw_codes, gen_values, strict=True):
        leaves.setdefault(v, set()).add(int(rc))
    out = np.empty(len(raw_codes))
    for i, v in enumerate(gen_values):
        if v is None:
            out[i] = 0.0  # nothing was answered: nothing lost
        elif v == STAR:
            out[i] = 1.0
        else:
            out[i] = (len(leaves[v]) - 1) / (domain - 1)
    return out


@dataclass
class _Problem:
    gen_codes: list[list[np.ndarray]]  # field -> level -> code per participant
    ncp: list[list[np.ndarray]]  # field -> level -> penalty per participant
    fixed: np.ndarray  # class of the row-level (not generalizable) part of the key
    fixed_span: int
    radix: list[list[int]]  # field -> level -> number of codes
    sens: np.ndarray | None  # codes, -1 missing
    m: int
    ordered: bool
    cfg: QIConfig
    n: int
    removed: int = 0  # participants left out of the export (record suppression)
    weighted: list[list[np.ndarray]] | None = None  # codes x the field's weight, if they fit
    ncp_sum: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ncp_sum = [[float(c.sum()) for c in per] for per in self.ncp]
        span = self.fixed_span
        weighted = []
        for per in self.gen_codes:
            radix = max((int(c.max(initial=0)) + 1 for c in per), default=1)
            weighted.append([c.astype(np.int64) * span for c in per])
            span *= radix
            if span >= 2**62:
                return
        self.weighted = weighted


def _bad_classes(p: _Problem, cls: np.ndarray) -> tuple[np.ndarray, str | None]:
    sizes = np.bincount(cls)
    bad = sizes < p.cfg.effective_k
    why = "k"
    if p.sens is not None:
        has = np.bincount(cls[p.sens >= 0], minlength=len(sizes)) > 0
        div = risk.class_diversity(cls, p.sens, p.m)
        bad |= has & (div < p.cfg.l_diversity)
        if p.cfg.t_closeness is not None:
            far = risk.class_t_closeness(cls, p.sens, p.m, p.ordered) > p.cfg.t_closeness + 1e-12
            bad |= far
    return bad, why


def _classes(p: _Problem, levels: tuple[int, ...], supp: np.ndarray | None = None
             ) -> np.ndarray:
    """Equivalence classes (0..c-1) of the released keys: mixed-radix codes, compressed only
    when they would overflow."""
    if p.weighted is not None:  # one radix per field for every level: a sum of arrays
        key = p.fixed + sum((p.weighted[f][lv] for f, lv in enumerate(levels)),
                            np.zeros(p.n, np.int64))
        if supp is not None and supp.any():
            key = np.where(supp, p.fixed, key)
        return _compress(key)[0]
    if supp is None:
        supp = np.zeros(p.n, bool)
    cls, span = p.fixed, p.fixed_span
    for f, lv in enumerate(levels):
        radix = p.radix[f][lv]
        if span * radix >= 2**62:
            cls, span = _compress(cls)
        cls = cls * radix + np.where(supp, 0, p.gen_codes[f][lv])
        span *= radix
    return _compress(cls)[0]


def _loss(p: _Problem, levels: tuple[int, ...], supp: np.ndarray) -> float:
    """Mean NCP over participants and fields, a suppressed cell counting 1."""
    if not p.n or not levels:
        return 0.0
    total = sum(p.ncp_sum[f][lv] for f, lv in enumerate(levels))
    idx = np.flatnonzero(supp)
    if len(idx):
        total += len(idx) * len(levels) - sum(p.ncp[f][lv][idx].sum()
                                              for f, lv in enumerate(levels))
    return float(total / (p.n * len(levels)))


def _evaluate(p: _Problem, levels: tuple[int, ...], best: float | None = None
              ) -> NodeResult | None:
    """The node's suppression, loss and feasibility; None when it cannot beat ``best`` (the
    people in classes under k must be suppressed in any case: a cheap lower bound)."""
    cls0 = _classes(p, levels)
    must = np.bincount(cls0)[cls0] < p.cfg.effective_k
    if p.n and (must.sum() + p.removed) / (p.n + p.removed) > \
            p.cfg.max_suppressed_share + 1e-12:
        return NodeResult(levels, must, int(must.sum()), 1.0, False,
                          f"suppresses at least {int(must.sum())} of {p.n} participants")
    if best is not None and _loss(p, levels, must) > best + 1e-12:
        return None
    supp = np.zeros(p.n, bool)
    feasible, reason = True, None
    for _ in range(p.n + 1):
        cls = _classes(p, levels, supp)
        bad, _why = _bad_classes(p, cls)
        if not bad.any():
            break
        members = bad[cls]
        newly = members & ~supp
        if newly.any():
            supp |= newly
            continue
        # only suppressed people are left in bad classes: they differ by the row-level part of
        # their key, which suppression cannot hide; pad with the smallest class sharing it
        victim = int(np.flatnonzero(members)[0])
        same = (p.fixed == p.fixed[victim]) & ~supp
        if not same.any():
            feasible = False
            reason = ("participants whose row-level quasi-identifiers (the set of values of a "
                      "row-level column) are too rare to be hidden by suppression")
            break
        sizes = np.bincount(cls)
        cand = np.unique(cls[same])
        supp |= cls == cand[np.argmin(sizes[cand])]
    n_supp = int(supp.sum())
    if feasible and p.n and (n_supp + p.removed) / (p.n + p.removed) > \
            p.cfg.max_suppressed_share + 1e-12:
        feasible = False
        reason = f"suppresses {n_supp + p.removed} of {p.n + p.removed} participants"
    if feasible and p.cfg.max_expected_reidentifications is not None:
        classes = int(_classes(p, levels, supp).max(initial=-1)) + 1
        if classes > p.cfg.max_expected_reidentifications + 1e-9:
            feasible = False
            reason = f"{classes} expected re-identifications"
    return NodeResult(levels, supp, n_supp, _loss(p, levels, supp), feasible, reason)


def _search(p: _Problem, tops: Sequence[int]) -> tuple[list[NodeResult], list[NodeResult], int]:
    """Every lattice node that can still beat the best one found: nodes in order of their loss
    without any suppression (a lower bound, as a suppressed cell costs the most), stopping once
    that bound reaches the best feasible loss (branch and bound: the optimum is exact)."""
    mean_ncp = [[float(c.mean()) if p.n else 0.0 for c in per] for per in p.ncp]
    f_count = max(len(tops), 1)

    def bound(levels: tuple[int, ...]) -> float:
        return sum(mean_ncp[f][lv] for f, lv in enumerate(levels)) / f_count if tops else 0.0

    lattice = sorted(itertools.product(*[range(t + 1) for t in tops]),
                     key=lambda lv: (bound(lv), sum(lv), lv))
    results: list[NodeResult] = []
    best: float | None = None
    for levels in lattice:
        if best is not None and bound(levels) > best + 1e-12:
            break
        r = _evaluate(p, levels, best)
        if r is None:
            continue
        results.append(r)
        if r.feasible and (best is None or r.loss < best):
            best = r.loss
    return results, [r for r in results if r.feasible], len(lattice)


def _check_row_level(fixed_cls: np.ndarray, columns: list[str], cfg: QIConfig, n: int,
                     removed: int) -> None:
    """Row-level quasi-identifiers are released as they are: a participant whose combination of
    them is shared by fewer than k can be protected by no generalization of the others, only by
    leaving them out (:class:`RemoveRecords`) while the suppressed share allows it."""
    sizes = np.bincount(fixed_cls)
    rare_mask = sizes[fixed_cls] < cfg.effective_k
    rare = int(rare_mask.sum()) + removed
    if rare and (rare / (n + removed) <= cfg.max_suppressed_share + 1e-12) and not removed:
        raise RemoveRecords([int(i) for i in np.flatnonzero(rare_mask)], columns)
    if rare_mask.any():
        raise DeidentificationError(
            f"the de-identification thresholds cannot be met: {rare} of {n} participants have a "
            f"combination of row-level quasi-identifiers ({', '.join(columns)}) shared by fewer "
            f"than {cfg.effective_k}"
            + (f" (k={cfg.k}, individual risk at most {cfg.max_individual_risk:g})"
               if cfg.effective_k != cfg.k else f" (k={cfg.k})")
            + f", more than the study's {cfg.max_suppressed_share:.0%} can leave out; no "
            "generalization of the participants table can hide them; coarsen or reclassify those "
            "columns in the study file. Nothing was written.",
            details={"row_level_quasi_identifiers": columns, "participants": n,
                     "rare": rare, "k": cfg.effective_k})


def anonymize(
    raw: Mapping[str, Sequence[Any]],
    cfg: QIConfig,
    *,
    sensitive_values: Sequence[Any] | None = None,
    option_values: Mapping[str, Sequence[Any]] | None = None,
    fields: Sequence[str] | None = None,
    fixed: Mapping[str, Sequence[Any]] | None = None,
    sensitive_order: Sequence[Any] | None = None,
    removed: int = 0,
) -> Anonymized:
    """Generalize and suppress ``raw`` (QI field -> values, one per participant; the fields are
    ``fields``, by default the study's ``quasi_identifiers.fields``). ``fixed``: row-level
    quasi-identifiers (column -> the participant's hashable set of released values), part of
    every participant's key but not generalized here. ``sensitive_order``: the sensitive
    attribute's values in order when it is ordinal (t-closeness then uses the ordered
    distance). ``removed``: participants already left out of this export (record suppression,
    counted in the suppressed share).

    Raises :class:`RemoveRecords` when the export must leave some participants out, and
    :class:`DeidentificationError` when no generalization meets the thresholds within
    the allowed suppressed share.
    """
    option_values = option_values or {}
    fields = tuple(cfg.fields if fields is None else fields)
    hierarchies = [hierarchy_for(f, option_values.get(f, ())) for f in fields]
    fixed = dict(fixed or {})
    n = len(next(iter(raw.values()))) if raw else (
        len(next(iter(fixed.values()))) if fixed else 0)
    if sensitive_values is not None and not raw and not fixed:
        n = len(sensitive_values)
    generalized: list[list[list[Any]]] = []
    gen_codes: list[list[np.ndarray]] = []
    ncp: list[list[np.ndarray]] = []
    for h in hierarchies:
        values = list(raw.get(h.field, [None] * n))
        raw_codes = _codes([_hashable(v) for v in values])
        domain = len({_hashable(v) for v in values if v is not None}
                     | {str(v) for v in option_values.get(h.field, ())})
        per_level = [[lvl(v) for v in values] for lvl in h.levels]
        generalized.append(per_level)
        gen_codes.append([_codes(vals) for vals in per_level])
        ncp.append([_ncp(raw_codes, vals, domain) for vals in per_level])
    fixed_keys = [tuple(fixed[c][i] for c in fixed) for i in range(n)]
    sens = None
    m = 0
    if cfg.sensitive and sensitive_values is not None:
        sens, m = risk.sensitive_codes(list(sensitive_values), sensitive_order)
    fixed_cls = risk.class_ids(fixed_keys)
    problem = _Problem(gen_codes, ncp, fixed_cls, int(fixed_cls.max(initial=-1)) + 1,
                       [[int(c.max(initial=0)) + 1 for c in per] for per in gen_codes],
                       sens, m, sensitive_order is not None, cfg, n, removed)
    if fixed and n:
        _check_row_level(fixed_cls, list(fixed), cfg, n, removed)
    results, feasible, total_nodes = _search(problem, [h.top for h in hierarchies])
    if not feasible:
        best = min(results, key=lambda r: (not r.reason or "row-level" not in r.reason,
                                           r.n_suppressed, r.loss))
        wanted = [f"k={cfg.k}"]
        if cfg.effective_k != cfg.k:
            wanted.append(f"individual risk at most {cfg.max_individual_risk:g}")
        if cfg.sensitive:
            wanted.append(f"l={cfg.l_diversity} for {cfg.sensitive!r}")
            if cfg.t_closeness is not None:
                wanted.append(f"t={cfg.t_closeness:g} for {cfg.sensitive!r}")
        if cfg.max_expected_reidentifications is not None:
            wanted.append(f"at most {cfg.max_expected_reidentifications:g} expected "
                          "re-identifications")
        on = ", ".join([*fields, *fixed]) or "no quasi-identifier"
        raise DeidentificationError(
            f"the de-identification thresholds cannot be met ({'; '.join(wanted)}) on {on}: "
            f"the best generalization would suppress {best.n_suppressed} of {n} participants"
            + (f" ({best.reason})" if best.reason else "")
            + f"; the study allows at most {cfg.max_suppressed_share:.0%}. Nothing was written.",
            details={
                "k": cfg.k,
                "participants": n,
                "least_suppressed": best.n_suppressed,
                "max_suppressed_share": cfg.max_suppressed_share,
                "row_level_quasi_identifiers": list(fixed),
                "levels": {h.field: h.level_names[lv] for h, lv in
                           zip(hierarchies, best.levels, strict=True)},
            },
        )
    chosen = min(feasible, key=lambda r: (r.loss, r.n_suppressed, sum(r.levels), r.levels))
    columns: dict[str, list[Any]] = {}
    for h, per_level, lv in zip(hierarchies, generalized, chosen.levels, strict=True):
        vals = per_level[lv]
        columns[h.column] = [
            None if (s or v is None or v == STAR) else v
            for v, s in zip(vals, chosen.suppressed, strict=True)
        ]
    # measured on what is released, independently of the search's own bookkeeping
    keys = [tuple(_hashable(columns[c][i]) for c in columns) + fixed_keys[i] for i in range(n)]
    measured = risk.measure(keys, None if sens is None else list(sensitive_values or []),
                            sensitive_order)
    m_dict = measured.as_dict()
    report = {
        "method": "full-domain generalization lattice over the quasi-identifier hierarchies; in "
        "each node, participants in classes smaller than k (or less than l-diverse, or farther "
        "than t from the whole file's sensitive distribution) have their generalizable "
        "quasi-identifier cells suppressed (empty) until every class meets the thresholds; the "
        "node with the least information loss (normalised certainty penalty) within the "
        "allowed suppressed share is released. Every figure below is measured on the released "
        "values (app/export/risk.py). Participants whose row-level quasi-identifiers (other "
        "tables' columns, at their earliest wave) are shared by fewer than k are left out of "
        "the whole export (records_removed, counted in the suppressed share)",
        "thresholds": cfg.as_dict(),
        "quasi_identifier_columns": {
            "participants": [h.column for h in hierarchies],
            "row_level": list(fixed),
        },
        "participants": n,
        "suppressed": chosen.n_suppressed,
        "records_removed": removed,
        "suppressed_share": round((chosen.n_suppressed + removed) / (n + removed), 6)
        if n + removed else 0.0,
        **m_dict,
        "smallest_class": m_dict["k"],
        "sensitive": cfg.sensitive,
        "k_anonymous": bool(n == 0 or (measured.k or 0) >= cfg.k),
        "l_diverse": (None if cfg.sensitive is None else measured.l_diversity is None
                      or measured.l_diversity >= cfg.l_diversity),
        "t_close": (None if cfg.sensitive is None or cfg.t_closeness is None
                    else measured.t_closeness is None
                    or measured.t_closeness <= cfg.t_closeness + 1e-12),
        "risk_model": "individual risk r_i = 1/f_k, f_k the number of released records sharing "
        "record i's quasi-identifier values (an empty cell is a value of its own); expected "
        "re-identifications = sum of r_i; global risk = that sum / n: sdcMicro's measure_risk "
        "without sampling weights (https://search.r-project.org/CRAN/refmans/sdcMicro/html/"
        "measure_risk.html). t: Earth Mover's Distance between a class's and everyone's "
        "sensitive values, ordered distance for an ordinal attribute",
        "information_loss": round(chosen.loss, 6),
        "information_loss_metric": "normalised certainty penalty: mean over participants and "
        "generalizable quasi-identifier columns of (g-1)/(d-1), g the answers merged into the "
        "released value and d the column's distinct answers; an empty (suppressed or not "
        "released) cell counts 1",
        "lattice_nodes": total_nodes,
        "lattice_nodes_evaluated": len(results),
        "lattice_nodes_meeting_thresholds": len(feasible),
        "generalization": {
            h.field: {
                "column": h.column,
                "level": lv,
                "level_name": h.level_names[lv],
                "levels": list(h.level_names),
                "released": lv < h.top,
                "hierarchy": dict(h.described),
            }
            for h, lv in zip(hierarchies, chosen.levels, strict=True)
        },
    }
    return Anonymized(columns=columns, suppressed=[bool(s) for s in chosen.suppressed],
                      report=report)


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(v)
    if isinstance(v, float) and v != v:  # NaN
        return None
    return v


def check_k_anonymity(rows: Sequence[Sequence[Any]], k: int) -> int:
    """Smallest equivalence class size among released QI tuples (a check for tests/audits)."""
    counts: dict[tuple[Any, ...], int] = {}
    for r in rows:
        counts[tuple(r)] = counts.get(tuple(r), 0) + 1
    return min(counts.values()) if counts else 0


# ---- the package's quasi-identifiers ----------------------------------------------------------

# participants columns with a hierarchy of their own (not baseline answers)
PARTICIPANT_QI_COLUMNS = ("status", "days_in_study", "used_4o_before_retirement")


def item_quasi_identifiers(classes: ColumnClasses, instrument: Any, taken: Sequence[str]
                           ) -> list[str]:
    """Items of the enrollment-only ``instrument`` classified quasi-identifier (and not yet
    among ``taken``): with --items they are released generalized in the participants table, not
    as raw answers in responses (a multiple-choice answer as its options joined by ";")."""
    return [item.id for item in instrument.items
            if item.type != "text" and item.id not in taken
            and classes.of_item(instrument.key, item.id) == QUASI_IDENTIFIER]


def released_options(item: Any) -> tuple[Any, ...]:
    """The values a generalized answer can take, in the item's order: its options, or for a
    multiple-choice item every combination of them as released (sorted, joined by ";"), so
    that their SPSS/Stata codes are fixed by the definition."""
    values = tuple(item.option_values)
    if item.type != "multiple_choice":
        return values
    names = [str(v) for v in values]
    combos = [";".join(sorted(c)) for r in range(1, len(names) + 1)
              for c in itertools.combinations(names, r)]
    return tuple(combos)


def row_level_signatures(
    files: Mapping[str, Any], classified: Mapping[str, Mapping[str, str]], pids: Sequence[str]
) -> dict[str, list[Any]]:
    """Per table other than participants, its quasi-identifier columns as an outsider who knows
    the participant at enrollment matches them: "<table>:<col>+<col>" -> per pid (in ``pids``
    order) the set of the row tuples of those columns on the participant's earliest wave in
    that table. Later rows differ from these only by the time elapsed, which ``wave`` and
    ``day`` say (classified other: which waves someone answered is outside the attacker model).
    Read from the written files (``files``: table -> path of a .csv or .parquet file), so what
    is measured is what is released."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out: dict[str, list[Any]] = {}
    for table, path in files.items():
        cols = [c for c, cls in classified.get(table, {}).items() if cls == QUASI_IDENTIFIER]
        if not cols:
            continue
        names = list(dict.fromkeys(["pid", "wave", *cols]))
        if str(path).endswith(".parquet"):
            data = pq.read_table(path, columns=names)
        else:
            data = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                include_columns=names, column_types={c: pa.string() for c in names}))
        data = data.cast(pa.schema([(c, pa.string()) for c in data.column_names]))
        pid_col = data.column("pid").to_pylist()
        waves = [int(w) for w in data.column("wave").to_pylist()]
        values = [pc.fill_null(data.column(c), "").to_pylist() for c in cols]
        first: dict[str, int] = {}
        for pid, w in zip(pid_col, waves, strict=True):
            first[pid] = min(w, first.get(pid, w))
        sets: dict[str, set[tuple[Any, ...]]] = {}
        for i, pid in enumerate(pid_col):
            if waves[i] == first[pid]:
                sets.setdefault(pid, set()).add(tuple(v[i] for v in values))
        out[f"{table}:{'+'.join(cols)}"] = [frozenset(sets.get(p, ())) for p in pids]
    return out
