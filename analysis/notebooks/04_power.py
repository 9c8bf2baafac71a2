# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Power of the within-person effect, by simulation
#
# How many participants does a study need to detect a within-person effect of GPT-4o hours
# on WHO-5? Set the design below; `$WELLPANEL_POWER_SIMS` sets the panels per point
# (default 200; more gives a smoother curve). Figure to `$WELLPANEL_FIGURES`.

# %%
import os
import sys
from pathlib import Path

try:
    import analysis  # noqa: F401
except ModuleNotFoundError:  # a source checkout that is not installed: find the project root
    root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "analysis").is_dir())
    sys.path.insert(0, str(root))

from analysis import notebook_env, plots
from analysis.power import power_curve

FIG_DIR = notebook_env.figure_dir()
N_SIMS = int(os.environ.get("WELLPANEL_POWER_SIMS", "200"))
PARTICIPANTS = [40, 80, 160]
WAVES = 12
EFFECT = 0.1  # SD of WHO-5 per SD of a person's week-to-week variation in 4o hours
ATTRITION = 0.25

# %% [markdown]
# ## The power curve
# Each point: the share of simulated panels whose within-person effect is significant at
# 5%, with a Wilson 95% interval for the Monte-Carlo error.

# %%
curve = power_curve(PARTICIPANTS, WAVES, EFFECT, ATTRITION, n_sims=N_SIMS, seed=7)
print(curve[["n_participants", "power", "ci_lower", "ci_upper", "beta_within"]].round(3))
plots.save(plots.power_curve(curve), FIG_DIR / "power_curve.png")
