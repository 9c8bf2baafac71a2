"""Figures for the report and notebooks (matplotlib, Agg backend: no display needed).

Every function returns a ``matplotlib.figure.Figure``; :func:`save` writes it to a file and
:func:`to_base64_png` embeds it in HTML.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402

from analysis import spec  # noqa: E402
from analysis.models.common import ModelFit  # noqa: E402
from analysis.models.event import EventStudy  # noqa: E402

COLORS = {"main": "#1f5f8b", "accent": "#c0392b", "muted": "#9aa5b1"}


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return p


def to_base64_png(fig: Figure, dpi: int = 100) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _label(outcome: str) -> str:
    inst = spec.INSTRUMENTS.get(outcome)
    return inst.title if inst else outcome


def compliance(comp: pd.DataFrame) -> Figure:
    """Compliance (answered / enrolled) and retention per wave."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar(comp["wave"], comp["compliance"], color=COLORS["muted"], label="answered this wave")
    ax.plot(comp["wave"], comp["retention"], "o-", color=COLORS["main"], label="still in study")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("wave (about 2 weeks apart)")
    ax.set_ylabel("share of participants")
    ax.set_title("Compliance and retention")
    ax.legend(frameon=False, loc="lower left")
    return fig


def distributions(wide: pd.DataFrame, outcomes: Sequence[str]) -> Figure:
    """Histograms of outcomes and of GPT-4o hours over answered waves."""
    cols = [*outcomes, "hours_4o"]
    ncol = 3
    nrow = int(np.ceil(len(cols) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(9, 2.4 * nrow), squeeze=False)
    for ax, c in zip(axes.ravel(), cols, strict=False):
        x = wide[c].dropna().astype(float)
        ax.hist(x, bins=25, color=COLORS["main"], alpha=0.85)
        ax.set_title(c if c == "hours_4o" else _label(c), fontsize=9)
    for ax in axes.ravel()[len(cols) :]:
        ax.axis("off")
    fig.suptitle("Distributions over answered waves", fontsize=11)
    fig.tight_layout()
    return fig


def trajectories(
    frame: pd.DataFrame, outcome: str, fit: ModelFit | None = None, n: int = 16, seed: int = 0
) -> Figure:
    """Individual trajectories of a sample of participants, with the model's average line."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    obs = frame[frame[outcome].notna()]
    pids = obs["pid"].unique()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(pids, size=min(n, len(pids)), replace=False)
    for pid in chosen:
        d = obs[obs["pid"] == pid].sort_values("time")
        ax.plot(d["time"], d[outcome], "-", color=COLORS["muted"], lw=0.9, alpha=0.8)
        ax.plot(d["time"], d[outcome], ".", color=COLORS["muted"], ms=3)
    if fit is not None:
        t = np.linspace(obs["time"].min(), obs["time"].max(), 50)
        fe = fit.result.fe
        ax.plot(
            t,
            fe["Intercept"] + fe["time"] * t,
            color=COLORS["accent"],
            lw=2.5,
            label="average trajectory (growth model)",
        )
        ax.legend(frameon=False)
    ax.set_xlabel("weeks since enrollment")
    ax.set_ylabel(_label(outcome))
    ax.set_title(f"Individual trajectories ({len(chosen)} of {len(pids)} participants)")
    return fig


def within_effect(frame: pd.DataFrame, fit: ModelFit, predictor: str = "hours_4o") -> Figure:
    """Within-person association: person-centered outcome against person-centered usage,
    with the model's within-person slope and its 95% interval."""
    outcome = fit.outcome
    xw = f"{predictor}_within"
    d = frame[[outcome, xw, "pid"]].dropna()
    yc = d[outcome] - d.groupby("pid")[outcome].transform("mean")
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.scatter(d[xw], yc, s=6, alpha=0.25, color=COLORS["muted"], lw=0)
    row = fit.term("within")
    x = np.linspace(np.nanpercentile(d[xw], 1), np.nanpercentile(d[xw], 99), 50)
    ax.plot(
        x,
        row["estimate"] * x,
        color=COLORS["accent"],
        lw=2.2,
        label=f"within slope {row['estimate']:.3g} [{row['ci_lower']:.3g}, {row['ci_upper']:.3g}]",
    )
    ax.fill_between(x, row["ci_lower"] * x, row["ci_upper"] * x, color=COLORS["accent"], alpha=0.2)
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(f"{predictor} minus the person's mean (hours/week)")
    ax.set_ylabel(f"{outcome} minus the person's mean")
    ax.set_title(f"Within-person: {_label(outcome)}", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    return fig


def forest(table: pd.DataFrame, title: str = "Within-person effect of GPT-4o hours") -> Figure:
    """Standardized estimates with 95% intervals, one row per outcome (BH-adjusted p shown)."""
    t = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6.5, 0.55 * len(t) + 1.4))
    y = np.arange(len(t))[::-1]
    ax.errorbar(
        t["std_estimate"],
        y,
        xerr=[t["std_estimate"] - t["std_ci_lower"], t["std_ci_upper"] - t["std_estimate"]],
        fmt="o",
        color=COLORS["main"],
        capsize=3,
    )
    ax.axvline(0, color="k", lw=0.8)
    labels = []
    for _, r in t.iterrows():
        padj = r.get("p_bh", np.nan)
        labels.append(f"{r['outcome']}  (p_BH={padj:.3g})" if np.isfinite(padj) else r["outcome"])
    ax.set_yticks(y, labels)
    ax.set_xlabel("standardized effect (SD of outcome per SD of within-person usage)")
    ax.set_title(title, fontsize=10)
    return fig


