"""Self-contained HTML report and results.json for a panel.

``build_report(panel_dir, out_dir)`` loads and validates the panel, runs the standard analysis
(:mod:`analysis.pipeline`), draws the figures (:mod:`analysis.plots`) and writes
``report.html`` (figures embedded as base64 PNG, no external files) and ``results.json``.
A tqdm progress bar shows the model fits on the terminal.
"""

from __future__ import annotations

import html
import json
import math
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis import models, plots, quality, spec
from analysis.panel import load_panel
from analysis.pipeline import AnalysisResults, run_analysis

REPORT_FILE = "report.html"
RESULTS_FILE = "results.json"


@dataclass
class ReportPaths:
    html: Path
    results: Path


def build_report(
    panel_dir: str | Path,
    out_dir: str | Path,
    outcomes: Iterable[str] | None = None,
    predictor: str = "hours_4o",
    progress: bool = True,
) -> ReportPaths:
    """Analyse the panel in ``panel_dir`` and write the report into ``out_dir``."""
    panel = load_panel(panel_dir)
    bar: tqdm | None = None

    def on_plan(n: int) -> None:  # the bar starts once the data are known to be usable
        nonlocal bar
        bar = tqdm(
            total=n + 1,
            desc="wellpanel analyze",
            unit="model",
            disable=not progress,
            dynamic_ncols=True,
        )

    def step(label: str) -> None:
        if bar is not None:
            bar.set_postfix_str(label[:40])
            bar.update(1)

    try:
        res = run_analysis(panel, list(outcomes) if outcomes else None, predictor, step, on_plan)
        step("figures and report")
        html_text = render_html(res)
    finally:
        if bar is not None:
            bar.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path = out / REPORT_FILE
    html_path.write_text(html_text, "utf-8")
    res_path = out / RESULTS_FILE
    res_path.write_text(json.dumps(clean_json(res.to_json()), indent=1, allow_nan=False), "utf-8")
    return ReportPaths(html_path, res_path)


def clean_json(o: Any) -> Any:
    """NaN/inf -> null, numpy scalars -> Python, tuples -> lists (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): clean_json(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [clean_json(v) for v in o]
    if isinstance(o, np.bool_ | bool):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, float | np.floating):
        f = float(o)
        return f if math.isfinite(f) else None
    if o is pd.NA or o is None:
        return None
    return o


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1050px;
margin:2em auto;padding:0 1em;color:#1d2733;line-height:1.45}
h1{font-size:1.6em} h2{border-bottom:2px solid #1f5f8b;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0} th,td{padding:.25em .6em;
border-bottom:1px solid #dde3ea;text-align:right} th{background:#f1f4f8}
td:first-child,th:first-child,td.l{text-align:left} .warn{background:#fff4e5;border-left:4px solid
#e67e22;padding:.5em 1em;font-size:.9em} .note{color:#56606b;font-size:.9em}
img{max-width:100%} .grid{display:flex;flex-wrap:wrap;gap:1em}
code{background:#f1f4f8;padding:0 .2em}
"""


