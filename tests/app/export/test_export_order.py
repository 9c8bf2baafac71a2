"""No order leaks (issue 16 part 6): every exported table lists participants in the order of
their pseudonyms, so row order tells nothing about internal ids and two exports with fresh keys
cannot be paired row by row. On SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from pathlib import Path

import pandas as pd
import pytest

from app.export.service import ExportOptions, export_panel, pseudonym_of

TABLES = ("participants", "responses", "usage", "panel")


def participant_order(path: Path) -> list[str]:
    """The pids of a table in the order their rows first appear; each participant's rows must
    be one contiguous block."""
    pids = pd.read_csv(path, dtype=str, usecols=["pid"])["pid"].tolist()
    blocks = [pid for ix, pid in enumerate(pids) if ix == 0 or pids[ix - 1] != pid]
    assert len(blocks) == len(set(blocks)), f"{path.name}: a participant's rows are split"
    return blocks


def export_with(engine, out: Path, key: bytes, fmt: str = "csv") -> None:  # type: ignore[no-untyped-def]
    export_panel(engine, ExportOptions(out=out, fmt=fmt, key=key))


def internal_order(out: Path, key: bytes, internal_ids: list[str]) -> dict[str, list[str]]:
    """Each table's participants in row order, decoded to internal ids with the key."""
    by_pid = {pseudonym_of(key, i): i for i in internal_ids}
    return {name: [by_pid[pid] for pid in participant_order(out / f"{name}.csv")]
            for name in TABLES}


def spearman(a: list[str], b: list[str]) -> float:
    """Rank correlation of two orders of the same ids."""
    pos = {x: ix for ix, x in enumerate(b)}
    return float(pd.Series(range(len(a))).corr(pd.Series([pos[x] for x in a]),
                                               method="spearman"))


def test_every_table_is_in_pseudonym_order(engine, population, tmp_path):
    key = secrets.token_bytes(32)
    out = tmp_path / "panel"
    export_with(engine, out, key)
    exported = [p.id for p in population.exported]
    orders = internal_order(out, key, exported)
    for name in TABLES:
        pids = participant_order(out / f"{name}.csv")
        assert pids == sorted(pids), name
    assert set(orders["participants"]) == set(exported)
    # the other tables list the same participants in the same order (those with rows there)
    for name in ("responses", "usage", "panel"):
        present = set(orders[name])
        assert orders[name] == [i for i in orders["participants"] if i in present], name
    # within a participant, the waves still come in order
    panel = pd.read_csv(out / "panel.csv", usecols=["pid", "wave"])
    assert (panel.groupby("pid", sort=False)["wave"].apply(
        lambda w: w.is_monotonic_increasing)).all()


def test_row_order_does_not_reveal_internal_ids(engine, population, tmp_path):
    key = secrets.token_bytes(32)
    out = tmp_path / "panel"
    export_with(engine, out, key)
    exported = [p.id for p in population.exported]
    by_id = sorted(exported)
    for name, order in internal_order(out, key, exported).items():
        assert order != [i for i in by_id if i in set(order)], name
        # no monotone relation to the internal ids (|rho| > 0.6 has p < 1e-5 for ~60 people)
        assert abs(spearman(order, [i for i in by_id if i in set(order)])) < 0.6, name


@pytest.mark.parametrize("fmt", ["csv", "sav"])
def test_two_exports_with_fresh_keys_cannot_be_paired_by_row_order(
        engine, population, tmp_path, fmt):
    keys = [secrets.token_bytes(32), secrets.token_bytes(32)]
    exported = [p.id for p in population.exported]
    orders = []
    for n, key in enumerate(keys):
        out = tmp_path / f"panel{n}"
        export_with(engine, out, key, fmt)
        if fmt == "sav":  # the SPSS file itself, decoded
            import pyreadstat

            df, _ = pyreadstat.read_sav(str(out / "participants.sav"))
            by_pid = {pseudonym_of(key, i): i for i in exported}
            orders.append([by_pid[pid] for pid in df["pid"]])
        else:
            orders.append(internal_order(out, key, exported)["participants"])
    first, second = orders
    assert len(first) == len(second) == len(exported)
    # pairing row i of one export with row i of the other: about one right by chance
    paired = sum(a == b for a, b in zip(first, second, strict=True))
    assert paired <= 8, f"{paired} of {len(first)} participants paired by row order"
    assert abs(spearman(first, second)) < 0.6
