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
# # Data quality: compliance, attrition, distributions
#
# Reads the panel Data Package in `$WELLPANEL_PANEL` (a `wellpanel export` or
# `wellpanel simulate` directory); without it, simulates a small panel. Figures go to
# `$WELLPANEL_FIGURES` (default `figures/`).

# %%
import sys
from pathlib import Path

try:
    import analysis  # noqa: F401
except ModuleNotFoundError:  # a source checkout that is not installed: find the project root
    root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "analysis").is_dir())
    sys.path.insert(0, str(root))

from analysis import notebook_env, plots, quality
from analysis.panel import load_panel

PANEL_DIR = notebook_env.panel_dir()
FIG_DIR = notebook_env.figure_dir()
panel = load_panel(PANEL_DIR)
print(panel.meta["study"], panel.profile, f"{panel.n_participants} participants")

# %% [markdown]
# ## Compliance and retention
# Compliance = share of enrolled participants who answered a wave; retention = share still
# answering at that wave or later.

# %%
comp = quality.compliance_by_wave(panel)
print(comp.to_string(index=False))
plots.save(plots.compliance(comp), FIG_DIR / "compliance.png")

# %% [markdown]
# ## Attrition by status and missing scores

# %%
print(quality.status_counts(panel))
print(quality.missingness_by_outcome(panel).to_string(index=False))
for w in panel.warnings:
    print("warning:", w)

# %% [markdown]
# ## Distributions of outcomes and usage

# %%
print(quality.describe_outcomes(panel).round(2).to_string(index=False))
plots.save(plots.distributions(panel.wide, panel.outcomes), FIG_DIR / "distributions.png")