def _img(fig: Any, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{plots.to_base64_png(fig)}">'


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        if not math.isfinite(v):
            return ""
        a = abs(v)
        if a != 0 and (a < 1e-3 or a >= 1e5):
            return f"{v:.2e}"
        return f"{v:.3f}" if a < 100 else f"{v:.1f}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    if df is None or df.empty:
        return '<p class="note">No estimates.</p>'
    d = df[columns] if columns else df
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in d.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>"
        for r in d.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


EST_COLS = [
    "outcome",
    "term",
    "estimate",
    "ci_lower",
    "ci_upper",
    "p",
    "std_estimate",
    "df",
    "n_obs",
    "n_participants",
]


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _overview(res: AnalysisResults) -> str:
    meta = res.panel.meta
    study = meta.get("study", {})
    q = res.quality
    items = [
        (
            "Study",
            f"{study.get('title', '')} ({study.get('key', '')}, protocol "
            f"{study.get('protocol_version', '')})",
        ),
        ("Export", f"{meta.get('generated_by', '')}, profile {meta.get('export_profile', '')}"),
        (
            "Participants",
            f"{q['n_participants']} ({', '.join(f'{k}: {v}' for k, v in q['status'].items())})",
        ),
        (
            "Answered waves",
            f"{q['n_rows']} (median {q['median_waves_answered']:.0f} per participant, "
            f"{q['n_waves']} waves)",
        ),
        ("Outcomes analysed", ", ".join(res.outcomes)),
        ("Usage predictor", f"{res.predictor} (hours per week)"),
        ("Reported access losses", str(q["n_access_loss"])),
    ]
    rows = "".join(f"<tr><th>{k}</th><td class='l'>{html.escape(v)}</td></tr>" for k, v in items)
    sim = meta.get("simulation")
    note = ""
    if sim:
        note = (
            '<p class="warn">This panel is <b>simulated</b> (seed '
            f"{sim.get('seed')}); true effects are recorded in results.json.</p>"
        )
    return f"<table>{rows}</table>{note}"


def _quality_section(res: AnalysisResults) -> str:
    comp = quality.compliance_by_wave(res.panel)
    parts = [
        _img(plots.compliance(comp), "compliance and retention by wave"),
        _table(comp),
        "<h3>Missing scores</h3>",
        _table(quality.missingness_by_outcome(res.panel)),
        "<h3>Distributions</h3>",
        _img(plots.distributions(res.panel.wide, res.outcomes), "histograms"),
        _table(quality.describe_outcomes(res.panel)),
    ]
    if res.panel.warnings:
        parts.append(
            '<p class="warn">' + "<br>".join(map(html.escape, res.panel.warnings)) + "</p>"
        )
    return "".join(parts)


def _primary_section(res: AnalysisResults) -> str:
    conf = res.confirmatory
    parts = [
        "<p>Confirmatory family: the <b>within-person</b> effect of "
        f"<code>{res.predictor}</code> (a participant's hours in a given wave minus their own "
        "average) on each outcome, from the within-between model with random intercept, time "
        "and usage slopes. p-values are Satterthwaite (lmerTest method); <code>p_bh</code> are "
        "Benjamini-Hochberg adjusted across the outcomes. Standardized effects: SD of the "
        "outcome per SD of within-person usage.</p>",
    ]
    if not conf.empty:
        parts.append(_table(conf, [*EST_COLS[:6], "p_bh", *EST_COLS[6:]]))
        parts.append(_img(plots.forest(conf), "forest plot"))
    parts.append("<h3>Between-person associations (exploratory)</h3>")
    parts.append(_table(res.table("within_between", role="between"), EST_COLS))
    figs = []
    for (_, y, _), fit in res.family("within_between").items():
        figs.append(_img(plots.within_effect(res.frame, fit, res.predictor), f"within {y}"))
    parts.append('<h3>Within-person effect plots</h3><div class="grid">' + "".join(figs) + "</div>")
    return "".join(parts)


def _growth_section(res: AnalysisResults) -> str:
    parts = [_table(res.table("growth", role="time"), EST_COLS)]
    parts.append('<p class="note">Estimate = average change per week since enrollment.</p>')
    parts.append("<h3>Individual trajectories</h3>")
    figs = []
    for (_, y, _), fit in res.family("growth").items():
        figs.append(_img(plots.trajectories(res.frame, y, fit), f"trajectories {y}"))
    parts.append('<div class="grid">' + "".join(figs) + "</div>")
    return "".join(parts)


def _lagged_section(res: AnalysisResults) -> str:
    return (
        "<p>Usage in the previous wave (relative to the person's mean) predicting the outcome, "
        "controlling for this wave's usage, the previous outcome and access loss.</p>"
        + _table(res.table("lagged", role="lagged"), EST_COLS)
    )


def _event_section(res: AnalysisResults) -> str:
    parts = []
    its = res.table("event_its")
    if not its.empty:
        keep = its[its["role"].isin(["level_change", "slope_change", "pre_slope"])]
        parts.append(_table(keep, ["variant", "role", *EST_COLS]))
        notes = [
            f"{k[1]} ({k[2]}): {n}"
            for k, f in res.family("event_its").items()
            for n in f.notes
            if n.startswith("post-event")
        ]
        parts.append('<p class="note">' + "<br>".join(map(html.escape, notes)) + "</p>")
    figs = []
    for key, es in res.event_studies.items():
        its_fit = res.fits.get(("event_its", key[1], key[2]))
        figs.append(_img(plots.event_study(es, its_fit), f"event study {key[1]}"))
    if figs:
        parts.append('<div class="grid">' + "".join(figs) + "</div>")
    if not parts:
        parts.append('<p class="note">No event could be analysed (see skipped models).</p>')
    return "".join(parts)


def _moderation_section(res: AnalysisResults) -> str:
    return (
        "<p>Does the within-person effect differ by the person's average AI dependence or "
        "companion framing? (interaction terms)</p>"
        + _table(res.table("moderation", role="interaction"), ["variant", *EST_COLS])
    )


def _diagnostics_section(res: AnalysisResults) -> str:
    rows = []
    for (fam, y, var), fit in res.fits.items():
        r = fit.result
        rows.append(
            {
                "model": fam,
                "outcome": y,
                "variant": var,
                "engine": r.engine,
                "converged": str(r.converged),
                "singular": str(r.singular),
                "n_obs": r.n_obs,
                "loglik": r.loglik,
                "warnings": len(r.warnings),
            }
        )
    parts = [_table(pd.DataFrame(rows))]
    if res.warnings:
        parts.append(
            '<div class="warn"><b>Warnings</b><br>'
            + "<br>".join(map(html.escape, res.warnings))
            + "</div>"
        )
    if res.skipped:
        parts.append(
            '<div class="warn"><b>Models not fitted</b><br>'
            + "<br>".join(
                html.escape(f"{'/'.join(k for k in key if k)}: {why}")
                for key, why in res.skipped.items()
            )
            + "</div>"
        )
    for (fam, y, _), fit in res.family("within_between").items():
        parts.append(_img(plots.diagnostics(fit), f"diagnostics {fam} {y}"))
        break  # the primary outcome's diagnostics; the rest are in results.json
    return "".join(parts)


def _methods_section() -> str:
    docs = [
        ("Growth", models.fit_growth),
        ("Within-between (primary)", models.fit_within_between),
        ("Lagged", models.fit_lagged),
        ("Interrupted time series", models.fit_event_its),
        ("Event study", models.fit_event_study),
        ("Moderation", models.fit_moderation),
    ]
    items = "".join(
        f"<h3>{html.escape(t)}</h3><pre>{html.escape((f.__doc__ or '').strip())}</pre>"
        for t, f in docs
    )
    return (
        "<p>Linear mixed models fitted by exact profiled REML from per-participant sufficient "
        "statistics (analysis.mixed), checked against lme4/lmerTest and statsmodels. "
        "95% intervals use Satterthwaite degrees of freedom.</p>" + items
    )


def render_html(res: AnalysisResults) -> str:
    sections = [
        ("Overview", _overview(res), "overview"),
        ("Data quality: compliance, attrition, distributions", _quality_section(res), "quality"),
        ("Primary results: within- and between-person effects", _primary_section(res), "primary"),
        ("Change over time", _growth_section(res), "growth"),
        ("Lagged effects", _lagged_section(res), "lagged"),
        ("Event study: loss of access", _event_section(res), "event"),
        ("Moderation", _moderation_section(res), "moderation"),
        ("Diagnostics", _diagnostics_section(res), "diagnostics"),
        ("Methods", _methods_section(), "methods"),
    ]
    toc = "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for t, _, a in sections)
    body = "".join(_section(t, b, a) for t, b, a in sections)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = html.escape(res.panel.meta.get("study", {}).get("title", "wellpanel"))
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}: "
        f"wellpanel report</title><style>{CSS}</style></head><body><h1>{title}</h1>"
        f"<p class='note'>wellpanel analysis report, {stamp}; Python {platform.python_version()}"
        f", panel format {spec.FORMAT_VERSION}</p><nav><ol>{toc}</ol></nav>{body}</body></html>"
    )
