"""De-identification of the participants table: generalize quasi-identifiers, then suppress.

The study file declares its quasi-identifiers (QIs)::

    quasi_identifiers:
      fields: [age_band, gender, country, living_situation]
      k: 5
      max_suppressed_share: 0.1
      sensitive: {field: phq9_band, l: 2}

Each QI has a generalization hierarchy (level 0 = finest released form, last level = ``*``,
i.e. not released). ``country`` is never released as such: its finest level is a world
subregion, written to the ``region`` column. Every combination of levels (the lattice) is tried;
in each, participants in equivalence classes smaller than ``k`` (or with fewer than ``l``
distinct values of the sensitive attribute) are suppressed: all their QI cells are blanked. The
suppressed participants form one more class, which must itself hold at least ``k`` people (and
``l`` sensitive values), else more of the smallest classes are suppressed with them. Of the
combinations whose suppressed share stays within ``max_suppressed_share``, the one losing the
least information wins (loss = mean over participants and QIs of the generalization height, a
suppressed cell counting as fully lost). When none qualifies the export is refused.

Everything here is pure (no database); :func:`anonymize` returns the released values and a
report that goes into ``datapackage.json``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    return None if value is None else str(value)


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
    return Hierarchy(field_name, col, ("as answered", "not released"), (_identity, _star),
                     values=tuple(str(v) for v in option_values))


# ---- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QIConfig:
    fields: tuple[str, ...] = DEFAULT_FIELDS
    k: int = DEFAULT_K
    max_suppressed_share: float = DEFAULT_MAX_SUPPRESSED_SHARE
    sensitive: str | None = None
    l_diversity: int = DEFAULT_L
    declared: bool = False  # False: defaults used, the study file declares nothing

    def as_dict(self) -> dict[str, Any]:
        return {
            "fields": list(self.fields),
            "k": self.k,
            "max_suppressed_share": self.max_suppressed_share,
            "sensitive": self.sensitive,
            "l": self.l_diversity if self.sensitive else None,
            "source": "study file (quasi_identifiers)" if self.declared else "defaults",
        }


def parse_config(study: Mapping[str, Any]) -> QIConfig:
    """Read ``quasi_identifiers`` from the study file content; defaults when absent."""
    raw = study.get("quasi_identifiers")
    if raw is None:
        return QIConfig()
    where = "study file: quasi_identifiers"
    if not isinstance(raw, Mapping):
        raise DeidentificationError(f"{where}: must be a mapping")
    unknown = sorted(set(raw) - {"fields", "k", "max_suppressed_share", "sensitive", "l"})
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
    share = raw.get("max_suppressed_share", DEFAULT_MAX_SUPPRESSED_SHARE)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise DeidentificationError(
            f"{where}.max_suppressed_share: a number from 0 to 1, not {share!r}"
        )
    sensitive = raw.get("sensitive")
    l_div = raw.get("l", DEFAULT_L)
    if isinstance(sensitive, Mapping):
        l_div = sensitive.get("l", l_div)
        sensitive = sensitive.get("field")
    if sensitive is not None and not (isinstance(sensitive, str) and sensitive):
        raise DeidentificationError(f"{where}.sensitive: a field name or {{field, l}}")
    if not isinstance(l_div, int) or isinstance(l_div, bool) or l_div < 1:
        raise DeidentificationError(f"{where}.sensitive.l: a whole number of at least 1")
    if sensitive is not None and sensitive in fields:
        raise DeidentificationError(f"{where}.sensitive: {sensitive!r} is also a quasi-identifier")
    return QIConfig(tuple(fields), k, float(share), sensitive, l_div, declared=True)


# ---- the search -------------------------------------------------------------------------------


@dataclass
class NodeResult:
    levels: tuple[int, ...]
    suppressed: np.ndarray  # bool per participant
    n_suppressed: int
    loss: float
    feasible: bool
    reason: str | None
    n_classes: int
    min_class: int | None
    min_diversity: int | None


@dataclass
class Anonymized:
    """Released QI values (column -> list, None = empty cell), suppression flags and report."""

    columns: dict[str, list[Any]]
    suppressed: list[bool]
    report: dict[str, Any]


def _codes(values: Sequence[Any]) -> np.ndarray:
    """Integer codes of arbitrary (hashable, None-able) values."""
    index: dict[Any, int] = {}
    return np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64, len(values))


def _class_ids(code_columns: Sequence[np.ndarray], n: int) -> np.ndarray:
    if not code_columns:
        return np.zeros(n, np.int64)
    stacked = np.column_stack(code_columns)
    _, inverse = np.unique(stacked, axis=0, return_inverse=True)
    return inverse.reshape(-1)


def _evaluate(
    levels: tuple[int, ...],
    gen_codes: Sequence[Sequence[np.ndarray]],
    tops: Sequence[int],
    sens: np.ndarray | None,
    cfg: QIConfig,
    n: int,
) -> NodeResult:
    cls = _class_ids([gen_codes[f][lv] for f, lv in enumerate(levels)], n)
    sizes = np.bincount(cls)
    suppressed_cls = sizes < cfg.k
    diversity = None
    if sens is not None:
        pairs = np.unique(np.column_stack([cls, sens]), axis=0)
        diversity = np.bincount(pairs[:, 0], minlength=len(sizes))
        suppressed_cls |= diversity < cfg.l_diversity
    supp = suppressed_cls[cls]

    def supp_ok(mask: np.ndarray) -> bool:
        m = int(mask.sum())
        if m == 0:
            return True
        if m < cfg.k:
            return False
        return sens is None or len(np.unique(sens[mask])) >= cfg.l_diversity

    if not supp_ok(supp):
        # Suppress the smallest remaining classes too, until the suppressed group is safe.
        order = sorted(np.flatnonzero(~suppressed_cls), key=lambda c: (sizes[c], c))
        for c in order:
            suppressed_cls[c] = True
            supp = suppressed_cls[cls]
            if supp_ok(supp):
                break
    n_supp = int(supp.sum())
    reason = None
    feasible = supp_ok(supp)
    if not feasible:
        reason = (
            f"only {n} participant(s)"
            if n < cfg.k
            else f"fewer than l={cfg.l_diversity} distinct values of {cfg.sensitive!r}"
        )
    elif n and n_supp / n > cfg.max_suppressed_share + 1e-12:
        feasible = False
        reason = f"suppresses {n_supp} of {n} participants"
    heights = sum(lv / top if top else 1.0 for lv, top in zip(levels, tops, strict=True))
    f_count = max(len(levels), 1)
    loss = ((n - n_supp) * heights + n_supp * f_count) / (max(n, 1) * f_count)
    kept = ~suppressed_cls
    return NodeResult(
        levels=levels,
        suppressed=supp,
        n_suppressed=n_supp,
        loss=float(loss),
        feasible=feasible,
        reason=reason,
        n_classes=int(kept.sum()) + (1 if n_supp else 0),
        min_class=int(min(sizes[kept].min(initial=n), n_supp or n)) if n else None,
        min_diversity=(
            int(min(diversity[kept].min(initial=10**9), len(np.unique(sens[supp])) if n_supp
                    else 10**9))
            if diversity is not None and sens is not None and n
            else None
        ),
    )


def anonymize(
    raw: Mapping[str, Sequence[Any]],
    cfg: QIConfig,
    *,
    sensitive_values: Sequence[Any] | None = None,
    option_values: Mapping[str, Sequence[Any]] | None = None,
) -> Anonymized:
    """Generalize and suppress ``raw`` (QI field -> stored answers, one per participant).

    Raises :class:`DeidentificationError` when no generalization meets k (and l) within the
    allowed suppressed share.
    """
    option_values = option_values or {}
    hierarchies = [hierarchy_for(f, option_values.get(f, ())) for f in cfg.fields]
    n = len(next(iter(raw.values()))) if raw else 0
    generalized: list[list[list[Any]]] = []
    gen_codes: list[list[np.ndarray]] = []
    for h in hierarchies:
        values = list(raw.get(h.field, [None] * n))
        per_level = [[lvl(v) for v in values] for lvl in h.levels]
        generalized.append(per_level)
        gen_codes.append([_codes(vals) for vals in per_level])
    sens = None
    if cfg.sensitive and sensitive_values is not None:
        sens = _codes(list(sensitive_values))
    tops = [h.top for h in hierarchies]
    lattice = list(itertools.product(*[range(t + 1) for t in tops]))
    results = [_evaluate(lv, gen_codes, tops, sens, cfg, n) for lv in lattice]
    feasible = [r for r in results if r.feasible]
    if not feasible:
        best = min(results, key=lambda r: (r.n_suppressed, r.loss))
        raise DeidentificationError(
            f"k-anonymity cannot be reached: k={cfg.k} on {', '.join(cfg.fields)}"
            + (f" with l={cfg.l_diversity} for {cfg.sensitive!r}" if cfg.sensitive else "")
            + f" would suppress at least {best.n_suppressed} of {n} participants"
            + (f" ({best.reason})" if best.reason else "")
            + f"; the study allows at most {cfg.max_suppressed_share:.0%}. Nothing was written.",
            details={
                "k": cfg.k,
                "participants": n,
                "least_suppressed": best.n_suppressed,
                "max_suppressed_share": cfg.max_suppressed_share,
                "levels": {h.field: h.level_names[lv] for h, lv in
                           zip(hierarchies, best.levels, strict=True)},
            },
        )
    chosen = min(feasible, key=lambda r: (r.loss, sum(r.levels), r.levels))
    columns: dict[str, list[Any]] = {}
    for h, per_level, lv in zip(hierarchies, generalized, chosen.levels, strict=True):
        vals = per_level[lv]
        columns[h.column] = [
            None if (s or v is None or v == STAR) else v
            for v, s in zip(vals, chosen.suppressed, strict=True)
        ]
    report = {
        "method": "generalization over the full lattice of QI hierarchies, then suppression of "
        "every participant in a class smaller than k (or less than l-diverse); the suppressed "
        "participants' QI cells are empty and form one class of at least k; the least "
        "information loss within the allowed suppressed share is chosen",
        **cfg.as_dict(),
        "participants": n,
        "suppressed": chosen.n_suppressed,
        "suppressed_share": round(chosen.n_suppressed / n, 6) if n else 0.0,
        "equivalence_classes": chosen.n_classes,
        "smallest_class": chosen.min_class,
        "k_anonymous": True,
        "l_diverse": (
            None if cfg.sensitive is None else chosen.min_diversity is None
            or chosen.min_diversity >= cfg.l_diversity
        ),
        "smallest_sensitive_diversity": chosen.min_diversity,
        "information_loss": round(chosen.loss, 6),
        "lattice_nodes_evaluated": len(results),
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


def check_k_anonymity(rows: Sequence[Sequence[Any]], k: int) -> int:
    """Smallest equivalence class size among released QI tuples (a check for tests/audits)."""
    counts: dict[tuple[Any, ...], int] = {}
    for r in rows:
        counts[tuple(r)] = counts.get(tuple(r), 0) + 1
    return min(counts.values()) if counts else 0
