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
# # Event study: losing access to a model
#
# Around each participant's first reported access loss (event time 0 = the answer day of the
# wave that reports it): interrupted time series (level and slope change) and a binned
# event-study curve. With a research export (or a simulation with calendar), the same around
# the GPT-4o retirement from ChatGPT via `week_since_gpt4o_retirement`.

# %%
import sys
from pathlib import Path

try:
    import analysis  # noqa: F401
except ModuleNotFoundError:  # a source checkout that is not installed: find the project root
    root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "analysis").is_dir())
    sys.path.insert(0, str(root))

from analysis import models, notebook_env, plots
from analysis.panel import analysis_frame, load_panel

PANEL_DIR = notebook_env.panel_dir()
FIG_DIR = notebook_env.figure_dir()
panel = load_panel(PANEL_DIR)
frame = analysis_frame(panel)
OUTCOME = "who5" if "who5" in panel.outcomes else panel.outcomes[0]
print(f"{int(frame['had_loss'].groupby(frame['pid']).first().sum())} participants report a loss")

# %% [markdown]
# ## Interrupted time series around access loss

# %%
its = models.fit_event_its(frame, OUTCOME, "access_loss")
print(its.table[["role", "estimate", "ci_lower", "ci_upper", "p"]].round(4).to_string(index=False))
print("\n".join(its.notes + its.warnings))

# %% [markdown]
# ## Event-study curve (2-week bins, reference = the bin before the loss)

# %%
es = models.fit_event_study(frame, OUTCOME, "access_loss")
print(es.curve.round(3).to_string(index=False))
plots.save(plots.event_study(es, its), FIG_DIR / "event_study_access_loss.png")

# %% [markdown]
# ## The GPT-4o retirement (study event; research profile only)

# %%
if "gpt4o_retirement" in panel.event_keys:
    its_r = models.fit_event_its(
        frame, OUTCOME, "gpt4o_retirement", subset="used_4o_before_retirement"
    )
    print(its_r.table[["role", "estimate", "ci_lower", "ci_upper", "p"]].round(4))
    es_r = models.fit_event_study(frame, OUTCOME, "gpt4o_retirement")
    plots.save(plots.event_study(es_r, its_r), FIG_DIR / "event_study_gpt4o_retirement.png")
else:
    print("no calendar alignment in this export (strict profile)")
