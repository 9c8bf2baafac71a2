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
# # Primary models: does continued GPT-4o use go with harm or benefit?
#
# Growth per outcome, then the confirmatory within-between model (within-person effect of
# GPT-4o hours, Benjamini-Hochberg across outcomes), the lagged model and moderation.
# Panel from `$WELLPANEL_PANEL` (simulated if unset), figures to `$WELLPANEL_FIGURES`.

# %%
import sys
from pathlib import Path

try:
    import analysis  # noqa: F401
except ModuleNotFoundError:  # a source checkout that is not installed: find the project root
    root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "analysis").is_dir())
    sys.path.insert(0, str(root))

import pandas as pd

from analysis import models, notebook_env, plots, spec
from analysis.multiplicity import benjamini_hochberg
from analysis.panel import analysis_frame, load_panel

PANEL_DIR = notebook_env.panel_dir()
FIG_DIR = notebook_env.figure_dir()
panel = load_panel(PANEL_DIR)
frame = analysis_frame(panel)
outcomes = [o for o in spec.CONFIRMATORY_OUTCOMES if o in panel.outcomes]
cols = ["outcome", "term", "estimate", "ci_lower", "ci_upper", "p", "std_estimate"]

# %% [markdown]
# ## Growth: change per week since enrollment

# %%
growth = {y: models.fit_growth(frame, y) for y in outcomes}
print(pd.concat([g.table for g in growth.values()])[cols].round(4).to_string(index=False))
primary = outcomes[0]
plots.save(
    plots.trajectories(frame, primary, growth[primary]), FIG_DIR / f"trajectories_{primary}.png"
)

# %% [markdown]
# ## Confirmatory: within-person effect of GPT-4o hours (BH across outcomes)

# %%
wb = {y: models.fit_within_between(frame, y) for y in outcomes}
conf = pd.concat([f.table[f.table["role"] == "within"] for f in wb.values()], ignore_index=True)
conf["p_bh"] = benjamini_hochberg(conf["p"])
print(conf[[*cols, "p_bh"]].round(4).to_string(index=False))
for y, f in wb.items():
    for w in f.warnings:
        print(f"{y}: {w}")
plots.save(plots.forest(conf), FIG_DIR / "forest_within.png")
plots.save(plots.within_effect(frame, wb[primary]), FIG_DIR / f"within_{primary}.png")
plots.save(plots.diagnostics(wb[primary]), FIG_DIR / f"diagnostics_{primary}.png")

# %% [markdown]
# ## Between-person associations and the lagged model (exploratory)

# %%
between = pd.concat([f.table[f.table["role"] == "between"] for f in wb.values()])
print(between[cols].round(4).to_string(index=False))
lagged = pd.concat([models.fit_lagged(frame, y).table for y in outcomes])
print(lagged[lagged["role"] == "lagged"][cols].round(4).to_string(index=False))

# %% [markdown]
# ## Moderation by AI dependence and companion framing

# %%
for mod in ("ai_dependence", "framing"):
    fit = models.fit_moderation(frame, primary, mod)
    print(mod, fit.term("interaction")[["estimate", "ci_lower", "ci_upper", "p"]].to_dict())
