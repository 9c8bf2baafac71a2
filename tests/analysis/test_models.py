"""Model families, multiplicity and error handling (analysis.models, .multiplicity, .mixed)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from analysis import mixed, models, simulate
from analysis.errors import FormulaError, InsufficientDataError
from analysis.multiplicity import benjamini_hochberg
from analysis.panel import analysis_frame, panel_from_frames

LATENT = {"rounding": False, "outcomes": ("who5", "phq9", "ai_dependence")}


def test_benjamini_hochberg_matches_hand_computation_and_statsmodels():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.2])
    # R: p.adjust(c(.01, .04, .03, .005, .2), "BH") = .025 .05 .05 .025 .2
    np.testing.assert_allclose(benjamini_hochberg(p), [0.025, 0.05, 0.05, 0.025, 0.2])
    rng = np.random.default_rng(3)
    q = rng.uniform(size=40) ** 3
    np.testing.assert_allclose(benjamini_hochberg(q), multipletests(q, method="fdr_bh")[1])
    out = benjamini_hochberg([0.02, np.nan, 0.04])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.04)


@pytest.fixture(scope="module")
def event_frame():
    """Usage has no effect here, so the access-loss effects are the only change at the event."""
    eff = {k: {"within": 0.0, "between": 0.0} for k in LATENT["outcomes"]}
    sp = simulate.simulate_panel(500, 12, effects=eff, seed=21, **LATENT)
    return analysis_frame(panel_from_frames(sp)), sp.truth


def test_event_its_recovers_level_and_slope_change(event_frame):
    frame, truth = event_frame
    fit = models.fit_event_its(frame, "who5")
    true = truth["effects"]["who5"]
    level, slope = fit.term("level_change"), fit.term("slope_change")
    assert abs(level["estimate"] - true["loss_level"]) < 3 * level["se"]
    assert abs(slope["estimate"] - true["loss_slope"]) < 3 * slope["se"]
    assert level["ci_lower"] < level["estimate"] < level["ci_upper"]
    assert level["ci_upper"] < 0  # a drop of 6 points is detected with 500 participants
    assert any(n.startswith("post-event slope") for n in fit.notes)


def test_event_study_curve_is_relative_to_the_bin_before(event_frame):
    frame, truth = event_frame
    es = models.fit_event_study(frame, "who5")
    ref = es.curve.set_index("bin").loc[-1]
    assert ref["estimate"] == 0 and ref["ci_lower"] == 0
    first_post = es.curve.set_index("bin").loc[0, "estimate"]
    assert first_post < -3  # the level change of -6 shows in the first post-event bin
    pre = es.curve[es.curve["bin"] < -1]
    assert (pre["ci_lower"] < 3).all() and (pre["ci_upper"] > -3).all()  # no pre-trend


@pytest.fixture(scope="module")
def usage_frame():
    eff = {k: {"loss_level": 0.0, "loss_slope": 0.0} for k in LATENT["outcomes"]}
    sp = simulate.simulate_panel(400, 10, effects=eff, seed=8, **LATENT)
    return analysis_frame(panel_from_frames(sp)), sp.truth


def test_within_between_recovers_both_effects(usage_frame):
    frame, truth = usage_frame
    fit = models.fit_within_between(frame, "who5")
    true = truth["effects"]["who5"]
    for role, key in (("within", "within"), ("between", "between"), ("time", "time")):
        row = fit.term(role)
        assert abs(row["estimate"] - true[key]) < 3 * row["se"], role
        assert np.isfinite(row["df"]) and row["df"] > 1
    within = fit.term("within")
    # standardized effect = estimate * SD(x_within) / SD(y)
    sd_x = frame.loc[frame["who5"].notna(), "hours_4o_within"].std(ddof=0)
    sd_y = frame["who5"].dropna().std(ddof=0)
    assert within["std_estimate"] == pytest.approx(within["estimate"] * sd_x / sd_y, rel=1e-6)


def test_growth_lagged_and_moderation_fit(usage_frame):
    frame, _ = usage_frame
    g = models.fit_growth(frame, "phq9")
    assert set(g.table["role"]) == {"intercept", "time"}
    lag = models.fit_lagged(frame, "who5")
    assert lag.result.n_obs < models.fit_within_between(frame, "who5").result.n_obs
    assert {"lagged", "autoregressive"} <= set(lag.table["role"])
    mod = models.fit_moderation(frame, "who5", "framing")
    inter = mod.term("interaction")
    assert inter["ci_lower"] < 0 < inter["ci_upper"]  # no moderation in the simulation
    with pytest.raises(FormulaError, match="cannot moderate its own model"):
        models.fit_moderation(frame, "ai_dependence", "ai_dependence")


def test_singular_fit_is_reported_and_still_optimal():
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(40), 8)
    t = np.tile(np.arange(8.0), 40)
    y = 1 + 0.5 * t + rng.normal(0, 1, 40)[g] + rng.normal(0, 1, g.size)  # no slope variance
    df = pd.DataFrame({"y": y, "t": t, "g": g})
    res = mixed.fit(df, "y ~ t", "g", random="~ t")
    assert res.singular and res.converged
    assert any("boundary (singular) fit" in w for w in res.warnings)
    assert abs(res.corr_re.loc["Intercept", "t"]) > 0.999  # the boundary: correlation +-1
    assert res.to_dict()["singular"] is True
    # at the boundary, the optimum is still at least as good as statsmodels'
    import statsmodels.api as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels struggles at the boundary, as expected
        model = sm.MixedLM.from_formula("y ~ t", df, groups="g", re_formula="~ t")
        ref = model.fit(method=["lbfgs"])
    assert res.loglik >= ref.llf - 1e-6 * abs(ref.llf)


def test_user_errors_name_the_problem():
    df = pd.DataFrame({"y": [1.0, 2, 3, 4], "t": [0.0, 1, 0, 1], "g": [1, 1, 2, 2]})
    with pytest.raises(FormulaError, match="unknown column\\(s\\): nope"):
        mixed.fit(df, "y ~ t + nope", "g", random="~ 1")
    with pytest.raises(FormulaError, match="must start with '~'"):
        mixed.fit(df, "y ~ t", "g", random="t")
    with pytest.raises(InsufficientDataError, match="2 participant\\(s\\)"):
        mixed.fit(df, "y ~ t", "g", random="~ 1")
    df2 = pd.DataFrame({"y": np.arange(20.0), "t": 1.0, "g": np.repeat(np.arange(5), 4)})
    with pytest.raises(FormulaError, match="rank deficient"):
        mixed.fit(df2, "y ~ t", "g", random="~ 1")


def test_contrast_matches_manual_computation():
    sleep = pd.read_csv(Path(__file__).resolve().parent / "reference" / "sleepstudy.csv")
    res = mixed.fit(sleep, "Reaction ~ Days", "Subject", random="~ Days")
    c = res.contrast({"Intercept": 1.0, "Days": 5.0})
    v = res.vcov.to_numpy()
    assert c["estimate"] == pytest.approx(res.fe["Intercept"] + 5 * res.fe["Days"])
    assert c["se"] == pytest.approx(np.sqrt(v[0, 0] + 25 * v[1, 1] + 10 * v[0, 1]))
    assert 16 < c["df"] < 18.5
