"""Incremental resource writers (CSV, Parquet) and the SPSS / Stata conversions.

CSV and Parquet are written chunk by chunk through Arrow, so memory depends on the chunk size,
not on the size of the study. CSV follows the contract of :mod:`analysis.spec`: UTF-8, a header
row, an empty cell for missing, booleans as ``true``/``false``, integers without a decimal point.

Text cells of CSV files that start like a spreadsheet formula (=, +, -, @, tab, CR) get a single
quote in front (app/core/csv_cells.py, OWASP CSV injection); numbers, Parquet and the statistics
files are unchanged.

SPSS (.sav) and Stata (.dta) files are written by pyreadstat, which takes a whole table at once;
they are converted from a scratch Parquet copy of each resource at the end, one resource at a
time. Booleans become 0/1 with value labels no/yes; categorical text columns become integer codes
1..n whose value labels are the text values (the mapping is also stored in datapackage.json);
every variable gets its description as variable label.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.core import csv_cells

ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}
TABULAR_FORMATS = ("csv", "parquet")
STAT_FORMATS = ("sav", "dta")
FORMATS = TABULAR_FORMATS + STAT_FORMATS
MEDIATYPES = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "sav": "application/x-spss-sav",
    "dta": "application/x-stata-dta",
}
BOOL_LABELS = {0: "no", 1: "yes"}


def arrow_schema(fields: Sequence[tuple[str, str]]) -> pa.Schema:
    return pa.schema([pa.field(name, ARROW_TYPES[typ]) for name, typ in fields])


_PANDAS_DTYPES = {"string": "string", "integer": "Int64", "number": "Float64", "boolean": "boolean"}


def _pandas_metadata(fields: Sequence[tuple[str, str]]) -> dict[bytes, bytes]:
    import pandas as pd

    empty = pd.DataFrame({n: pd.Series([], dtype=_PANDAS_DTYPES[t]) for n, t in fields})
    return dict(pa.Schema.from_pandas(empty, preserve_index=False).metadata or {})


class TableWriter:
    """Appends chunks (column name -> Python list) to one CSV or Parquet file."""

    def __init__(self, path: Path, fields: Sequence[tuple[str, str]], fmt: str) -> None:
        if fmt not in TABULAR_FORMATS:
            raise ValueError(f"TableWriter writes {TABULAR_FORMATS}, not {fmt!r}")
        self.path = path
        self.fmt = fmt
        self.fields = list(fields)
        self.schema = arrow_schema(self.fields)
        if fmt == "parquet":
            # pandas metadata: readers get nullable dtypes (boolean, Int64) back, not objects
            self.schema = self.schema.with_metadata(_pandas_metadata(self.fields))
        self.rows = 0
        # CSV only: text columns are neutralized against formulas (numbers never are)
        self._text_columns = ({i for i, (_, typ) in enumerate(self.fields) if typ == "string"}
                              if fmt == "csv" else set())
        self._writer: Any
        if fmt == "csv":
            self._writer = pacsv.CSVWriter(
                str(path), self.schema, write_options=pacsv.WriteOptions(quoting_style="needed")
            )
        else:
            self._writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")

    def write(self, columns: Mapping[str, Any], n: int | None = None) -> None:
        """Append ``n`` rows: column name -> list, NumPy array (NaN = missing) or Arrow array;
        absent columns are missing values."""
        if n is None:
            n = len(next(iter(columns.values()))) if columns else 0
        if not n:
            return
        arrays = [_arrow(columns.get(name), ARROW_TYPES[typ], n) for name, typ in self.fields]
        for i in self._text_columns:
            arrays[i] = csv_cells.neutralize_text_array(arrays[i])
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows += n

    def close(self) -> None:
        if self.fmt == "parquet" and self.rows == 0:
            # an empty file still needs its schema
            self._writer.write_table(self.schema.empty_table())
        self._writer.close()


def _arrow(values: Any, typ: pa.DataType, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, typ)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if values.type == typ else values.cast(typ)
    if isinstance(values, np.ndarray):
        return pa.array(values, type=typ, from_pandas=True)
    return pa.array(values, type=typ)


class Sink:
    """One resource's rows, going to one or more files (e.g. CSV and a scratch Parquet)."""

    def __init__(self, writers: Sequence[TableWriter]) -> None:
        self.writers = list(writers)
        self.total = 0

    def write(self, columns: Mapping[str, Any], n: int) -> None:
        for w in self.writers:
            w.write(columns, n)
        self.total += n

    def close(self) -> None:
        for w in self.writers:
            w.close()


