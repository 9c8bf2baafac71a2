"""Per-variable frequencies and summary statistics for the codebook (issue 16 part 7).

A :class:`StatsCollector` sits beside a resource's file writers and sees every chunk the export
writes (the released values, after generalization and coarsening), so the figures describe the
files exactly and cost no second pass over the data. Categorical columns (text categories,
value-labelled numbers, booleans) get counts per category, in the definitions' order; numeric
columns get n, missing, mean, sd, min and max; identifiers, free text and reason lists get
nothing.

:func:`suppress` then hides every count from 1 to k - 1 as ``"<k"`` (the study's k), and, when
a single count of a variable is hidden, the next smallest too, so that no hidden count can be
recovered from the total (secondary suppression); the resource's row count is published, so
n is left out whenever a count of its variable is hidden. A numeric variable with fewer than k
values shows none of its statistics.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.export import writers


class _Numeric:
    __slots__ = ("n", "mean", "m2", "lo", "hi")

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.lo: float | None = None
        self.hi: float | None = None

    def add(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        m = len(values)
        if not m:
            return
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        n = self.n + m
        delta = mean - self.mean
        # Chan et al.: combine the running and the chunk's mean and sum of squares
        self.m2 += m2 + delta * delta * self.n * m / n
        self.mean += delta * m / n
        self.n = n
        lo, hi = float(values.min()), float(values.max())
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)


class StatsCollector:
    """Has a file writer's interface (``write(columns, n)``, ``close()``) and counts instead."""

    def __init__(
        self,
        fields: Sequence[tuple[str, str]],
        *,
        categories: Mapping[str, Sequence[Any]],
        skip: Collection[str] = (),
    ) -> None:
        self.fields = [(c, t) for c, t in fields if c not in skip]
        self.categories = {c: list(v) for c, v in categories.items()}
        self.rows = 0
        self.missing: dict[str, int] = {c: 0 for c, _ in self.fields}
        self.counts: dict[str, dict[Any, int]] = {}
        self.numeric: dict[str, _Numeric] = {}
        for c, t in self.fields:
            if c in self.categories or t == "boolean":
                self.counts[c] = {}
            elif t in ("integer", "number"):
                self.numeric[c] = _Numeric()
            # other text columns (identifiers, free text, reason lists) are not summarized
        self.fields = [(c, t) for c, t in self.fields if c in self.counts or c in self.numeric]

    def write(self, columns: Mapping[str, Any], n: int | None = None) -> None:
        if n is None:
            n = len(next(iter(columns.values()))) if columns else 0
        if not n:
            return
        self.rows += n
        for c, t in self.fields:
            arr = writers._arrow(columns.get(c), writers.ARROW_TYPES[t], n)
            self.missing[c] += arr.null_count
            if c in self.counts:
                counts = self.counts[c]
                for row in pc.value_counts(arr.drop_null()).to_pylist():
                    counts[row["values"]] = counts.get(row["values"], 0) + row["counts"]
            else:
                self.numeric[c].add(arr.cast(pa.float64()).to_numpy(zero_copy_only=False))

    def close(self) -> None:
        pass

    def summaries(self) -> dict[str, dict[str, Any]]:
        """column -> its unsuppressed summary."""
        out: dict[str, dict[str, Any]] = {}
        for c, t in self.fields:
            if c in self.counts:
                seen = self.counts[c]
                if t == "boolean":
                    order: list[Any] = [False, True]
                else:
                    order = [*self.categories.get(c, [])]
                    order += sorted((v for v in seen if v not in order), key=str)
                out[c] = {
                    "kind": "categorical",
                    "n": self.rows - self.missing[c],
                    "missing": self.missing[c],
                    "frequencies": [{"value": _plain(v), "count": seen.get(v, 0)}
                                    for v in order],
                }
            else:
                s = self.numeric[c]
                out[c] = {
                    "kind": "numeric",
                    "n": s.n,
                    "missing": self.missing[c],
                    "mean": _round(s.mean) if s.n else None,
                    "sd": _round(math.sqrt(s.m2 / (s.n - 1))) if s.n > 1 else None,
                    "min": _num(s.lo),
                    "max": _num(s.hi),
                }
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _round(v: float) -> float:
    return round(v, 4)


def _num(v: float | None) -> float | int | None:
    return None if v is None else _plain(v)


def suppress(summary: Mapping[str, Any], k: int) -> dict[str, Any]:
    """The summary with every count from 1 to k - 1 shown as "<k" (see the module docstring)."""
    hidden = f"<{k}"
    out = dict(summary)
    if summary["kind"] == "numeric":
        if 0 < summary["n"] < k:
            out.update(n=hidden, mean=None, sd=None, min=None, max=None, suppressed=True)
        if 0 < summary["missing"] < k:  # n = rows - missing would give it away
            out.update(missing=hidden, n=None)
        return out
    cells = [("missing", None, summary["missing"])] + [
        ("frequency", i, f["count"]) for i, f in enumerate(summary["frequencies"])]
    small = {(kind, i) for kind, i, c in cells if 0 < c < k}
    if len(small) == 1:  # one hidden count = total minus the others: hide the next smallest
        rest = sorted((c, kind, i) for kind, i, c in cells if c > 0 and (kind, i) not in small)
        if rest:
            small.add((rest[0][1], rest[0][2]))
    freqs = [dict(f) for f in summary["frequencies"]]
    for kind, i in small:
        if kind == "missing":
            out["missing"] = hidden
        else:
            freqs[i]["count"] = hidden
    out["frequencies"] = freqs
    if small:  # n (the rows minus missing, the sum of the counts) would give them away
        out["n"] = None
    return out


def codebook_entry(collectors: Mapping[str, StatsCollector], k: int) -> dict[str, Any]:
    """``wellpanel.codebook.variables``: resource -> column -> suppressed summary."""
    return {
        "suppression": f"every count from 1 to {k - 1} is shown as \"<{k}\" (the study's k), "
        "and when one count of a variable is hidden, the next smallest too; numeric variables "
        f"with fewer than {k} values show no statistics. Figures describe the released values "
        "(after generalization and coarsening); missing counts empty cells of any reason",
        "resources": {
            name: {c: suppress(s, k) for c, s in coll.summaries().items()}
            for name, coll in collectors.items()
        },
    }
