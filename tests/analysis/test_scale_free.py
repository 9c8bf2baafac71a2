"""Scale-free inference and clear errors (#19 part 4).

Satterthwaite df and p-values must not depend on the units of the outcome or the predictors;
every impossible input is refused with an AnalysisError naming the column and the problem
(never a LinAlgError, TypeError or ValueError from deep inside the engine).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import mixed, panel, simulate
from analysis.errors import ColumnError, FormulaError, InsufficientDataError

FORMULA = "who5 ~ time + hours_4o_within + hours_4o_between"
RANDOM = "~ time"
FACTORS = [1e-6, 1e-4, 1e-2, 1e2, 1e4, 1e6]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    sp = simulate.simulate_panel(60, 6, seed=3, outcomes=("who5",), long_tables=False)
    f = panel.decompose(panel.add_time(sp["panel"]), ["hours_4o"])
    return f[f["who5"].notna()].reset_index(drop=True)


@pytest.fixture(scope="module")
def base(frame) -> mixed.MixedResult:
    return mixed.fit(frame, FORMULA, "pid", random=RANDOM)


def _same_inference(res: mixed.MixedResult, base: mixed.MixedResult) -> None:
    assert not res.warnings
    np.testing.assert_allclose(res.df, base.df, rtol=1e-4)
    np.testing.assert_allclose(res.p, base.p, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(res.t, base.t, rtol=1e-5)


@pytest.mark.parametrize("factor", FACTORS)
def test_df_and_p_do_not_depend_on_the_outcome_units(frame, base, factor):
    """Before: df went wrong outside a residual SD of about 1e-3..1e4 (a finite-difference step
    of 1e-4 * max(sigma, 0.1) and absolute eigenvalue cut-offs); now the Hessian is taken in
    sigma / sigma_hat."""
    g = frame.assign(who5=frame["who5"] * factor)
    res = mixed.fit(g, FORMULA, "pid", random=RANDOM)
    _same_inference(res, base)
    np.testing.assert_allclose(res.fe, base.fe * factor, rtol=1e-5)
    n_eff = res.n_obs - len(res.fe)  # REML: the likelihood of N - p error contrasts
    assert res.loglik == pytest.approx(base.loglik - n_eff * np.log(factor), rel=1e-9)


@pytest.mark.parametrize("factor", FACTORS)
def test_df_and_p_do_not_depend_on_the_predictors_units(frame, base, factor):
    g = frame.assign(
        time=frame["time"] * factor,
        hours_4o_within=frame["hours_4o_within"] * factor,
        hours_4o_between=frame["hours_4o_between"] / factor,
    )
    res = mixed.fit(g, FORMULA, "pid", random=RANDOM)
    _same_inference(res, base)
    np.testing.assert_allclose(res.fe["time"], base.fe["time"] / factor, rtol=1e-5)
    np.testing.assert_allclose(
        res.fe["hours_4o_between"], base.fe["hours_4o_between"] * factor, rtol=1e-5
    )


@pytest.mark.parametrize("offset", [1e5, 1e9])
def test_a_predictor_far_from_zero_fits_like_its_centered_version(frame, offset):
    """1e5 + N(0, 1) was refused as rank deficient (the rank check compared it with the
    intercept on an absolute scale); lme4 fits it. The slope, SE and df equal those of the
    centered predictor."""
    z = np.random.default_rng(0).normal(size=len(frame))
    near = mixed.fit(frame.assign(x=z), "who5 ~ time + x", "pid", random=RANDOM)
    far = mixed.fit(frame.assign(x=offset + z), "who5 ~ time + x", "pid", random=RANDOM)
    assert not far.warnings
    for part in ("fe", "se", "df"):
        assert getattr(far, part)["x"] == pytest.approx(getattr(near, part)["x"], rel=1e-6)
    assert far.loglik == pytest.approx(near.loglik, abs=1e-6)


def test_a_constant_or_collinear_predictor_is_still_refused_and_named(frame):
    with pytest.raises(FormulaError, match="constant: x"):
        mixed.fit(frame.assign(x=1e5), "who5 ~ time + x", "pid", random=RANDOM)
    with pytest.raises(FormulaError, match="collinear"):
        mixed.fit(frame.assign(x=2 * frame["time"] + 1e5), "who5 ~ time + x", "pid", random=RANDOM)


def _broken(frame: pd.DataFrame, case: str) -> tuple[pd.DataFrame, str, str]:
    """(data, column at fault, problem code)."""
    g = frame.copy()
    if case == "inf outcome":
        g.loc[3, "who5"] = np.inf
        return g, "who5", "non_finite"
    if case == "-inf predictor":
        g.loc[5, "hours_4o_within"] = -np.inf
        return g, "hours_4o_within", "non_finite"
    if case == "inf in the random part":
        g.loc[7, "time"] = np.inf
        return g, "time", "non_finite"
    if case == "constant outcome":
        return g.assign(who5=50.0), "who5", "constant"
    if case == "zero-residual outcome":
        return (
            g.assign(who5=3 + 2 * g["time"] - 0.5 * g["hours_4o_within"]),
            "who5",
            ("zero_residual"),
        )
    if case == "numbers as text":
        return (
            g.assign(hours_4o_within=g["hours_4o_within"].round(1).astype(str)),
            ("hours_4o_within"),
            "text_numbers",
        )
    if case == "outcome as text":
        return g.assign(who5=g["who5"].astype(str)), "who5", "text_numbers"
    if case == "values too large":
        return g.assign(who5=g["who5"] * 1e200), "who5", "too_large"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "inf outcome",
        "-inf predictor",
        "inf in the random part",
        "constant outcome",
        "zero-residual outcome",
        "numbers as text",
        "outcome as text",
        "values too large",
    ],
)
def test_every_failure_is_a_clear_error_naming_the_column(frame, case):
    """Before: +-inf gave LinAlgError, a constant outcome TypeError, a zero-residual outcome
    'ValueError: math domain error', and numbers stored as text became one dummy per value."""
    data, column, problem = _broken(frame, case)
    with pytest.raises(ColumnError) as err:
        mixed.fit(data, FORMULA, "pid", random=RANDOM)
    assert err.value.column == column
    assert err.value.problem == problem
    assert repr(column) in str(err.value)


def test_text_categories_are_still_dummy_coded(frame):
    """Only numbers stored as text are refused: real categories are a factor, as in lme4."""
    rng = np.random.default_rng(1)
    g = frame.assign(arm=rng.choice(["control", "treated"], len(frame)))
    res = mixed.fit(g, "who5 ~ time + arm", "pid", random=RANDOM)
    assert list(res.fe.index) == ["Intercept", "time", "arm[T.treated]"]


def test_missing_patterns_say_which_columns_are_missing(frame):
    g = frame.copy()
    g.loc[g.index % 2 == 0, "hours_4o_within"] = np.nan
    g.loc[g.index % 2 == 1, "who5"] = np.nan
    with pytest.raises(InsufficientDataError) as err:
        mixed.fit(g, FORMULA, "pid", random=RANDOM)
    msg = str(err.value)
    assert "'hours_4o_within' missing in" in msg and "'who5' missing in" in msg
    assert "no row has all of these columns at once" in msg
    with pytest.raises(InsufficientDataError, match="'who5' missing in 273 of 273 rows"):
        mixed.fit(frame.assign(who5=np.nan), FORMULA, "pid", random=RANDOM)
