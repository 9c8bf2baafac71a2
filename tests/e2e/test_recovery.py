"""simulate -> export -> analyze, end to end: effects put into the data come out of the analysis.

A synthetic study (known within- and between-person effects of GPT-4o hours on WHO-5, and a drop
at an access loss) is stored through the services, exported as a strict CSV Data Package and
fitted by the analysis package's standard analysis (what `wellpanel analyze` runs). The true
values must lie inside the 95% confidence intervals, and those intervals must exclude zero, so a
pipeline that lost or scrambled the signal (waves, days, hours, pseudonyms) would fail. No
browser: SQLite only (the database layer is covered on both backends elsewhere).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from frictionless import validate
from sqlalchemy import select

from analysis.panel import load_panel
from analysis.pipeline import run_analysis
from app.export import deidentify
from app.export.service import ExportOptions, export_panel
from app.participants.models import Participant
from app.simulate.service import SimulateOptions, simulate
from tests.conftest import SURVEYS_DIR

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
# Within: +1.5 WHO-5 points per extra weekly hour of GPT-4o in the same weeks; between: -2.0 per
# hour of a person's typical use; -8 points from the wave an access loss is reported.
EFFECTS = {"who5": {"within": 1.5, "between": -2.0, "loss_level": -8.0}}


def test_known_effects_survive_simulate_export_and_analyze(engine, tmp_path):
    result = simulate(engine, SimulateOptions(participants=100, waves=8, seed=1,
                                              effects=EFFECTS),
                      surveys_dir=SURVEYS_DIR, now=NOW)
    assert result.unanswerable == 0
    truth = result.truth["effects"]["who5"]
    assert (truth["within"], truth["between"], truth["loss_level"]) == (1.5, -2.0, -8.0)

    out = tmp_path / "panel"
    export = export_panel(engine, ExportOptions(out=out, fmt="csv", profile="strict"))
    assert export.rows["participants"] == 100 - result.fates.get("delete_data", 0)
    _package_is_valid_and_anonymous(engine, out, export)
    panel = load_panel(out)
    analysis = run_analysis(panel, outcomes=["who5"])
    fit = analysis.fits[("within_between", "who5", "")]
    table = fit.table.set_index("term")
    checks = {"within": fit.roles["within"], "between": fit.roles["between"],
              "loss_level": "loss_post"}
    for name, term in checks.items():
        row = table.loc[term]
        assert row["ci_lower"] <= truth[name] <= row["ci_upper"], (name, row.to_dict())
        assert row["ci_lower"] > 0 or row["ci_upper"] < 0, f"{name}: CI includes 0"

    # the waves are two weeks apart, as the participants answered them
    days = panel.wide.groupby("wave")["day"].median()
    assert list(days.index) == list(range(8))
    assert all(abs(days[w] - 14 * w) <= 3 for w in days.index)
    _access_loss_is_visible(panel.usage)


def _package_is_valid_and_anonymous(engine, out, export) -> None:  # type: ignore[no-untyped-def]
    report = validate(str(out / "datapackage.json"))
    assert report.valid, report.flatten(["type", "note"])
    with engine.connect() as conn:
        internal_ids = [row[0] for row in conn.execute(select(Participant.id))]
    assert internal_ids
    needles = [b"example.invalid", *(i.encode() for i in internal_ids)]
    for f in out.rglob("*"):
        if f.is_file():
            content = f.read_bytes()
            assert not any(n in content for n in needles), f
    participants = pd.read_csv(out / "participants.csv", dtype=str, keep_default_na=False)
    qi = [c for c in ("age_band", "gender", "region", "living_situation") if c in participants]
    rows = participants[qi].replace("", None).values.tolist()
    k = export.deidentification["quasi_identifiers"]["k"]
    assert deidentify.check_k_anonymity(rows, k) >= k


def _access_loss_is_visible(usage: pd.DataFrame) -> None:
    reported = usage[usage["access_loss"].fillna(False).astype(bool)]
    assert reported["pid"].nunique() >= 5
    # the models lost are GPT-4o's, and the distress question was answered
    lost = reported[reported["lost_access_to_model"].fillna(False).astype(bool)]
    assert set(lost["model"]) <= {"gpt4o_chatgpt", "gpt4o_api"} and len(lost)
    assert reported["access_loss_distress"].notna().all()
    # GPT-4o hours fall after the loss: per person, before vs from the reported wave on
    four_o = usage[usage["model"].isin(["gpt4o_chatgpt", "gpt4o_api"])]
    hours = four_o.groupby(["pid", "wave"])["hours_per_week"].sum().reset_index()
    first = reported.groupby("pid")["wave"].min().rename("loss_wave")
    hours = hours.merge(first, on="pid")
    hours["after"] = hours["wave"] >= hours["loss_wave"]
    means = hours.groupby(["pid", "after"])["hours_per_week"].mean().unstack()
    means = means.dropna()
    assert len(means) >= 3
    assert (means[True] < means[False]).mean() >= 0.75
    assert pd.Series(means[True]).mean() < 0.6 * pd.Series(means[False]).mean()
