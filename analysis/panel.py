"""Loading and validating a panel Data Package, and building analysis frames.

``load_panel(dir)`` reads ``datapackage.json`` and its resources (CSV or Parquet), checks them
against the contract in :mod:`analysis.spec` and returns a :class:`Panel`. Every problem is a
:class:`~analysis.errors.PanelError` whose message names the file, resource, column and value
at fault.

``analysis_frame(panel)`` turns the wide panel into the frame the models use:

- ``time``: weeks since enrollment (``day / 7``).
- Usage decomposition (Curran & Bauer 2011): for predictor ``x`` of participant ``i`` at wave
  ``t``, ``x_pmean`` = mean of ``x`` over the participant's observed waves, ``x_within`` =
  ``x - x_pmean`` (person-mean centered), ``x_between`` = ``x_pmean`` minus the mean of the
  person means (grand-mean centered, each participant weighted once).
- Lags: ``<col>_lag1`` is the value at wave ``t - 1`` of the same participant, and missing
  when that wave was not answered (never the last answered wave further back).
- Access loss: for participants who ever report ``access_loss``, ``loss_time`` = weeks from the
  answer day of the first such wave (0 at the event, negative before), ``loss_post`` = 1 from
  that wave on, ``loss_since`` = weeks since it after the event (0 before). Participants without
  a loss have ``loss_time`` missing and ``loss_post = loss_since = 0``.
- Study events (research profile): ``event_time_<key>`` = ``week_since_<key>``, with
  ``post_<key>`` and ``since_<key>`` defined the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import spec
from analysis.errors import InsufficientDataError, PanelError

_BOOL_TEXT = {
    "true": True,
    "True": True,
    "TRUE": True,
    "1": True,
    "false": False,
    "False": False,
    "FALSE": False,
    "0": False,
}


@dataclass
class Panel:
    """A loaded, validated panel. ``wide`` is the ``panel`` resource."""

    participants: pd.DataFrame
    responses: pd.DataFrame
    usage: pd.DataFrame
    wide: pd.DataFrame
    descriptor: dict[str, Any]
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def meta(self) -> dict[str, Any]:
        return self.descriptor.get(spec.PROPERTY, {})

    @property
    def profile(self) -> str:
        return str(self.meta.get("export_profile", ""))

    @property
    def event_keys(self) -> list[str]:
        """Study events that this panel can be aligned to (a week_since column exists)."""
        return [
            c[len(spec.EVENT_PREFIX) :]
            for c in self.wide.columns
            if c.startswith(spec.EVENT_PREFIX)
        ]

    @property
    def outcomes(self) -> list[str]:
        """Outcome columns with at least one observed score."""
        return [o for o in spec.OUTCOMES if o in self.wide and self.wide[o].notna().any()]

    @property
    def n_participants(self) -> int:
        return len(self.participants)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {
            "participants": self.participants,
            "responses": self.responses,
            "usage": self.usage,
            "panel": self.wide,
        }


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def load_panel(path: str | Path) -> Panel:
    """Read and validate the panel Data Package in directory ``path`` (or its datapackage.json)."""
    p = Path(path)
    if p.is_file() and p.name == spec.DESCRIPTOR_FILE:
        p = p.parent
    if not p.exists():
        raise PanelError(f"{p} does not exist")
    if not p.is_dir():
        raise PanelError(f"{p} is not a directory holding a Data Package")
    desc_path = p / spec.DESCRIPTOR_FILE
    if not desc_path.is_file():
        raise PanelError(f"{p} is not a Data Package: it has no {spec.DESCRIPTOR_FILE}")
    try:
        descriptor = json.loads(desc_path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PanelError(f"{desc_path} is not valid JSON: {err}") from err
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("resources"), list):
        raise PanelError(f"{desc_path} is not a Data Package descriptor: no 'resources' list")
    by_name = {r.get("name"): r for r in descriptor["resources"] if isinstance(r, dict)}
    frames = {}
    for rname in spec.REQUIRED_RESOURCES:
        if rname not in by_name:
            have = ", ".join(str(n) for n in by_name) or "none"
            raise PanelError(f"{desc_path} has no resource {rname!r} (resources: {have})")
        frames[rname] = _read_resource(p, by_name[rname])
    return panel_from_frames(frames, descriptor, path=p)


def _declared_fields(res: Mapping[str, Any], rname: str) -> list[dict[str, Any]]:
    schema = res.get("schema")
    if isinstance(schema, str):
        raise PanelError(f"resource {rname!r}: external schema files are not supported; inline it")
    if not isinstance(schema, dict) or not isinstance(schema.get("fields"), list):
        raise PanelError(f"resource {rname!r} has no Table Schema with 'fields'")
    return schema["fields"]


def _read_resource(base: Path, res: Mapping[str, Any]) -> pd.DataFrame:
    rname = res["name"]
    rel = res.get("path")
    if isinstance(rel, list):
        raise PanelError(f"resource {rname!r}: multi-file resources are not supported")
    if not isinstance(rel, str):
        raise PanelError(f"resource {rname!r} has no 'path'")
    fpath = (base / rel).resolve()
    if not fpath.is_file():
        raise PanelError(f"resource {rname!r}: file {base / rel} does not exist")
    fields = _declared_fields(res, rname)
    fmt = (res.get("format") or fpath.suffix.lstrip(".")).lower()
    try:
        if fmt == "parquet":
            df = pd.read_parquet(fpath)
        elif fmt in ("csv", "txt", ""):
            df = pd.read_csv(fpath, dtype=str, keep_default_na=False, na_values=[""])
            for f in fields:  # text neutralized against spreadsheet formulas: the original
                if f.get("type") == "string" and f.get("name") in df.columns:
                    df[f["name"]] = df[f["name"]].str.replace(spec.CSV_NEUTRALIZED, "",
                                                              regex=True)
        else:
            raise PanelError(f"resource {rname!r}: format {fmt!r} not supported (csv or parquet)")
    except PanelError:
        raise
    except Exception as err:  # malformed file: report which one
        raise PanelError(f"resource {rname!r}: cannot read {fpath.name}: {err}") from err
    declared = [f.get("name") for f in fields]
    if list(df.columns) != declared:
        undeclared = [c for c in df.columns if c not in declared]
        absent = [c for c in declared if c not in df.columns]
        if undeclared or absent:
            raise PanelError(
                f"resource {rname!r}: file {fpath.name} and its schema disagree "
                f"(in file only: {', '.join(undeclared) or '-'}; "
                f"in schema only: {', '.join(map(str, absent)) or '-'})"
            )
    df.attrs["declared"] = {f["name"]: f for f in fields}
    df.attrs["file"] = fpath.name
    return df


def panel_from_frames(
    frames: Mapping[str, pd.DataFrame],
    descriptor: Mapping[str, Any] | None = None,
    path: Path | None = None,
) -> Panel:
    """Validate in-memory resources (e.g. straight from the simulator) and build a Panel.

    ``descriptor`` is the package descriptor, or just the ``wellpanel`` property; when omitted,
    ``frames.wellpanel`` is used if present.
    """
    if descriptor is None:
        descriptor = {spec.PROPERTY: getattr(frames, "wellpanel", None) or {}}
    elif spec.PROPERTY not in descriptor and "format_version" in descriptor:
        descriptor = {spec.PROPERTY: dict(descriptor)}
    descriptor = dict(descriptor)
    _check_meta(descriptor.get(spec.PROPERTY))
    out = {}
    for rname in spec.REQUIRED_RESOURCES:
        if rname not in frames:
            raise PanelError(f"panel has no resource {rname!r}")
        out[rname] = _validate_resource(rname, frames[rname])
    _check_references(out)
    warns = _range_warnings(out["panel"])
    if out["panel"].empty:
        raise InsufficientDataError("the panel has no rows (no answered waves)")
    return Panel(
        participants=out["participants"],
        responses=out["responses"],
        usage=out["usage"],
        wide=out["panel"].sort_values(["pid", "wave"], ignore_index=True),
        descriptor=descriptor,
        path=path,
        warnings=warns,
    )


def _check_meta(meta: Any) -> None:
    if not isinstance(meta, Mapping):
        raise PanelError(
            f"the Data Package lacks the '{spec.PROPERTY}' property: not a wellpanel export"
        )
    fv = meta.get("format_version")
    if fv != spec.FORMAT_VERSION:
        raise PanelError(
            f"unsupported {spec.PROPERTY}.format_version {fv!r}; this analysis reads "
            f"version {spec.FORMAT_VERSION}"
        )
    prof = meta.get("export_profile")
    if prof not in spec.PROFILES:
        raise PanelError(
            f"{spec.PROPERTY}.export_profile is {prof!r}; "
            f"expected one of {', '.join(spec.PROFILES)}"
        )


def _where(rname: str, df: pd.DataFrame) -> str:
    f = df.attrs.get("file")
    return f"resource {rname!r}" + (f" ({f})" if f else "")


def _validate_resource(rname: str, df: pd.DataFrame) -> pd.DataFrame:
    """Check contract columns, types, nullability, enums, ranges and the primary key."""
    rs = spec.RESOURCES[rname]
    where = _where(rname, df)
    missing = [c for c in rs.columns if c not in df.columns]
    if missing:
        raise PanelError(f"{where} lacks required column(s): {', '.join(missing)}")
    declared: dict[str, dict[str, Any]] = df.attrs.get("declared", {})
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for c in df.columns:
        fs = rs.field(c)
        pat = rs.pattern_for(c)
        want = fs.type if fs else pat.type if pat else declared.get(c, {}).get("type", "any")
        if c in declared and fs is not None and declared[c].get("type", want) != want:
            raise PanelError(
                f"{where} declares column {c!r} as {declared[c].get('type')}; "
                f"the contract needs {want}"
            )
        out[c] = _convert(df[c], want, f"{where} column {c!r}", declared.get(c, {}))
        if fs is not None:
            _check_values(out[c], fs, f"{where} column {c!r}")
            if fs.type == "integer" and not fs.nullable:
                out[c] = out[c].astype("int64")
    dup = out.duplicated(list(rs.primary_key), keep=False)
    if dup.any():
        first = out.loc[dup, list(rs.primary_key)].iloc[0].to_dict()
        raise PanelError(
            f"{where}: primary key ({', '.join(rs.primary_key)}) is not unique, "
            f"e.g. {first} appears {int(dup.sum())} times in total with its duplicates"
        )
    return out


def _convert(s: pd.Series, typ: str, what: str, fdesc: Mapping[str, Any]) -> pd.Series:
    """Convert a column to its declared type; name the first offending value on failure."""
    if typ in ("integer", "number"):
        if pd.api.types.is_bool_dtype(s):
            raise PanelError(f"{what}: expected {typ}, found booleans")
        num = pd.to_numeric(s, errors="coerce")
        bad = s.notna() & num.isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise PanelError(f"{what}: expected {typ}, found {s.iloc[i]!r} (row {i + 1})")
        num = num.astype("float64")
        if typ == "integer":
            frac = num.notna() & (num % 1 != 0)
            if frac.any():
                i = int(np.flatnonzero(frac.to_numpy())[0])
                raise PanelError(f"{what}: expected integer, found {s.iloc[i]!r} (row {i + 1})")
            return num.astype("Int64")
        return num
    if typ == "boolean":
        if pd.api.types.is_bool_dtype(s):
            return s.astype("boolean")
        truth = dict(_BOOL_TEXT)
        truth.update({v: True for v in fdesc.get("trueValues", [])})
        truth.update({v: False for v in fdesc.get("falseValues", [])})
        mapped = s.map(truth)
        bad = s.notna() & mapped.isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise PanelError(
                f"{what}: expected boolean (true/false), found {s.iloc[i]!r} (row {i + 1})"
            )
        return mapped.astype("boolean")
    if typ == "string":
        return s.astype("object").where(s.notna(), None)
    return s


def _check_values(s: pd.Series, fs: spec.FieldSpec, what: str) -> None:
    if not fs.nullable and s.isna().any():
        i = int(np.flatnonzero(s.isna().to_numpy())[0])
        raise PanelError(f"{what} must not be empty (row {i + 1})")
    if fs.enum is not None:
        bad = s.notna() & ~s.isin(fs.enum)
        if bad.any():
            v = s[bad].iloc[0]
            raise PanelError(f"{what}: {v!r} is not one of {', '.join(map(str, fs.enum))}")
    if fs.minimum is not None or fs.maximum is not None:
        num = s.astype("float64")
        lo = fs.minimum if fs.minimum is not None else -np.inf
        hi = fs.maximum if fs.maximum is not None else np.inf
        bad = num.notna() & ((num < lo) | (num > hi))
        if bad.any():
            raise PanelError(f"{what}: value {num[bad].iloc[0]!r} outside [{lo}, {hi}]")


def _range_warnings(wide: pd.DataFrame) -> list[str]:
    """Scores outside their instrument's scale: reported, not fatal (latent simulations)."""
    msgs = []
    for k, inst in spec.INSTRUMENTS.items():
        if k not in wide:
            continue
        x = wide[k]
        n_out = int(((x < inst.minimum) | (x > inst.maximum)).sum())
        if n_out:
            msgs.append(
                f"{k}: {n_out} score(s) outside the scale {inst.minimum:g}-{inst.maximum:g}"
            )
    return msgs