def event_study(es: EventStudy, its: ModelFit | None = None) -> Figure:
    """Event-study curve: outcome by event-time bin relative to the bin before the event."""
    c = es.curve
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.errorbar(
        c["week_mid"],
        c["estimate"],
        yerr=[c["estimate"] - c["ci_lower"], c["ci_upper"] - c["estimate"]],
        fmt="o",
        color=COLORS["main"],
        capsize=3,
        label="bin estimate, 95% CI",
    )
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(0, color=COLORS["accent"], ls="--", lw=1.2, label="event (week 0)")
    if its is not None:
        fe = its.result.fe
        et, post, since = (
            its.roles["pre_slope"],
            its.roles["level_change"],
            its.roles["slope_change"],
        )
        ref_mid = (es.reference + 0.5) * es.bin_weeks
        base = fe["Intercept"] + fe[et] * ref_mid
        pre = np.linspace(c["week_mid"].min(), 0, 20)
        postt = np.linspace(0, c["week_mid"].max(), 20)
        ax.plot(pre, fe["Intercept"] + fe[et] * pre - base, color=COLORS["accent"], lw=1.5)
        ax.plot(
            postt,
            fe["Intercept"] + fe[et] * postt + fe[post] + fe[since] * postt - base,
            color=COLORS["accent"],
            lw=1.5,
            label="interrupted time series fit",
        )
    event = "access loss" if es.event == "access_loss" else es.event.replace("_", " ")
    ax.set_xlabel(f"weeks from {event}")
    ax.set_ylabel(f"{es.fit.outcome}: difference from the week before")
    ax.set_title(f"Event study: {_label(es.fit.outcome)} around {event}", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return fig


def diagnostics(fit: ModelFit) -> Figure:
    """Residuals against fitted values, residual Q-Q plot and random-intercept Q-Q plot."""
    res = fit.result
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    if res.fitted is not None and res.residuals is not None:
        axes[0].scatter(res.fitted, res.residuals, s=5, alpha=0.3, color=COLORS["main"], lw=0)
        axes[0].axhline(0, color="k", lw=0.8)
        axes[0].set_xlabel("fitted")
        axes[0].set_ylabel("residual")
        stats.probplot(res.residuals, plot=axes[1])
        axes[1].set_title("residuals Q-Q", fontsize=9)
    if res.random_effects is not None:
        stats.probplot(res.random_effects.iloc[:, 0], plot=axes[2])
        axes[2].set_title("random intercepts Q-Q", fontsize=9)
    for ax in axes[1:]:
        for line in ax.get_lines():
            line.set_markersize(3)
    fig.suptitle(f"Diagnostics: {fit.family} model for {fit.outcome}", fontsize=10)
    fig.tight_layout()
    return fig


def power_curve(df: pd.DataFrame, alpha: float = 0.05, target: float = 0.8) -> Figure:
    """Estimated power (with 95% Monte-Carlo interval) against the number of participants."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.fill_between(
        df["n_participants"], df["ci_lower"], df["ci_upper"], color=COLORS["main"], alpha=0.2, lw=0
    )
    ax.plot(df["n_participants"], df["power"], "o-", color=COLORS["main"])
    ax.axhline(target, color=COLORS["accent"], ls="--", lw=1, label=f"{target:.0%} power")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("participants")
    ax.set_ylabel("power")
    eff = df["effect_size"].iloc[0] if "effect_size" in df else float("nan")
    waves = df["n_waves"].iloc[0] if "n_waves" in df else ""
    ax.set_title(
        f"Power: within-person effect {eff:g} SD, {waves} waves, alpha {alpha:g}", fontsize=10
    )
    ax.legend(frameon=False)
    return fig
