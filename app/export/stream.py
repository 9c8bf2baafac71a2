"""Streaming every response into the responses, usage and panel resources, column-wise.

One query returns the eligible responses ordered by participant, wave and instrument, already
cut at each participant's withdrawal. It is read in Arrow tables of a few tens of thousands of
rows:

- on PostgreSQL through ``COPY (query) TO STDOUT`` parsed by Arrow's streaming CSV reader, with
  the local calendar day of each answer computed by the server (``timezone()``): reading costs
  little more than the raw copy;
- elsewhere (SQLite) through a server-side cursor, the local day computed with zoneinfo.

Each table is processed with vectorized operations (pseudonyms, days, duplicates, the wide
pivot); only ai_usage answers and subscale scores (JSON) are handled row by row. A
(participant, wave) group is never split between two tables: the last group of a table is held
back and processed with the next, so the panel's rows are complete.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import (
    Integer,
    Text,
    bindparam,
    case,
    cast,
    extract,
    func,
    literal_column,
    null,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from analysis import spec
from app.export import timeshift

EPOCH = date(1970, 1, 1).toordinal()
# the panel's reason columns for empty outcome cells (writers.REASON_COLUMNS gives their codes)
SCORE_REASON_COLUMNS = ("scores_not_administered", "scores_skipped", "scores_withdrawn")
SQLITE_RANK_FUNCTION = "wellpanel_pid_rank"
WAVE_DAYS = 14  # the panel's waves are two weeks apart (analysis.spec: wave)
USAGE_INSTRUMENT = "ai_usage"
PURPOSE_VALUES = {  # contract purpose -> ai_usage option value
    "companionship": "companionship_romance",
    "emotional_support": "emotional_support",
    "advice": "advice",
    "work": "work",
    "creative": "creative",
}
COLUMNS = ["internal", "wave", "instrument", "version", "local_day", "language", "tstatus",
           "answers", "primary", "band", "valid", "n_answered", "subscales"]
SCHEMA = pa.schema([
    ("internal", pa.string()), ("wave", pa.int64()), ("instrument", pa.string()),
    ("version", pa.string()), ("local_day", pa.int64()), ("language", pa.string()),
    ("tstatus", pa.string()), ("answers", pa.string()), ("primary", pa.float64()),
    ("band", pa.string()), ("valid", pa.bool_()), ("n_answered", pa.int64()),
    ("subscales", pa.string()),
])
# Arrow's CSV reader holds several blocks (read ahead, being parsed) and each block becomes a
# table processed at once: the block size sets the export's working memory. 1 MiB (~8,000
# responses) keeps the peak under 300 MB (about 275 MB for 1M responses; 4 MiB: 410 MB).
COPY_BLOCK_BYTES = 1 << 20
_LOCAL_DAY_SQL = ("((timezone(participants.timezone, survey_responses.submitted_at))::date "
                  "- DATE '1970-01-01')")


def epoch_day(d: date) -> int:
    return d.toordinal() - EPOCH


# ---- the query --------------------------------------------------------------------------------


def study_wave(i: Any, p: Any, *, postgresql: bool) -> Any:
    """The panel wave of a survey instance: whole two-week steps from enrollment to the time it
    was scheduled (0 = baseline). The planner numbers each schedule entry's occurrences on its
    own (the biweekly entry's wave 0 is study day 14, the four-weekly entry's wave 0 day 28), so
    the instance's own ``wave`` cannot be the panel's."""
    if postgresql:
        days = extract("epoch", i.c.scheduled_at - p.c.enrolled_at) / 86400.0
    else:
        days = func.julianday(i.c.scheduled_at) - func.julianday(p.c.enrolled_at)
    return cast(func.round(days / WAVE_DAYS), Integer)


def cutoff_expr(t: dict[str, Any]) -> tuple[Any, Any]:
    """(stop_contact subquery, cutoff expression): answers after the cutoff are not exported."""
    p, w = t["p"], t["w"]
    stops = (
        select(w.c.participant_id.label("participant_id"),
               func.min(w.c.confirmed_at).label("stop_at"))
        .where(w.c.scope == "stop_contact", w.c.confirmed_at.is_not(None))
        .group_by(w.c.participant_id)
        .subquery("stops")
    )
    cutoff = func.coalesce(stops.c.stop_at,
                           case((p.c.status == "withdrawn", p.c.withdrawn_at), else_=null()))
    return stops, cutoff


def register_sqlite_order(dbapi_connection: Any, ranks: Mapping[str, int] | None) -> None:
    """Give SQLite's ``wellpanel_pid_rank(participant_id)`` the export's participant ranks
    (None removes the function again, so a pooled connection keeps nothing of the export)."""
    if ranks is None:
        dbapi_connection.create_function(SQLITE_RANK_FUNCTION, 1, None)
        return
    lookup = dict(ranks)
    dbapi_connection.create_function(SQLITE_RANK_FUNCTION, 1,
                                     lambda internal: lookup.get(internal, -1),
                                     deterministic=True)


def _ranked(query: Any, participant_id: Any, ranks: Mapping[str, int], dialect: str
            ) -> tuple[Any, Any]:
    """(query, ORDER BY expression) putting participants in the order of ``ranks``.

    Rows are never written in internal-id order: whoever holds internal ids (the database, a
    backup, audit targets) could pair every pseudonym by position, and two exports with fresh
    keys would pair row by row. The ranks (the pseudonyms' sort order) are all the database
    is given: never the key, never a pseudonym. PostgreSQL joins them as an unnested array;
    SQLite calls a function registered on the connection (:func:`register_sqlite_order`)."""
    if dialect != "postgresql":
        return query, func.wellpanel_pid_rank(participant_id)
    ids = sorted(ranks)
    order = (
        func.unnest(bindparam("rank_ids", ids, type_=ARRAY(Text)),
                    bindparam("rank_values", [ranks[i] for i in ids], type_=ARRAY(Integer)))
        .table_valued("internal", "rank")
        .render_derived(name="pid_rank")
    )
    return query.join(order, order.c.internal == participant_id), order.c.rank


def response_query(
    t: dict[str, Any],
    eligibility: Sequence[Any],
    answer_instruments: set[str] | None,
    subscale_instruments: set[str],
    *,
    sql_local_day: bool,
    ranks: Mapping[str, int] | None = None,
    dialect: str = "sqlite",
) -> Any:
    """Every exportable response. JSON is selected (as text) only where it is used: answers
    of ai_usage (all answers when items are exported), subscales of instruments having some.
    ``ranks`` (internal id -> position of the pseudonym) sorts the participants, see
    :func:`_ranked`; without it (benchmarks only) they come in internal-id order."""
    r, i, s, p = t["r"], t["i"], t["s"], t["p"]
    stops, cutoff = cutoff_expr(t)

    def only(col: Any, keys: set[str] | None) -> Any:
        if keys is None:
            return cast(col, Text)
        if not keys:
            return cast(null(), Text)
        return case((r.c.instrument_key.in_(sorted(keys)), cast(col, Text)), else_=null())

    local = (literal_column(_LOCAL_DAY_SQL) if sql_local_day else r.c.submitted_at)
    wave = study_wave(i, p, postgresql=sql_local_day)
    cols = [
        r.c.participant_id.label("internal"), wave.label("wave"),
        r.c.instrument_key.label("instrument"), r.c.instrument_version.label("version"),
        local.label("local_day"), r.c.language.label("language"),
        r.c.translation_status.label("tstatus"),
        only(r.c.answers, answer_instruments).label("answers"),
        s.c.primary.label("primary"), s.c.band.label("band"), s.c.valid.label("valid"),
        s.c.n_answered.label("n_answered"),
        only(s.c.subscales, subscale_instruments).label("subscales"),
    ]
    query = (
        select(*cols)
        .join(i, i.c.id == r.c.instance_id)
        .join(p, p.c.id == r.c.participant_id)
        .outerjoin(s, s.c.response_id == r.c.id)
        .outerjoin(stops, stops.c.participant_id == p.c.id)
        .where(*eligibility, or_(cutoff.is_(None), r.c.submitted_at <= cutoff))
    )
    first: Any = r.c.participant_id
    if ranks is not None:
        query, first = _ranked(query, r.c.participant_id, ranks, dialect)
    return query.order_by(first, r.c.participant_id, wave, r.c.instrument_key,
                          r.c.submitted_at, r.c.id)


def after_cutoff_count(conn: Connection, t: dict[str, Any], eligibility: Sequence[Any]) -> int:
    r, p = t["r"], t["p"]
    stops, cutoff = cutoff_expr(t)
    q = (select(func.count()).select_from(r).join(p, p.c.id == r.c.participant_id)
         .outerjoin(stops, stops.c.participant_id == p.c.id)
         .where(*eligibility, cutoff.is_not(None), r.c.submitted_at > cutoff))
    return int(conn.execute(q).scalar_one())


def server_knows_zones(conn: Connection, zones: set[str]) -> bool:
    """PostgreSQL's time zone names cover every participant's (else days come from Python)."""
    if conn.dialect.name != "postgresql" or not zones:
        return conn.dialect.name == "postgresql"
    known = conn.execute(text("SELECT count(*) FROM pg_timezone_names WHERE name = ANY(:z)"),
                         {"z": sorted(zones)}).scalar_one()
    return int(known) == len(zones)


# ---- reading ----------------------------------------------------------------------------------


class _CopyReader(io.RawIOBase):
    """A file object over psycopg's COPY blocks, for Arrow's CSV reader."""

    def __init__(self, blocks: Iterator[Any]) -> None:
        self._blocks = blocks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not len(self._buf):
            try:
                self._buf = memoryview(bytes(next(self._blocks)))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def copy_tables(conn: Connection, query: Any, block_bytes: int = COPY_BLOCK_BYTES
                ) -> Iterator[pa.Table]:
    """PostgreSQL: the query through COPY ... TO STDOUT (CSV), parsed by Arrow in blocks."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    raw = conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy(f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv)",
                                       compiled.params) as cp:
        stream = io.BufferedReader(_CopyReader(iter(cp)), buffer_size=1 << 20)
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=COLUMNS, block_size=block_bytes,
                                           use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=SCHEMA, true_values=["t"], false_values=["f"], null_values=[""],
                strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
        for batch in reader:
            yield pa.Table.from_batches([batch], schema=SCHEMA)