def _check_references(frames: Mapping[str, pd.DataFrame]) -> None:
    known = set(frames["participants"]["pid"])
    for rname in ("responses", "usage", "panel"):
        unknown = set(frames[rname]["pid"]) - known
        if unknown:
            ex = sorted(unknown)[0]
            raise PanelError(
                f"resource {rname!r} has {len(unknown)} pid(s) not in participants, e.g. {ex!r}"
            )


# --------------------------------------------------------------------------------------------
# Analysis frames
# --------------------------------------------------------------------------------------------
def add_time(df: pd.DataFrame) -> pd.DataFrame:
    """``time`` = weeks since enrollment (day / 7)."""
    out = df.copy()
    out["time"] = out["day"].astype("float64") / 7.0
    return out


def decompose(df: pd.DataFrame, cols: Iterable[str], group: str = "pid") -> pd.DataFrame:
    """Split each column into within-person and between-person parts (see module docstring)."""
    out = df.copy()
    for c in cols:
        x = out[c].astype("float64")
        pmean = x.groupby(out[group]).transform("mean")
        person_means = x.groupby(out[group]).mean()
        out[f"{c}_pmean"] = pmean
        out[f"{c}_within"] = x - pmean
        out[f"{c}_between"] = pmean - person_means.mean()
    return out


