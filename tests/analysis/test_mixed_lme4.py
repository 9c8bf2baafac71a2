"""analysis.mixed against R: lme4 1.1-31 + lmerTest 3.1-3 on lme4's sleepstudy data.

The reference numbers are read from tests/analysis/reference/sleepstudy-lme4.txt (a copy of
../shared/reference), the printed output of R 4.2.2 (summary tables from lmerTest, VarCorr from
lme4, logLik) described in that directory's README.md. Tolerances: fixed effects and
log-likelihood 1e-4 relative; standard errors, variance components and Satterthwaite df 1e-3
relative (lme4's and lmerTest's own optimizer and numerical-derivative tolerances are of order
1e-5).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import mixed

REF_DIR = Path(__file__).resolve().parent / "reference"  # copied from ../shared/reference
REF_TXT = REF_DIR / "sleepstudy-lme4.txt"
DATA = REF_DIR / "sleepstudy.csv"



def parse_reference(text: str) -> dict[str, dict]:
    """Parse the three model sections of sleepstudy-lme4.txt."""
    out = {}
    for block in text.split("## ")[1:]:
        title = block.splitlines()[0].strip()
        fe = {}
        for m in re.finditer(
            r"^(\(Intercept\)|Days)\s+([-\d.e+]+)\s+([-\d.e+]+)\s+([-\d.e+]+)", block, re.M
        ):
            fe[m.group(1)] = tuple(float(m.group(i)) for i in (2, 3, 4))
        vc = {}
        for m in re.finditer(
            r"^\d+\s+(Subject|Residual)\s+(\S+)\s+(\S+)\s+([-\d.e+]+)\s+([-\d.e+]+)", block, re.M
        ):
            vc[(m.group(1), m.group(2), m.group(3))] = float(m.group(4))
        loglik = float(re.search(r"logLik:\s+([-\d.]+)", block).group(1))
        reml = "REML: TRUE" in block
        random = "~ Days" if "(Days | Subject)" in block else "~ 1"
        out[title] = {"fe": fe, "vc": vc, "loglik": loglik, "reml": reml, "random": random}
    return out


REFS = parse_reference(REF_TXT.read_text()) if REF_TXT.exists() else {}


def test_reference_file_has_three_models():
    assert len(REFS) == 3
    assert sum(r["random"] == "~ Days" for r in REFS.values()) == 2


@pytest.fixture(scope="module")
def sleep() -> pd.DataFrame:
    return pd.read_csv(DATA)


@pytest.mark.parametrize("title", sorted(REFS))
def test_matches_lme4(sleep, title):
    ref = REFS[title]
    res = mixed.fit(sleep, "Reaction ~ Days", "Subject", random=ref["random"], reml=ref["reml"])
    assert res.engine == "profiled" and res.converged and not res.singular
    names = {"(Intercept)": "Intercept", "Days": "Days"}
    for rname, (est, se, df) in ref["fe"].items():
        ours = names[rname]
        assert res.fe[ours] == pytest.approx(est, rel=1e-4)
        assert res.se[ours] == pytest.approx(se, rel=1e-3)
        assert res.df[ours] == pytest.approx(df, rel=1e-3)
    assert res.loglik == pytest.approx(ref["loglik"], rel=1e-4)
    # Our optimum is at least as good as lme4's (to its printed precision).
    assert res.loglik >= ref["loglik"] - 1e-5
    vc = ref["vc"]
    assert res.sigma2 == pytest.approx(vc[("Residual", "<NA>", "<NA>")], rel=1e-3)
    assert res.cov_re.loc["Intercept", "Intercept"] == pytest.approx(
        vc[("Subject", "(Intercept)", "<NA>")], rel=1e-3
    )
    if ref["random"] == "~ Days":
        assert res.cov_re.loc["Days", "Days"] == pytest.approx(
            vc[("Subject", "Days", "<NA>")], rel=1e-3
        )
        # covariance: relative to the product of SDs (the correlation scale), it is tiny
        scale = np.sqrt(res.cov_re.loc["Intercept", "Intercept"] * res.cov_re.loc["Days", "Days"])
        assert abs(res.cov_re.loc["Intercept", "Days"] - vc[("Subject", "(Intercept)", "Days")]) < (
            1e-3 * scale
        )


def test_satterthwaite_p_values_match_lmertest(sleep):
    ref = REFS["random intercept only, REML"]
    res = mixed.fit(sleep, "Reaction ~ Days", "Subject", random="~ 1", reml=True)
    # lmerTest: Pr(>|t|) 2.241351e-18 and 6.412601e-27
    assert res.p["Intercept"] == pytest.approx(2.241351e-18, rel=2e-3)
    assert res.p["Days"] == pytest.approx(6.412601e-27, rel=2e-3)
    assert res.df["Days"] == pytest.approx(ref["fe"]["Days"][2], rel=1e-4)  # 161 = N - groups - 1


def test_published_lme4_paper_values(sleep):
    """Bates et al. (2015), J. Stat. Softw. 67(1): 251.405, 10.467, SDs 24.74, 5.92, corr 0.07,
    residual SD 25.59."""
    res = mixed.fit(sleep, "Reaction ~ Days", "Subject", random="~ Days")
    assert round(res.fe["Intercept"], 3) == 251.405
    assert round(res.fe["Days"], 3) == 10.467
    assert round(res.sd_re["Intercept"], 2) == 24.74
    assert round(res.sd_re["Days"], 2) == 5.92
    assert round(res.corr_re.loc["Intercept", "Days"], 2) == 0.07
    assert round(np.sqrt(res.sigma2), 2) == 25.59