class ChunkBuffer:
    """Rows (mappings; absent keys are missing values) that flush to one or more writers every
    ``size`` rows, column by column."""

    def __init__(self, names: Sequence[str], writers: Sequence[TableWriter], size: int) -> None:
        self.names = list(names)
        self.writers = list(writers)
        self.size = size
        self.rows: list[Mapping[str, Any]] = []
        self.total = 0

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        rows = self.rows
        cols = {n: [r.get(n) for r in rows] for n in self.names}
        for w in self.writers:
            w.write(cols)
        self.total += len(rows)
        self.rows = []

    def close(self) -> None:
        self.flush()
        for w in self.writers:
            w.close()


def file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


# ---- SPSS / Stata -----------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NO_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
_SAV_DATE_AT = 92  # $FL2 header: 4 + 60 (product) + 5 int32 + 1 float64, then date and time
_DTA_STAMP = b"<timestamp>\x11"  # 117+ header: a length byte (17), then "dd Mon yyyy hh:mm"


def stamp_header(path: Path, fmt: str, created: datetime | None) -> None:
    """Overwrite the creation time ReadStat puts in the file header (the wall clock when the
    file was written; pyreadstat has no option for it). A strict export carries no export
    time anywhere, so its files say 1970-01-01 00:00; a research export says its own
    creation time, as datapackage.json does. Same length, in place: nothing else moves."""
    when = (created or NO_TIMESTAMP).astimezone(UTC)
    month = _MONTHS[when.month - 1]
    with path.open("r+b") as f:
        head = f.read(512)
        if fmt == "sav":
            if head[:4] != b"$FL2":
                raise ValueError(f"{path.name}: not an SPSS system file")
            f.seek(_SAV_DATE_AT)
            f.write(f"{when.day:02d} {month} {when.year % 100:02d}"
                    f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}".encode("ascii"))
            return
        at = head.find(_DTA_STAMP)
        if at < 0:
            raise ValueError(f"{path.name}: no 17-character Stata header timestamp")
        f.seek(at + len(_DTA_STAMP))
        f.write(f"{when.day:02d} {month} {when.year:04d} {when.hour:02d}:{when.minute:02d}"
                .encode("ascii"))


_SPSS_RESERVED = {"ALL", "AND", "BY", "EQ", "GE", "GT", "LE", "LT", "NE", "NOT", "OR", "TO", "WITH"}


def stat_names(columns: Sequence[str], fmt: str) -> dict[str, str]:
    """Column -> variable name valid in SPSS (64 bytes) or Stata, unique. Stata allows 32
    characters, but pyreadstat names a value label set ``<variable><counter>`` and that name
    must fit in 32 bytes with its terminator."""
    limit = 31 - len(str(len(columns))) if fmt == "dta" else 64
    out: dict[str, str] = {}
    used: set[str] = set()
    for c in columns:
        name = re.sub(r"[^A-Za-z0-9_]", "_", c)
        if not re.match(r"[A-Za-z]", name):
            name = f"v_{name}"
        if name.upper() in _SPSS_RESERVED:
            name = f"{name}_"
        name = name[:limit]
        base, i = name, 2
        while name.lower() in used:
            suffix = f"_{i}"
            name = base[: limit - len(suffix)] + suffix
            i += 1
        used.add(name.lower())
        out[c] = name
    return out


# Why a value is missing, as distinct codes: SPSS user-missing values (declared as the missing
# range, so they never enter a computation) and Stata extended missing values .a to .d (never
# in a computation either), both with value labels. pyreadstat 1.3.8 cannot be given the letters
# in the data reliably: an object column whose first 100 values are all letters (or empty) is
# taken for text (narwhals sniffs the type from them) and the write fails. So the .dta is written
# with system missing there, the letters declared (missing_user_values) and labelled, and the
# cells are then set to the letters' bit patterns in place (:func:`_set_dta_missing`). CSV and
# Parquet leave the cell empty; the row's reason columns (REASON_COLUMNS, in every format) say
# why.
MISSING_CODES: dict[str, tuple[int, str]] = {
    "not_administered": (-91, "a"),
    "skipped": (-92, "b"),
    "withdrawn": (-93, "c"),
    "not_applicable": (-94, "d"),
}
REASON_COLUMNS = {"items_skipped": "skipped", "items_not_applicable": "not_applicable",
                  # the panel's outcome columns (app/export/stream.py SCORE_REASON_COLUMNS)
                  "scores_not_administered": "not_administered", "scores_skipped": "skipped",
                  "scores_withdrawn": "withdrawn"}


