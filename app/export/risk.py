"""Disclosure risk of released records, measured on the values actually released.

Every participant has one *key*: the tuple of their released quasi-identifier values, gathered
from every table of the package (participant columns, and per row-level quasi-identifier column
the set of values it takes on the participant's rows). An empty (suppressed) cell is a value of
its own, never a wildcard, which can only make classes smaller and the risk higher.

The figures follow sdcMicro's ``measure_risk`` for data without sampling weights (every weight
1, so the estimated population frequency F_k equals the sample frequency f_k):

- individual risk of record i: ``r_i = 1 / f_k(i)``, f_k(i) the number of records sharing its
  key (sdcMicro ``indivRisk``, base individual risk of Benedetti, Capobianchi and Franconi, with
  F_k = f_k);
- expected number of re-identifications: ``ER = sum_i r_i`` (sdcMicro ``global_risk_ER``), which
  without weights equals the number of distinct keys;
- global risk: ``ER / n`` (sdcMicro ``global_risk``);
- sample uniques: records with ``f_k = 1``.

References: https://search.r-project.org/CRAN/refmans/sdcMicro/html/measure_risk.html and
https://search.r-project.org/CRAN/refmans/sdcMicro/html/indivRisk.html; Templ, Kowarik and
Meindl, "Statistical Disclosure Control for Micro-Data Using the R Package sdcMicro", Journal of
Statistical Software 67(4), 2015.

k-anonymity is the smallest f_k; (distinct) l-diversity the smallest number of distinct values
of the sensitive attribute within a class; t-closeness the largest Earth Mover's Distance
between a class's distribution of the sensitive attribute and the whole file's (Li, Li and
Venkatasubramanian, 2007): for an ordered attribute (m ordered values, e.g. PHQ-9 bands) the
ordered distance ``EMD = sum_i |sum_{j<=i} (p_j - q_j)| / (m - 1)``, otherwise the equal distance
``EMD = sum_i |p_i - q_i| / 2``. Records whose sensitive value is missing are left out of l and t.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Measured:
    n: int
    k: int | None  # smallest class (None when there is nobody)
    classes: int
    sample_uniques: int
    individual_risk: np.ndarray  # 1/f_k per record
    expected_reidentifications: float
    l_diversity: int | None
    t_closeness: float | None

    @property
    def max_individual_risk(self) -> float:
        return float(self.individual_risk.max()) if self.n else 0.0

    @property
    def global_risk(self) -> float:
        return self.expected_reidentifications / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        risks = Counter(round(float(r), 6) for r in self.individual_risk)
        return {
            "k": self.k,
            "equivalence_classes": self.classes,
            "sample_uniques": self.sample_uniques,
            "max_individual_risk": round(self.max_individual_risk, 6),
            "mean_individual_risk": round(self.global_risk, 6),
            "expected_reidentifications": round(self.expected_reidentifications, 6),
            "global_risk": round(self.global_risk, 6),
            "records_by_individual_risk": {str(r): c for r, c in sorted(risks.items())},
            "l": self.l_diversity,
            "t": None if self.t_closeness is None else round(self.t_closeness, 6),
        }


def class_ids(keys: Sequence[Hashable]) -> np.ndarray:
    """Equivalence class index of each record (records with equal keys share one)."""
    index: dict[Hashable, int] = {}
    return np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))


def emd(p: np.ndarray, q: np.ndarray, ordered: bool) -> float:
    """Earth Mover's Distance between two distributions over the same m categories."""
    m = len(p)
    if m <= 1:
        return 0.0
    if ordered:
        return float(np.abs(np.cumsum(p - q)).sum() / (m - 1))
    return float(np.abs(p - q).sum() / 2)


def sensitive_codes(values: Sequence[Any], order: Sequence[Any] | None) -> tuple[np.ndarray, int]:
    """Codes 0..m-1 of the sensitive values (-1 = missing), in ``order`` when it is given (an
    ordered attribute), else in order of first appearance; and m."""
    cats = list(order) if order is not None else []
    for v in values:
        if v is not None and v not in cats:
            cats.append(v)
    pos = {v: i for i, v in enumerate(cats)}
    return np.array([-1 if v is None else pos[v] for v in values], np.int64), len(cats)


def class_counts(cls: np.ndarray, sens: np.ndarray, m: int) -> np.ndarray:
    """Per class, the count of each known sensitive value (classes x m)."""
    n_cls = int(cls.max()) + 1 if len(cls) else 0
    known = sens >= 0
    flat = np.bincount(cls[known] * max(m, 1) + sens[known], minlength=n_cls * max(m, 1))
    return flat.reshape(n_cls, max(m, 1)).astype(np.float64)


def class_t_closeness(cls: np.ndarray, sens: np.ndarray, m: int, ordered: bool) -> np.ndarray:
    """Per class, the EMD of its sensitive distribution to the file's (0 for a class with no
    known value)."""
    counts = class_counts(cls, sens, m)
    total = counts.sum(axis=0)
    if not total.sum() or m <= 1:
        return np.zeros(len(counts))
    q = total / total.sum()
    sizes = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, sizes, out=np.tile(q, (len(counts), 1)), where=sizes > 0)
    if ordered:
        return np.abs(np.cumsum(p - q, axis=1)).sum(axis=1) / (m - 1)
    return np.abs(p - q).sum(axis=1) / 2


def class_diversity(cls: np.ndarray, sens: np.ndarray, m: int | None = None) -> np.ndarray:
    """Per class, the number of distinct known sensitive values."""
    m = int(sens.max(initial=-1)) + 1 if m is None else m
    return (class_counts(cls, sens, m) > 0).sum(axis=1)


def measure(
    keys: Sequence[Hashable],
    sensitive: Sequence[Any] | None = None,
    order: Sequence[Any] | None = None,
) -> Measured:
    """Every figure above for records with these keys (and sensitive values)."""
    n = len(keys)
    if n == 0:
        return Measured(0, None, 0, 0, np.zeros(0), 0.0, None, None)
    cls = class_ids(keys)
    sizes = np.bincount(cls)
    fk = sizes[cls]
    r = 1.0 / fk
    l_div = t = None
    if sensitive is not None:
        codes, m = sensitive_codes(sensitive, order)
        if (codes >= 0).any():
            div = class_diversity(cls, codes, m)
            has = np.bincount(cls[codes >= 0], minlength=len(sizes)) > 0
            l_div = int(div[has].min())
            t = float(class_t_closeness(cls, codes, m, order is not None).max())
    return Measured(
        n=n,
        k=int(sizes.min()),
        classes=len(sizes),
        sample_uniques=int((fk == 1).sum()),
        individual_risk=r,
        expected_reidentifications=float(r.sum()),
        l_diversity=l_div,
        t_closeness=t,
    )
