"""Reading, validating and shaping panel Data Packages (analysis.spec, .datapackage, .panel)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import datapackage, simulate, spec
from analysis.errors import PanelError
from analysis.panel import (
    add_access_loss_time,
    add_lags,
    analysis_frame,
    decompose,
    load_panel,
    panel_from_frames,
)


def test_simulated_package_passes_frictionless(sim_frames, tmp_path):
    path = datapackage.write_datapackage(sim_frames, tmp_path / "csv")
    ok, errors = datapackage.frictionless_report(path)
    assert ok, errors
    desc = json.loads(path.read_text())
    wp = desc[spec.PROPERTY]
    assert wp["format_version"] == 1 and wp["generated_by"] == "analysis.simulate"
    assert wp["export_profile"] == "simulated"
    assert wp["simulation"]["seed"] == 5
    assert wp["simulation"]["effects"]["who5"]["within"] == simulate.DEFAULT_EFFECTS["who5"].within
    names = [r["name"] for r in desc["resources"]]
    assert names == list(spec.REQUIRED_RESOURCES)
    usage = next(r for r in desc["resources"] if r["name"] == "usage")
    assert usage["schema"]["primaryKey"] == ["pid", "wave", "model"]
    assert usage["schema"]["missingValues"] == [""]


def test_parquet_package_round_trips(sim_frames, tmp_path):
    datapackage.write_datapackage(sim_frames, tmp_path, fmt="parquet")
    p = load_panel(tmp_path)
    q = panel_from_frames(sim_frames)
    pd.testing.assert_series_equal(p.wide["who5"], q.wide["who5"])
    assert p.wide["access_loss"].dtype == "boolean"


def test_csv_round_trip_keeps_values_and_types(sim_frames, tmp_path):
    datapackage.write_datapackage(sim_frames, tmp_path)
    p = load_panel(tmp_path)
    assert len(p.wide) == len(sim_frames["panel"])
    assert p.wide["wave"].dtype == "int64"
    assert p.usage["access_loss_distress"].dtype == "Int64"
    # missing distress exactly where there was no loss
    u = p.usage
    assert u.loc[~u["access_loss"].astype(bool), "access_loss_distress"].isna().all()
    orig = sim_frames["panel"].sort_values(["pid", "wave"], ignore_index=True)
    np.testing.assert_allclose(p.wide["hours_4o"], orig["hours_4o"])
    assert p.event_keys == ["gpt4o_retirement"]


def test_table_schema_for_extra_columns():
    schema = spec.table_schema(
        "participants", [*spec.PARTICIPANTS.columns, "cohort"], {"cohort": "integer"}
    )
    assert schema["fields"][-1]["type"] == "integer"
    with pytest.raises(KeyError, match="needs a type"):
        spec.table_schema("participants", ["pid", "mystery"])


def test_strict_profile_drops_event_dates():
    wp = spec.wellpanel_property(
        generated_by=spec.GENERATED_BY_EXPORT,
        export_profile="strict",
        study={"key": "k", "title": "t", "protocol_version": "1"},
    )
    assert "date" not in wp["events"][0]


# --- bad input: each error names what is wrong ------------------------------------------
@pytest.fixture()
def package(sim_frames, tmp_path) -> Path:
    datapackage.write_datapackage(sim_frames, tmp_path / "pkg")
    return tmp_path / "pkg"


def _edit_descriptor(pkg: Path, fn) -> None:
    p = pkg / "datapackage.json"
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))


def test_not_a_data_package(tmp_path):
    with pytest.raises(PanelError, match="not a Data Package: it has no datapackage.json"):
        load_panel(tmp_path)
    with pytest.raises(PanelError, match="does not exist"):
        load_panel(tmp_path / "nope")


def test_invalid_json(package):
    (package / "datapackage.json").write_text("{not json")
    with pytest.raises(PanelError, match="not valid JSON"):
        load_panel(package)


def test_missing_resource(package):
    _edit_descriptor(package, lambda d: d["resources"].pop(2))
    with pytest.raises(PanelError, match="has no resource 'usage'"):
        load_panel(package)


def test_missing_file(package):
    (package / "responses.csv").unlink()
    with pytest.raises(PanelError, match=r"resource 'responses': file .*responses.csv does not"):
        load_panel(package)


def test_missing_column(package):
    df = pd.read_csv(package / "panel.csv", dtype=str, keep_default_na=False)
    df.drop(columns=["hours_4o"]).to_csv(package / "panel.csv", index=False)

    def drop_field(d):
        res = next(r for r in d["resources"] if r["name"] == "panel")
        res["schema"]["fields"] = [f for f in res["schema"]["fields"] if f["name"] != "hours_4o"]

    _edit_descriptor(package, drop_field)
    with pytest.raises(
        PanelError,
        match=r"resource 'panel' \(panel.csv\) lacks required column"
        r"\(s\): hours_4o",
    ):
        load_panel(package)


def test_wrong_type_value(package):
    df = pd.read_csv(package / "usage.csv", dtype=str, keep_default_na=False)
    df.loc[3, "hours_per_week"] = "lots"
    df.to_csv(package / "usage.csv", index=False)
    with pytest.raises(
        PanelError,
        match=r"column 'hours_per_week': expected number, found "
        r"'lots' \(row 4\)",
    ):
        load_panel(package)


def test_wrong_declared_type(package):
    def retype(d):
        res = next(r for r in d["resources"] if r["name"] == "responses")
        next(f for f in res["schema"]["fields"] if f["name"] == "score")["type"] = "string"

    _edit_descriptor(package, retype)
    with pytest.raises(
        PanelError, match="declares column 'score' as string; the contract needs number"
    ):
        load_panel(package)


def test_bad_boolean_and_enum_and_key(package):
    df = pd.read_csv(package / "participants.csv", dtype=str, keep_default_na=False)
    bad = df.copy()
    bad.loc[0, "used_4o_before_retirement"] = "maybe"
    bad.to_csv(package / "participants.csv", index=False)
    with pytest.raises(PanelError, match="expected boolean"):
        load_panel(package)
    bad = df.copy()
    bad.loc[0, "status"] = "vanished"
    bad.to_csv(package / "participants.csv", index=False)
    with pytest.raises(PanelError, match="'vanished' is not one of active, paused"):
        load_panel(package)
    bad = pd.concat([df, df.iloc[[0]]])
    bad.to_csv(package / "participants.csv", index=False)
    with pytest.raises(PanelError, match=r"primary key \(pid\) is not unique"):
        load_panel(package)


def test_unknown_pid_and_format_version(package, sim_frames):
    frames = {k: v.copy() for k, v in sim_frames.items()}
    frames["panel"].loc[0, "pid"] = "ghost"
    with pytest.raises(PanelError, match="pid\\(s\\) not in participants, e.g. 'ghost'"):
        panel_from_frames(frames, sim_frames.wellpanel)
    _edit_descriptor(package, lambda d: d["wellpanel"].update(format_version=9))
    with pytest.raises(PanelError, match="unsupported wellpanel.format_version 9"):
        load_panel(package)


def test_out_of_range_scores_warn_not_fail(sim_frames):
    frames = {k: v.copy() for k, v in sim_frames.items()}
    frames["panel"].loc[0, "who5"] = 130.0
    p = panel_from_frames(frames, sim_frames.wellpanel)
    assert any("who5: 1 score(s) outside the scale 0-100" in w for w in p.warnings)


# --- analysis frames ----------------------------------------------------------------------
def test_decomposition_within_and_between():
    df = pd.DataFrame({"pid": ["a", "a", "b", "b", "b"], "x": [1.0, 3.0, 10.0, 20.0, np.nan]})
    out = decompose(df, ["x"])
    np.testing.assert_allclose(out["x_within"], [-1, 1, -5, 5, np.nan])
    # person means 2 and 15, each participant weighted once: grand mean 8.5
    np.testing.assert_allclose(out["x_between"], [-6.5, -6.5, 6.5, 6.5, 6.5])


def test_lag_only_from_the_previous_wave():
    df = pd.DataFrame(
        {"pid": ["a"] * 3 + ["b"] * 2, "wave": [0, 1, 3, 0, 1], "y": [1.0, 2.0, 4.0, 7.0, 8.0]}
    )
    out = add_lags(df, ["y"])
    # wave 3 of 'a' follows a missed wave 2: no lag from wave 1
    np.testing.assert_allclose(out["y_lag1"], [np.nan, 1.0, np.nan, np.nan, 7.0])


def test_access_loss_event_time():
    df = pd.DataFrame(
        {
            "pid": ["a"] * 4 + ["b"] * 2,
            "wave": [0, 1, 2, 3, 0, 1],
            "day": [0, 14, 28, 42, 0, 15],
            "access_loss": [False, False, True, True, False, False],
        }
    )
    out = add_access_loss_time(df)
    np.testing.assert_allclose(out["loss_time"][:4], [-4, -2, 0, 2])
    assert out["loss_post"].tolist() == [0, 0, 1, 1, 0, 0]
    np.testing.assert_allclose(out["loss_since"], [0, 0, 0, 2, 0, 0])
    assert out["loss_time"][4:].isna().all() and not out["had_loss"][4:].any()


def test_analysis_frame_columns(sim_panel_dir):
    frame = analysis_frame(load_panel(sim_panel_dir))
    for col in (
        "time",
        "hours_4o_within",
        "hours_4o_between",
        "who5_lag1",
        "loss_post",
        "event_time_gpt4o_retirement",
        "framing_between",
        "ai_dependence_between",
    ):
        assert col in frame.columns, col
    np.testing.assert_allclose(frame["time"], frame["day"] / 7)
    sums = frame.groupby("pid")["hours_4o_within"].sum()
    np.testing.assert_allclose(sums, 0, atol=1e-9)


def test_strict_profile_has_no_study_event(sim_frames, tmp_path):
    frames = {
        k: v.drop(columns=[c for c in v.columns if c.startswith("week_since_")])
        for k, v in sim_frames.items()
    }
    wp = dict(sim_frames.wellpanel, export_profile="strict")
    pkg = tmp_path / "strict"
    datapackage.write_datapackage(frames, pkg, wellpanel=wp)
    p = load_panel(pkg)
    assert p.event_keys == []
    from analysis.models import fit_event_its

    with pytest.raises(PanelError, match="research"):
        fit_event_its(analysis_frame(p), "who5", "gpt4o_retirement")
    shutil.rmtree(pkg)