def _missing_reasons(table: pa.Table) -> dict[str, dict[int, str]]:
    """column -> {row: reason} from the resource's reason columns (if it has any)."""
    out: dict[str, dict[int, str]] = {}
    for rc, reason in REASON_COLUMNS.items():
        if rc not in table.column_names:
            continue
        for row, cell in enumerate(table.column(rc).to_pylist()):
            for col in cell.split(";") if cell else ():
                out.setdefault(col, {})[row] = reason
    return out


def _mark_missing(data: dict[str, Any], val_labels: dict[str, dict[Any, str]],
                  user_missing: dict[str, set[str]], var: str, rows: Mapping[int, str],
                  fmt: str, letters: dict[str, dict[int, str]]) -> None:
    """Put each empty cell's reason into one variable, with its value label: the SPSS code
    (-91..-94) in the data, or the Stata extended missing value (.a to .d) in ``letters``
    (row -> letter), set in the written file by :func:`_set_dta_missing`."""
    values = data[var]
    labels = val_labels.setdefault(var, {})
    for row, reason in rows.items():
        if not np.isnan(values[row]):
            continue  # answered after all (never expected)
        code, letter = MISSING_CODES[reason]
        mark: Any = float(code) if fmt == "sav" else letter
        if fmt == "sav":
            values[row] = mark
        else:
            letters.setdefault(var, {})[row] = letter
        labels[mark] = f"{reason.replace('_', ' ')} (missing)"
        user_missing.setdefault(var, set()).add(letter)


_DTA_WIDTHS = {65526: 8, 65527: 4, 65528: 4, 65529: 2, 65530: 1, 32768: 8}  # double ... strL
_DTA_SYSTEM_MISSING = 0x7FE0000000000000  # "." as a double; ".a" adds 1 << 40, ".b" 2 << 40...


