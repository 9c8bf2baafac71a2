"""Writing panel Data Packages in the contract of :mod:`analysis.spec`.

Used by the simulator; the app's exporter may use :func:`write_datapackage` too, so both
produce byte-for-byte the same conventions (booleans ``true``/``false``, empty = missing,
integers without decimals).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import spec

FORMATS = ("csv", "parquet")


def _frictionless_type(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_integer_dtype(s):
        return "integer"
    if pd.api.types.is_numeric_dtype(s):
        return "number"
    return "string"


def _coerce(df: pd.DataFrame, schema: dict[str, Any]) -> pd.DataFrame:
    """Cast columns to pandas dtypes matching their declared Table Schema types."""
    out = df.copy()
    for f in schema["fields"]:
        c, t = f["name"], f["type"]
        if t == "integer":
            out[c] = pd.array(pd.to_numeric(out[c]), dtype="Int64") if len(out) else out[c]
            out[c] = out[c].astype("Int64")
        elif t == "number":
            out[c] = pd.to_numeric(out[c]).astype("Float64")  # NaN -> null in Parquet
        elif t == "boolean":
            out[c] = out[c].astype("boolean")
        else:
            out[c] = out[c].astype("string")
    return out


def _csv_ready(df: pd.DataFrame, schema: dict[str, Any]) -> pd.DataFrame:
    """Booleans as true/false text; text starting like a formula neutralized (spec.CSV_FORMULA);
    everything else as pandas writes it (NA -> empty)."""
    out = df.copy()
    for f in schema["fields"]:
        if f["type"] == "string":
            out[f["name"]] = out[f["name"]].str.replace(spec.CSV_FORMULA, r"'\1", regex=True)
        if f["type"] == "boolean":
            col = out[f["name"]]
            text = np.where(col.fillna(False).astype(bool), spec.CSV_TRUE, spec.CSV_FALSE)
            out[f["name"]] = np.where(col.isna(), "", text)
    return out


def write_datapackage(
    frames: Mapping[str, pd.DataFrame],
    out_dir: str | Path,
    wellpanel: Mapping[str, Any] | None = None,
    fmt: str = "csv",
    name: str = "wellpanel-panel",
    title: str | None = None,
    extra_descriptions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``frames`` (one DataFrame per contract resource) as a Data Package in ``out_dir``.

    ``wellpanel`` is the custom property (see :func:`analysis.spec.wellpanel_property`); when
    omitted, ``frames.wellpanel`` is used if present (simulator output carries it). Extra columns
    are typed from their pandas dtype. Returns the path of ``datapackage.json``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    if wellpanel is None:
        wellpanel = getattr(frames, "wellpanel", None)
    if wellpanel is None:
        raise ValueError("a wellpanel property is required (see spec.wellpanel_property)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resources = []
    for rname in spec.REQUIRED_RESOURCES:
        if rname not in frames:
            raise ValueError(f"frames lack the {rname!r} resource")
        df = frames[rname]
        rs = spec.RESOURCES[rname]
        extras = {
            c: _frictionless_type(df[c])
            for c in df.columns
            if rs.field(c) is None and rs.pattern_for(c) is None
        }
        schema = spec.table_schema(rname, df.columns, extras, extra_descriptions)
        df = _coerce(df, schema)
        fname = f"{rname}.{fmt}"
        if fmt == "csv":
            _csv_ready(df, schema).to_csv(out / fname, index=False, na_rep="", lineterminator="\n")
            res = {
                "name": rname,
                "title": rs.title,
                "description": rs.description,
                "path": fname,
                "type": "table",
                "scheme": "file",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "dialect": {"csv": {"delimiter": ",", "header": True}},
                "schema": schema,
            }
        else:
            df.to_parquet(out / fname, index=False)
            res = {
                "name": rname,
                "title": rs.title,
                "description": rs.description,
                "path": fname,
                "type": "table",
                "scheme": "file",
                "format": "parquet",
                "mediatype": "application/vnd.apache.parquet",
                "schema": schema,
            }
        resources.append(res)
    descriptor = {
        "name": name,
        "title": title or wellpanel.get("study", {}).get("title", "wellpanel panel"),
        "profile": "data-package",
        "resources": resources,
        spec.PROPERTY: dict(wellpanel),
    }
    path = out / spec.DESCRIPTOR_FILE
    path.write_text(json.dumps(descriptor, indent=2, default=_json_default) + "\n", "utf-8")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def frictionless_report(path: str | Path) -> tuple[bool, list[str]]:
    """Run Frictionless validation on a package; returns (valid, first error messages)."""
    from frictionless import Package

    p = Path(path)
    descriptor = p / spec.DESCRIPTOR_FILE if p.is_dir() else p
    report = Package(str(descriptor)).validate()
    msgs = [f"{e.type}: {e.message}" for task in report.tasks for e in task.errors][:20]
    msgs += [f"{e.type}: {e.message}" for e in report.errors][:20]
    return bool(report.valid), msgs