def add_lags(
    df: pd.DataFrame, cols: Iterable[str], group: str = "pid", wave: str = "wave"
) -> pd.DataFrame:
    """``<col>_lag1``: the value at wave - 1 of the same participant (missing if not answered)."""
    cols = list(cols)
    prev = df[[group, wave, *cols]].copy()
    prev[wave] = prev[wave] + 1
    prev = prev.rename(columns={c: f"{c}_lag1" for c in cols})
    out = df.drop(columns=[f"{c}_lag1" for c in cols if f"{c}_lag1" in df], errors="ignore")
    return out.merge(prev, on=[group, wave], how="left")


def _event_columns(
    df: pd.DataFrame, event_time: pd.Series, prefix_time: str, post: str, since: str
) -> pd.DataFrame:
    out = df.copy()
    out[prefix_time] = event_time
    after = event_time.notna() & (event_time >= 0)
    out[post] = after.astype("float64")
    out[since] = np.where(after, event_time, 0.0)
    return out


def add_access_loss_time(df: pd.DataFrame, group: str = "pid") -> pd.DataFrame:
    """Event time around each participant's first reported access loss (weeks, 0 at the event)."""
    loss = df["access_loss"].astype("boolean").fillna(False).astype(bool)
    first_day = df["day"].where(loss).groupby(df[group]).transform("min").astype("float64")
    event_time = (df["day"].astype("float64") - first_day) / 7.0
    out = _event_columns(df, event_time, "loss_time", "loss_post", "loss_since")
    out["had_loss"] = first_day.notna()
    return out