def row_tables(conn: Connection, query: Any, chunk: int,
               local_day: Callable[[str, Any], int]) -> Iterator[pa.Table]:
    """Any database: a server-side cursor; ``local_day(participant, submitted_at)``."""
    result = conn.execution_options(stream_results=True, yield_per=chunk).execute(query)
    for part in result.partitions(chunk):
        cols = [list(c) for c in zip(*part, strict=True)]
        cols[4] = [local_day(p, at) for p, at in zip(cols[0], cols[4], strict=True)]
        yield pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, SCHEMA,
                                                                           strict=True)],
                                   schema=SCHEMA)


# ---- processing -------------------------------------------------------------------------------


@dataclass
class StreamStats:
    responses_read: int = 0
    duplicates: int = 0
    answered: dict[str, dict[tuple[str, str], int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    versions: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int)))


def _hours(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Processor:
    """Turns ordered response tables into rows of the three resources (column-wise)."""

    def __init__(
        self,
        people: Mapping[str, Any],  # internal id -> _Person (pid, enrolled_day, last_day)
        sinks: Mapping[str, Any],  # resource -> writers.Sink
        *,
        outcomes: Sequence[str],
        subscale_columns: Sequence[str],
        events: Sequence[tuple[str, date]],
        include_items: bool,
        instruments: set[str],
        item_values: Callable[[str, Mapping[str, Any]], dict[str, Any]] | None = None,
        progress: Any = None,
        day_resolution: int = 1,
        event_band_weeks: int = 1,
        withdrawn_cells: set[tuple[str, int, str]] | None = None,
    ) -> None:
        self.people = people
        self.sinks = sinks
        self.outcomes = list(outcomes)
        self.subscale_columns = set(subscale_columns)
        self.events = [(spec.event_column(k), epoch_day(d)) for k, d in events]
        self.include_items = include_items
        self.instruments = instruments
        self.item_values = item_values
        self.progress = progress
        # time without dates (app/export/timeshift.py): released days are coarse, event weeks
        # are computed on each person's shifted dates (``shift``, 0 in the strict profile)
        self.day_resolution = day_resolution
        self.event_band_weeks = event_band_weeks
        # (internal id, wave, instrument) surveys lost to a withdrawal (see _score_reasons);
        # None: no score reason columns in the panel
        self.withdrawn_cells = withdrawn_cells
        self.stats = StreamStats()
        self._carry: pa.Table | None = None

    # -- driving --

    def feed(self, table: pa.Table) -> None:
        self.stats.responses_read += table.num_rows
        if self.progress is not None:
            self.progress.update(table.num_rows)
        if self._carry is not None and self._carry.num_rows:
            table = pa.concat_tables([self._carry, table])
        n = table.num_rows
        if not n:
            return
        internal = table.column("internal")
        wave = table.column("wave")
        last = (internal[n - 1].as_py(), wave[n - 1].as_py())
        start = n - 1
        while start > 0 and (internal[start - 1].as_py(), wave[start - 1].as_py()) == last:
            start -= 1
        if start:
            self._process(table.slice(0, start))
        self._carry = table.slice(start)

    def finish(self) -> None:
        if self._carry is not None and self._carry.num_rows:
            self._process(self._carry)
        self._carry = None

    # -- one table of whole (participant, wave) groups --

    def _process(self, table: pa.Table) -> None:
        table = table.combine_chunks()
        enc = table.column("internal").chunk(0).dictionary_encode()
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        persons = [self.people.get(v) for v in enc.dictionary.to_pylist()]
        known = np.array([p is not None for p in persons], bool)
        wave = table.column("wave").to_numpy()
        inst_enc = table.column("instrument").chunk(0).dictionary_encode()
        icode = inst_enc.indices.to_numpy(zero_copy_only=False)
        # duplicates: the same participant, wave and instrument as the row before (sorted)
        same = np.zeros(len(codes), bool)
        same[1:] = (codes[1:] == codes[:-1]) & (wave[1:] == wave[:-1]) & (icode[1:] == icode[:-1])
        keep = known[codes] & ~same
        self.stats.duplicates += int((known[codes] & same).sum())
        if not keep.all():
            table = table.filter(pa.array(keep))
            codes = codes[keep]
            wave = wave[keep]
        n = table.num_rows
        if not n:
            return
        pid_dict = pa.array([p.pid if p is not None else None for p in persons], pa.string())
        enrolled = np.array([p.enrolled_day if p is not None else 0 for p in persons], np.int64)
        shift = np.array([getattr(p, "shift", 0) if p is not None else 0 for p in persons],
                         np.int64)
        pid = pid_dict.take(pa.array(codes))
        local = table.column("local_day").to_numpy()
        day = np.maximum(local - enrolled[codes], 0)
        last = np.full(len(persons), -1, np.int64)
        np.maximum.at(last, codes, day)
        for ix in np.flatnonzero(last >= 0):
            p = persons[ix]
            p.last_day = max(p.last_day, int(last[ix]))
        self._count(table)

        instrument = table.column("instrument")
        inst_py = np.array(instrument.to_pylist(), dtype=object)
        valid_col = table.column("valid")
        scored = valid_col.is_valid().to_numpy(zero_copy_only=False)
        valid = valid_col.fill_null(False).to_numpy(zero_copy_only=False)
        primary = table.column("primary").to_numpy(zero_copy_only=False)  # NaN when null
        released_day = timeshift.coarse_days(day, self.day_resolution)
        start = enrolled + shift  # each person's shifted enrollment day
        weeks = {col: timeshift.event_weeks(start[codes], released_day, ev,
                                            self.event_band_weeks) for col, ev in self.events}

        # -- responses --
        rmask = scored | np.isin(inst_py, list(self.instruments)) if self.include_items \
            else scored
        ridx = np.flatnonzero(rmask)
        if len(ridx):
            take = pa.array(ridx)
            n_answered = table.column("n_answered").take(take)
            out: dict[str, Any] = {
                "pid": pid.take(take),
                "instrument": instrument.take(take),
                "wave": wave[ridx],
                "day": released_day[ridx],
                "score": table.column("primary").take(take),
                "severity": table.column("band").take(take),
                "valid": valid[ridx],
                "translation_status": table.column("tstatus").take(take),
            }
            for col, w in weeks.items():
                out[col] = w[ridx]
            subs = table.column("subscales").take(take)
            if subs.null_count < len(subs):
                sub_cols: dict[str, list[Any]] = {}
                for j, raw in enumerate(subs.to_pylist()):
                    if raw is None:
                        continue
                    for k, v in json.loads(raw).items():
                        col = f"{spec.SUBSCALE_PREFIX}{k}"
                        if col in self.subscale_columns:
                            sub_cols.setdefault(col, [None] * len(ridx))[j] = v
                out.update(sub_cols)
            if self.include_items and self.item_values is not None:
                answers = table.column("answers").take(take).to_pylist()
                counts = n_answered.to_pylist()
                item_cols: dict[str, list[Any]] = defaultdict(lambda: [None] * len(ridx))
                for j, (ikey, raw) in enumerate(zip(inst_py[ridx], answers, strict=True)):
                    obj = json.loads(raw) if raw else {}
                    for col, v in self.item_values(ikey, obj).items():
                        item_cols[col][j] = v
                    if not scored[ridx[j]]:
                        counts[j] = sum(1 for v in obj.values() if v is not None)
                out.update(item_cols)
                n_answered = pa.array(counts, pa.int64())
            out["n_items_answered"] = n_answered
            self.sinks["responses"].write(out, len(ridx))

        # -- the wide panel's groups --
        new = np.ones(n, bool)
        new[1:] = (codes[1:] != codes[:-1]) | (wave[1:] != wave[:-1])
        starts = np.flatnonzero(new)
        gidx = np.cumsum(new) - 1
        ng = len(starts)
        panel: dict[str, Any] = {
            "pid": pid.take(pa.array(starts)),
            "wave": wave[starts],
            "day": np.minimum.reduceat(day, starts),
        }
        panel["day"] = timeshift.coarse_days(panel["day"], self.day_resolution)
        for col, ev in self.events:
            panel[col] = timeshift.event_weeks(start[codes[starts]], panel["day"], ev,
                                               self.event_band_weeks)
        ok = valid & ~np.isnan(primary)
        for k in self.outcomes:
            col = np.full(ng, np.nan)
            m = ok & (inst_py == k)
            col[gidx[m]] = primary[m]
            panel[k] = col
        if self.withdrawn_cells is not None:
            panel.update(self._score_reasons(panel, inst_py, gidx, ng,
                                             [persons[c] for c in codes[starts]], wave[starts]))

        # -- usage (row by row: the answers are JSON) --
        uidx = np.flatnonzero(inst_py == USAGE_INSTRUMENT)
        if len(uidx):
            answers = table.column("answers").take(pa.array(uidx)).to_pylist()
            usage = _UsageColumns()
            summary = {k: [None] * ng for k in ("hours_4o", "hours_other_ai", "hours_total",
                                                 "framing", "companion_use", "access_loss")}
            pids = pid.take(pa.array(uidx)).to_pylist()
            for j, i in enumerate(uidx):
                if answers[j] is None:
                    continue
                s = usage.add(pids[j], int(wave[i]), int(released_day[i]),
                              json.loads(answers[j]))
                g = gidx[i]
                for k, v in s.items():
                    summary[k][g] = v
            if usage.n:
                self.sinks["usage"].write(usage.cols, usage.n)
            panel.update(summary)
        self.sinks["panel"].write(panel, ng)

    def _score_reasons(self, panel: Mapping[str, Any], inst_py: np.ndarray, gidx: np.ndarray,
                       ng: int, persons: Sequence[Any], waves: np.ndarray
                       ) -> dict[str, list[str | None]]:
        """Why each empty outcome cell of the panel's rows is empty (issue 16 part 5), as
        semicolon-separated outcome columns per reason: skipped (answered, but too few items
        for a valid score), withdrawn (the survey came after the participant's withdrawal:
        ``withdrawn_cells``), else not administered (not sent in that wave, or closed
        unanswered)."""
        lists: dict[str, list[list[str]]] = {c: [[] for _ in range(ng)]
                                             for c in SCORE_REASON_COLUMNS}
        lost = self.withdrawn_cells or set()
        for k in self.outcomes:
            empty = np.isnan(np.asarray(panel[k], dtype=float))
            if not empty.any():
                continue
            answered = np.zeros(ng, bool)
            answered[gidx[inst_py == k]] = True
            for g in np.flatnonzero(empty):
                if answered[g]:
                    reason = "scores_skipped"
                elif lost and (persons[g].internal, int(waves[g]), k) in lost:
                    reason = "scores_withdrawn"
                else:
                    reason = "scores_not_administered"
                lists[reason][g].append(k)
        return {c: [";".join(v) or None for v in cells] for c, cells in lists.items()}

    def _count(self, table: pa.Table) -> None:
        grouped = table.group_by(["instrument", "language", "tstatus"]).aggregate(
            [("wave", "count")]).to_pylist()
        for row in grouped:
            self.stats.answered[row["instrument"]][(row["language"], row["tstatus"])] += \
                row["wave_count"]
        for row in table.group_by(["instrument", "version"]).aggregate(
                [("wave", "count")]).to_pylist():
            self.stats.versions[row["instrument"]][row["version"]] += row["wave_count"]


class _UsageColumns:
    """The seven model rows of each ai_usage answer, appended column by column."""

    MODELS = spec.MODELS
    K = len(spec.MODELS)

    def __init__(self) -> None:
        names = ["pid", "wave", "day", "model", "used", "hours_per_week", "framing",
                 *[f"purpose_{p}" for p in spec.PURPOSES], "purpose_other", "access_loss",
                 "access_loss_distress", "lost_access_to_model"]
        self.cols: dict[str, list[Any]] = {n: [] for n in names}
        self.n = 0

    def add(self, pid: str, wave: int, day: int, answers: Mapping[str, Any]) -> dict[str, Any]:
        c, k = self.cols, self.K
        used_models = answers.get("used_models")
        answered = isinstance(used_models, list)
        used_set = set(used_models) if answered else set()
        any_used = bool(used_set - {"none"})
        purposes = answers.get("purposes")
        if isinstance(purposes, list):
            purpose = {p: (v in purposes) for p, v in PURPOSE_VALUES.items()}
            purpose["other"] = "other" in purposes
        else:
            fill = False if (answered and not any_used) else None
            purpose = dict.fromkeys([*PURPOSE_VALUES, "other"], fill)
        framing = _int(answers.get("ai_framing"))
        lost = answers.get("lost_access")
        access_loss = None if lost is None else lost == "yes"
        distress = _int(answers.get("lost_access_feeling")) if access_loss else None
        lost_models = answers.get("lost_access_models")
        lost_set = set(lost_models) if isinstance(lost_models, list) else set()
        hours: dict[str, float | None] = {}
        for model in self.MODELS:
            if not answered:
                h = None
            elif model in used_set:
                h = _hours(answers.get(f"hours_{model}"))
            else:
                h = 0.0
            hours[model] = h
            c["used"].append(model in used_set)
            c["hours_per_week"].append(h)
            c["lost_access_to_model"].append(
                (model in lost_set) if access_loss is not None else None)
        c["pid"].extend([pid] * k)
        c["wave"].extend([wave] * k)
        c["day"].extend([day] * k)
        c["model"].extend(self.MODELS)
        c["framing"].extend([framing] * k)
        for p in spec.PURPOSES:
            c[f"purpose_{p}"].extend([purpose[p]] * k)
        c["purpose_other"].extend([purpose["other"]] * k)
        c["access_loss"].extend([access_loss] * k)
        c["access_loss_distress"].extend([distress] * k)
        self.n += k

        def total(models: Sequence[str]) -> float | None:
            vals = [hours[m] for m in models]
            return None if any(v is None for v in vals) else float(sum(vals))  # type: ignore[arg-type]

        h4o = total(spec.MODELS_4O)
        hother = total([m for m in self.MODELS if m not in spec.MODELS_4O])
        comp = None
        if purpose["companionship"] is not None:
            comp = bool(purpose["companionship"] or purpose["emotional_support"])
        return {
            "hours_4o": h4o,
            "hours_other_ai": hother,
            "hours_total": None if h4o is None or hother is None else h4o + hother,
            "framing": framing,
            "companion_use": comp,
            "access_loss": access_loss,
        }
