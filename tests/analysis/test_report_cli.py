"""The `analyze` and `power` commands (analysis.cli.register on a local Typer app), the HTML
report and results.json, and one-line errors for bad input."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from analysis import cli, simulate

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()
    cli.register(a)
    return a


@pytest.fixture(scope="module")
def report_dir(app, sim_panel_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    res = runner.invoke(app, ["analyze", str(sim_panel_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output
    return out


def test_report_is_self_contained_with_readable_figures(report_dir):
    html = (report_dir / "report.html").read_text()
    for section in (
        "Data quality",
        "Primary results",
        "Event study",
        "Diagnostics",
        "Within-person effect plots",
        "Individual trajectories",
        "Methods",
    ):
        assert section in html or section.lower() in html.lower(), section
    assert "<script" not in html and 'src="http' not in html  # nothing external
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 8
    for b64 in images:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    alts = re.findall(r'<img alt="([^"]+)"', html)
    assert "event study who5" in alts and "compliance and retention by wave" in alts
    assert any(a.startswith("within ") for a in alts)
    assert "simulated" in html  # the simulated panel is labelled as such


def test_results_json_has_confirmatory_family_and_truth(report_dir):
    res = json.loads((report_dir / "results.json").read_text())
    conf = res["confirmatory"]["estimates"]
    assert [r["outcome"] for r in conf] == ["who5", "phq9", "gad7", "ucla3", "ai_dependence"]
    for r in conf:
        assert r["ci_lower"] < r["estimate"] < r["ci_upper"]
        assert r["p"] <= r["p_bh"] <= 1
    families = {m["family"] for m in res["models"]}
    assert {
        "growth",
        "within_between",
        "lagged",
        "event_its",
        "event_study",
        "moderation",
    } <= families
    assert res["panel"]["simulation"]["seed"] == 11
    assert res["event_studies"] and res["data_quality"]["n_participants"] == 120
    # true within effect of 4o hours on WHO-5 inside the interval (simulated panel)
    who5 = conf[0]
    assert who5["ci_lower"] < simulate.DEFAULT_EFFECTS["who5"].within < who5["ci_upper"]


def test_analyze_errors_are_one_line(app, tmp_path, sim_panel_dir):
    res = runner.invoke(app, ["analyze", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        f"error: {tmp_path} is not a Data Package: it has no datapackage.json"
    ]
    assert "Traceback" not in res.output
    res = runner.invoke(
        app,
        [
            "analyze",
            str(sim_panel_dir),
            "--out",
            str(tmp_path / "o"),
            "--outcomes",
            "who5,happiness",
        ],
    )
    assert res.exit_code == 2 and "no scores for outcome(s) happiness" in res.output


def test_analyze_too_few_participants(app, tmp_path):
    simulate.simulate_datapackage(tmp_path / "tiny", n_participants=4, n_waves=3, seed=2)
    res = runner.invoke(app, ["analyze", str(tmp_path / "tiny"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "the analysis needs at least 10" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_power_command_writes_curve(app, tmp_path):
    out = tmp_path / "power"
    res = runner.invoke(
        app,
        [
            "power",
            "--participants",
            "20,60",
            "--waves",
            "6",
            "--effect",
            "0.2",
            "--sims",
            "12",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = (out / "power.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("n_participants")
    data = json.loads((out / "power.json").read_text())["points"]
    assert data[0]["n_participants"] == 20 and data[1]["n_participants"] == 60
    assert all(0 <= p["ci_lower"] <= p["power"] <= p["ci_upper"] <= 1 for p in data)
    assert data[1]["power"] >= data[0]["power"]  # more participants, more power
    assert (out / "power.png").stat().st_size > 5000


def test_power_rejects_bad_design(app, tmp_path):
    res = runner.invoke(app, ["power", "--participants", "5", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "at least 10" in res.output
    res = runner.invoke(app, ["power", "--participants", "a,b", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "cannot read the list" in res.output


def test_analyze_unknown_predictor_and_single_wave(app, tmp_path, sim_panel_dir):
    res = runner.invoke(
        app,
        [
            "analyze",
            str(sim_panel_dir),
            "--out",
            str(tmp_path / "o"),
            "--predictor",
            "hours_claude",
            "--no-progress",
        ],
    )
    assert res.exit_code == 2
    assert res.output.strip() == "error: the panel has no column(s) hours_claude"
    simulate.simulate_datapackage(tmp_path / "one", n_participants=30, n_waves=1, seed=3)
    res = runner.invoke(app, ["analyze", str(tmp_path / "one"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "no participant answered two or more waves" in res.output