def add_study_event_time(df: pd.DataFrame, event_key: str) -> pd.DataFrame:
    """Event time around a dated study event via ``week_since_<event_key>`` (research profile)."""
    col = spec.event_column(event_key)
    if col not in df.columns:
        raise PanelError(
            f"the panel has no {col!r} column: study-event alignment needs a 'research' export "
            "profile (the 'strict' profile carries no calendar information)"
        )
    et = df[col].astype("float64")
    k = event_key
    return _event_columns(df, et, f"event_time_{k}", f"post_{k}", f"since_{k}")


DEFAULT_PREDICTORS = ("hours_4o", "hours_other_ai", "hours_total")
MODERATOR_SOURCES = ("ai_dependence", "framing", "companion_use")


def analysis_frame(
    panel: Panel,
    predictors: Sequence[str] = DEFAULT_PREDICTORS,
    lag_columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The model-ready frame: wide panel + participant covariates + derived columns.

    Adds ``time``, the within/between decomposition of ``predictors`` and of the moderators
    (``ai_dependence``, ``framing``, ``companion_use`` person means), lag-1 columns of the
    outcomes and decomposed predictors, access-loss event time and any study-event times.
    """
    df = panel.wide.copy()
    missing = [c for c in predictors if c not in df.columns]
    if missing:
        raise PanelError(f"the panel has no column(s) {', '.join(missing)}")
    covars = panel.participants.drop(columns=["status"], errors="ignore")
    df = df.merge(covars, on="pid", how="left", suffixes=("", "_participant"))
    df = add_time(df)
    df["companion_use"] = df["companion_use"].astype("boolean").astype("float64")
    df["framing"] = df["framing"].astype("float64")
    df = decompose(df, [*predictors, *[m for m in MODERATOR_SOURCES if m in df]])
    if lag_columns is None:
        lag_columns = [
            *panel.outcomes,
            *predictors,
            *[f"{c}_within" for c in predictors],
        ]
    df = add_lags(df, lag_columns)
    df = add_access_loss_time(df)
    for key in panel.event_keys:
        df = add_study_event_time(df, key)
    return df.sort_values(["pid", "wave"], ignore_index=True)


def require_data(
    df: pd.DataFrame, outcome: str, min_participants: int = 10, min_waves: int = 2
) -> None:
    """Raise InsufficientDataError when an outcome has too few participants or waves."""
    if outcome not in df.columns:
        raise PanelError(f"the panel has no outcome column {outcome!r}")
    obs = df.loc[df[outcome].notna(), ["pid", "wave"]]
    n_p = obs["pid"].nunique()
    if n_p < min_participants:
        raise InsufficientDataError(
            f"{outcome}: {n_p} participant(s) with data; at least {min_participants} needed"
        )
    max_w = int(obs.groupby("pid").size().max()) if len(obs) else 0
    if max_w < min_waves:
        raise InsufficientDataError(
            f"{outcome}: no participant has {min_waves} or more answered waves"
        )