def _set_dta_missing(path: Path, variables: Sequence[str],
                     letters: Mapping[str, Mapping[int, str]]) -> None:
    """Turn system-missing doubles of a Stata 118/119 file into extended missing values, in
    place: ``letters`` is variable -> {row: letter}. The data section is found through the
    file's map, each row's layout from its variable types."""
    import mmap
    import struct

    if not letters:
        return
    with path.open("r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        release = int(m[m.find(b"<release>") + 9: m.find(b"</release>")])
        order = "<" if m[m.find(b"<byteorder>") + 11: m.find(b"</byteorder>")] == b"LSF" else ">"
        k_at = m.find(b"<K>") + 3
        k = struct.unpack(order + ("I" if release >= 119 else "H"),
                          m[k_at: k_at + (4 if release >= 119 else 2)])[0]
        types_at = m.find(b"<variable_types>") + len(b"<variable_types>")
        types = struct.unpack(order + "H" * k, m[types_at: types_at + 2 * k])
        widths = [_DTA_WIDTHS.get(t, t) for t in types]  # 1..2045: strN, N bytes
        map_at = m.find(b"<map>") + 5
        data_at = struct.unpack(order + "Q", m[map_at + 9 * 8: map_at + 10 * 8])[0] + 6
        row_len = sum(widths)
        offsets = dict(zip(variables, np.cumsum([0, *widths[:-1]]).tolist(), strict=True))
        for var, rows in letters.items():
            if types[variables.index(var)] != 65526:
                continue  # not a double (never expected): stays system missing
            for row, letter in rows.items():
                at = data_at + row * row_len + offsets[var]
                if struct.unpack(order + "Q", m[at: at + 8])[0] != _DTA_SYSTEM_MISSING:
                    raise ValueError(f"{path.name}: {var} row {row} is not system missing")
                m[at: at + 8] = struct.pack(
                    order + "Q", _DTA_SYSTEM_MISSING + ((ord(letter) - ord("a") + 1) << 40))


def write_stat_file(
    scratch: Path,
    out_path: Path,
    fmt: str,
    fields: Sequence[Mapping[str, Any]],
    *,
    categorical: Mapping[str, Sequence[str]],
    value_labels: Mapping[str, Mapping[int, str]],
    ordinal: Collection[str] = (),
    created: datetime | None = None,
) -> dict[str, Any]:
    """Convert one resource's scratch Parquet file to .sav or .dta; returns what a reader needs
    to decode it (variable names, value codes), for datapackage.json. The header's creation
    time is ``created`` (UTC), or 1970-01-01 00:00 when None (see :func:`stamp_header`)."""
    import pyreadstat

    table = pq.read_table(scratch)
    names = stat_names([f["name"] for f in fields], fmt)
    label_limit = 80 if fmt == "dta" else 256
    data: dict[str, Any] = {}
    col_labels: dict[str, str] = {}
    val_labels: dict[str, dict[Any, str]] = {}
    measure: dict[str, str] = {}
    codes_out: dict[str, dict[str, str]] = {}
    reasons = _missing_reasons(table)
    user_missing: dict[str, set[str]] = {}  # variable -> its Stata missing letters in use
    letters: dict[str, dict[int, str]] = {}  # Stata: variable -> {row: letter}, set after writing
    for f in fields:
        col, typ, var = f["name"], f["type"], names[f["name"]]
        arr = table.column(col)
        desc = f.get("description") or f.get("title") or col
        col_labels[var] = desc if len(desc) <= label_limit else desc[: label_limit - 3] + "..."
        if typ == "boolean":
            values = arr.to_pylist()
            data[var] = np.array([np.nan if v is None else float(v) for v in values], "float64")
            val_labels[var] = {float(k): v for k, v in BOOL_LABELS.items()}
            measure[var] = "nominal"
        elif typ in ("integer", "number"):
            data[var] = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
            if col in value_labels:
                val_labels[var] = {float(k): v for k, v in value_labels[col].items()}
                measure[var] = "ordinal"
            else:
                measure[var] = "scale"
        elif col in categorical:
            values = arr.to_pylist()
            # codes from the definitions (1, 2, ... in their order); a value they do not list
            # (never expected) comes after them, so it cannot renumber any listed one
            order = list(dict.fromkeys([*categorical[col], *sorted({v for v in values if v})]))
            index = {v: i + 1 for i, v in enumerate(order)}
            data[var] = np.array([np.nan if not v else float(index[v]) for v in values], "float64")
            val_labels[var] = {float(i): v for v, i in index.items()}
            codes_out[col] = {str(i): v for v, i in index.items()}
            measure[var] = "ordinal" if col in ordinal else "nominal"
        else:
            data[var] = ["" if v is None else v for v in arr.to_pylist()]
            measure[var] = "nominal"
            continue
        if col in reasons:
            _mark_missing(data, val_labels, user_missing, var, reasons[col], fmt, letters)
    import pandas as pd

    df = pd.DataFrame(data, columns=[names[f["name"]] for f in fields])
    if fmt == "sav":
        pyreadstat.write_sav(
            df,
            str(out_path),
            column_labels=col_labels,
            variable_value_labels=val_labels,
            variable_measure=measure,
            missing_ranges={v: [{"lo": float(min(c for c, _ in MISSING_CODES.values())),
                                 "hi": float(max(c for c, _ in MISSING_CODES.values()))}]
                            for v in user_missing},
        )
    else:
        pyreadstat.write_dta(
            df,
            str(out_path),
            column_labels=col_labels,
            variable_value_labels=val_labels,
            missing_user_values={v: sorted(used) for v, used in user_missing.items()},
            version=15,
        )
        _set_dta_missing(out_path, list(df.columns), letters)
    stamp_header(out_path, fmt, created)
    info: dict[str, Any] = {"rows": len(df)}
    renamed = {c: v for c, v in names.items() if c != v}
    if renamed:
        info["variable_names"] = renamed
    if codes_out:
        info["value_codes"] = codes_out
    info["booleans"] = [f["name"] for f in fields if f["type"] == "boolean"]
    if user_missing:
        info["missing_codes"] = {reason: (code if fmt == "sav" else f".{letter}")
                                 for reason, (code, letter) in MISSING_CODES.items()}
    # Stata files have no measurement level: the ordered columns are named here (and SPSS
    # files mark them ordinal)
    info["ordinal"] = [f["name"] for f in fields
                       if f["name"] in ordinal or (f["name"] in value_labels
                                                   and f["type"] in ("integer", "number"))]
    return info
