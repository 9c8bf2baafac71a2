"""Every reported estimate is calibrated by simulation (#19 part 1).

For every model family and every quantity the report shows (primary model: within, between,
time; growth: time; lagged: the lagged usage effect; moderation: the interaction, and its
within effect; interrupted time series: level change, slope change, pre- and post-event
slopes), a fixed-seed simulation study (:mod:`analysis.calibration`: 100 participants x 8
waves, every wave observed, latent scores, the simulator's usage and access losses) checks

- bias: |mean estimate - truth| <= 2 Monte Carlo SEs (SD of the estimates / sqrt(R));
- coverage of the 95% Satterthwaite interval;
- the false-positive rate of the 5% test where the truth is 0 (the null scenarios, and the
  lagged effect and moderation interaction, which the simulator does not produce).

Two versions:

- In the suite, R = 200 replicates with seeds 1000-1199 (``SUITE_SEED``). The Monte Carlo SE
  of a 95% coverage is then 1.5 points, so the issue's window [0.93, 0.97] is only +-1.3 SE
  wide: a correct method would fail it by chance about once in five checks. The suite
  therefore checks that 0.95 lies in the exact (Clopper-Pearson) 95% binomial interval of the
  observed coverage, and 0.05 in that of the observed false-positive rate (with 200
  replicates: coverage at least ~0.915, false positives at most ~0.085). This still fails the
  old models clearly: moderation covered the truth 21-34% of the time, the lagged null was
  rejected in 34-41%.
- Marked ``calibration`` (skipped unless ``-m calibration``): R = 1,000 with seeds
  100000-100999 (``SLOW_SEED``), with the issue's thresholds as they are: coverage in
  [0.93, 0.97], false-positive rate in [0.03, 0.07], bias within 2 MC SEs.
  ``bench/calibration.py`` runs the same study and prints the table.

Seeds were fixed before the runs. BLAS is limited to one thread (threadpoolctl): thousands of
tiny fits otherwise contend for the cores.
"""

from __future__ import annotations

import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from analysis import calibration, models, simulate
from analysis.panel import analysis_frame, panel_from_frames

SCENARIOS = {f"{sc.family}-{sc.name}": sc for sc in calibration.scenarios()}


def _run(sc: calibration.Scenario, replicates: int, seed: int) -> pd.DataFrame:
    with threadpool_limits(limits=1):
        tab = calibration.run(sc, replicates, seed)
    assert (tab["failed"] == 0).all(), f"{sc.family}/{sc.name}: some replicates not fittable"
    assert (tab["replicates"] == replicates).all()
    return tab


def _describe(row: pd.Series) -> str:
    return (
        f"{row['family']}/{row['scenario']}/{row['role']}: truth {row['truth']:.4g}, bias "
        f"{row['bias']:.4g} (MC SE {row['mc_se']:.4g}), coverage {row['coverage']:.3f} "
        f"[{row['coverage_ci_lower']:.3f}, {row['coverage_ci_upper']:.3f}], rejection "
        f"{row['rejection']:.3f}"
    )


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_calibrated_in_200_simulated_studies(key):
    tab = _run(SCENARIOS[key], calibration.SUITE_REPLICATES, calibration.SUITE_SEED)
    print("\n".join(_describe(row) for _, row in tab.iterrows()))  # the figures, with -rP
    for _, row in tab.iterrows():
        what = _describe(row)
        assert abs(row["bias"]) <= calibration.MAX_BIAS_MCSE * row["mc_se"], what
        # exact binomial interval of the coverage must contain the nominal 0.95 (see above);
        # where the truth is 0 this is the false-positive rate's interval containing 0.05
        assert row["coverage_ci_lower"] <= 0.95 <= row["coverage_ci_upper"], what


@pytest.mark.calibration
@pytest.mark.parametrize("key", list(SCENARIOS))
def test_calibrated_in_1000_simulated_studies(key):
    tab = _run(SCENARIOS[key], calibration.SLOW_REPLICATES, calibration.SLOW_SEED)
    ok = calibration.meets_criteria(tab)
    failing = [_describe(row) for (_, row), good in zip(tab.iterrows(), ok, strict=True)]
    assert ok.all(), "; ".join(f for f, good in zip(failing, ok, strict=True) if not good)


def test_criteria_refuse_the_old_moderation_and_lagged_figures():
    """The checks above would have caught the bugs the issue found (its measured figures)."""
    old = pd.DataFrame(
        {
            "truth": [0.40, 0.0, 0.0],  # moderation within, interaction; lagged effect
            "bias": [0.30, 0.0, 0.0],
            "mc_se": [0.01, 0.01, 0.01],
            "coverage": [0.30, 0.85, 0.62],
            "rejection": [1.0, 0.15, 0.38],
        }
    )
    assert not calibration.meets_criteria(old).any()


def test_moderation_and_lagged_on_the_issues_design():
    """One study of the issue's design (300 people x 12 waves, simulator defaults): the
    moderation within effect was 0.69-0.70 (truth 0.40), the lagged effect "significant" in
    34-41% of such studies (this seed: 0.72, SE 0.10, without the access-loss terms). Now the
    within effect is within 2 SEs of the truth and neither null effect is "significant"."""
    sp = simulate.simulate_panel(300, 12, seed=19)
    frame = analysis_frame(panel_from_frames(sp))
    truth = simulate.DEFAULT_EFFECTS["who5"].within
    mod = models.fit_moderation(frame, "who5", "ai_dependence")
    assert "loss_post" in mod.result.fe.index
    within = mod.term("within")
    assert abs(within["estimate"] - truth) < 2 * within["se"], within["estimate"]
    assert abs(mod.term("interaction")["t"]) < 1.96
    lag = models.fit_lagged(frame, "who5")
    assert {"loss_post", "loss_since", "hours_4o_within"} <= set(lag.result.fe.index)
    assert abs(lag.term("lagged")["t"]) < 1.96
