"""Small charts drawn on the server as SVG, so the console needs no JavaScript.

Each function returns one self-contained ``<svg>`` element as a string (safe to embed with
Jinja's ``|safe``): every label passes through ``escape`` and every number is formatted here,
so nothing a participant or a study file typed can break out of the markup. Marks carry a
class (``bar``, ``point``, ``cell``) and a ``<title>`` for a hover tooltip and screen readers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

SVG_NS = "http://www.w3.org/2000/svg"
PALETTE = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#4a5568")
MISSING_FILL = "#e2e8f0"


def _n(value: float) -> str:
    """A coordinate: short and locale-independent."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _open(width: float, height: float, title: str, desc: str, css_class: str) -> list[str]:
    return [
        f'<svg xmlns="{SVG_NS}" class="chart {css_class}" width="{_n(width)}" '
        f'height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(desc)}</desc>",
    ]


def _label(value: float, fmt: str) -> str:
    return format(value, fmt)


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, value_format: str = ",.0f",
              width: int = 560, bar_height: int = 22, label_width: int = 150) -> str:
    """Horizontal bars, one per (label, value), scaled to the largest value."""
    gap, top = 6, 8
    height = top * 2 + len(items) * (bar_height + gap)
    biggest = max((v for _, v in items), default=0) or 1
    room = width - label_width - 70
    desc = "; ".join(f"{label}: {_label(v, value_format)}" for label, v in items) or "no data"
    out = _open(width, max(height, 30), title, desc, "bars")
    for i, (label, value) in enumerate(items):
        y = top + i * (bar_height + gap)
        length = max(0.0, value) / biggest * room
        text = f"{label}: {_label(value, value_format)}"
        out.append(
            f'<text x="{_n(label_width - 6)}" y="{_n(y + bar_height * 0.7)}" '
            f'text-anchor="end">{escape(label)}</text>'
            f'<rect class="bar" x="{label_width}" y="{_n(y)}" width="{_n(length)}" '
            f'height="{bar_height}" fill="{PALETTE[0]}"><title>{escape(text)}</title></rect>'
            f'<text x="{_n(label_width + length + 4)}" y="{_n(y + bar_height * 0.7)}">'
            f"{escape(_label(value, value_format))}</text>")
    out.append("</svg>")
    return "".join(out)


def line_chart(x_labels: Sequence[str], series: Mapping[str, Sequence[float | None]], *,
               title: str, y_max: float = 1.0, value_format: str = ".0%",
               width: int = 560, height: int = 240) -> str:
    """Lines over shared x labels; None leaves a gap. One point mark per known value."""
    left, right, top, bottom = 44, 12, 10, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(x_labels)
    step = plot_w / (n - 1) if n > 1 else 0.0
    y_max = y_max or 1.0

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (i * step if n > 1 else plot_w / 2)
        return x, top + plot_h - min(max(v, 0.0), y_max) / y_max * plot_h

    desc = "; ".join(
        f"{name}: " + ", ".join(f"{x_labels[i]} {_label(v, value_format)}"
                                for i, v in enumerate(values) if v is not None)
        for name, values in series.items()) or "no data"
    out = _open(width, height, title, desc, "lines")
    for frac in (0.0, 0.5, 1.0):  # y axis: 0, half, max
        y = top + plot_h - frac * plot_h
        out.append(f'<line class="grid" x1="{left}" x2="{_n(left + plot_w)}" y1="{_n(y)}" '
                   f'y2="{_n(y)}" stroke="#cbd5e0"/>'
                   f'<text x="{left - 4}" y="{_n(y + 4)}" text-anchor="end">'
                   f"{escape(_label(frac * y_max, value_format))}</text>")
    every = max(1, n // 8)  # at most ~8 x labels
    for i, label in enumerate(x_labels):
        if i % every == 0 or i == n - 1:
            x, _ = xy(i, 0)
            out.append(f'<text x="{_n(x)}" y="{_n(top + plot_h + 16)}" '
                       f'text-anchor="middle">{escape(label)}</text>')
    for k, (name, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        for run in _runs(values):
            points = " ".join(f"{_n(x)},{_n(y)}" for x, y in (xy(i, values[i]) for i in run))  # type: ignore[arg-type]
            out.append(f'<polyline class="line" fill="none" stroke="{colour}" '
                       f'stroke-width="2" points="{points}"/>')
        for i, v in enumerate(values):
            if v is None:
                continue
            x, y = xy(i, v)
            tip = f"{name}, {x_labels[i]}: {_label(v, value_format)}"
            out.append(f'<circle class="point" cx="{_n(x)}" cy="{_n(y)}" r="3.5" '
                       f'fill="{colour}"><title>{escape(tip)}</title></circle>')
    legend_y = height - 10
    for k, name in enumerate(series):
        x = left + k * 130
        out.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" '
                   f'fill="{PALETTE[k % len(PALETTE)]}"/>'
                   f'<text x="{x + 14}" y="{legend_y}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def trend_chart(x_labels: Sequence[str], values: Sequence[float | None], *, title: str,
                y_min: float, y_max: float, value_format: str = ".0f", width: int = 360,
                height: int = 200) -> str:
    """One score over time on its whole possible range (y_min..y_max), for a participant's page.

    Scales with its container (viewBox; the page's CSS sets the width), so it fits a phone. No
    legend: the heading names the score and a table beside it lists every value. None (not
    scored) leaves a gap.
    """
    left, right, top, bottom = 34, 14, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(x_labels)
    span = (y_max - y_min) or 1.0

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (i * plot_w / (n - 1) if n > 1 else plot_w / 2)
        return x, top + plot_h - (min(max(v, y_min), y_max) - y_min) / span * plot_h

    desc = "; ".join(f"{label}: {_label(v, value_format) if v is not None else '-'}"
                     for label, v in zip(x_labels, values, strict=True)) or "no data"
    out = _open(width, height, title, desc, "trend")
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h - frac * plot_h
        out.append(f'<line class="grid" x1="{left}" x2="{_n(left + plot_w)}" y1="{_n(y)}" '
                   f'y2="{_n(y)}" stroke="#cbd5e0"/>'
                   f'<text x="{left - 4}" y="{_n(y + 4)}" text-anchor="end" font-size="11">'
                   f"{escape(_label(y_min + frac * span, value_format))}</text>")
    every = max(1, -(-n // 5))  # at most ~5 x labels fit a phone
    for i, label in enumerate(x_labels):
        if i % every == 0 or i == n - 1:
            x, _ = xy(i, y_min)
            out.append(f'<text x="{_n(x)}" y="{_n(top + plot_h + 18)}" text-anchor="middle" '
                       f'font-size="11">{escape(label)}</text>')
    for run in _runs(values):
        points = " ".join(f"{_n(x)},{_n(y)}" for x, y in (xy(i, values[i]) for i in run))  # type: ignore[arg-type]
        out.append(f'<polyline class="line" fill="none" stroke="{PALETTE[0]}" '
                   f'stroke-width="2" points="{points}"/>')
    for i, v in enumerate(values):
        if v is not None:
            x, y = xy(i, v)
            out.append(f'<circle class="point" cx="{_n(x)}" cy="{_n(y)}" r="4" '
                       f'fill="{PALETTE[0]}"><title>{escape(x_labels[i])}: '
                       f"{escape(_label(v, value_format))}</title></circle>")
    out.append("</svg>")
    return "".join(out)


def _runs(values: Sequence[float | None]) -> list[list[int]]:
    """Index runs of known values: a line never bridges a gap."""
    runs: list[list[int]] = []
    current: list[int] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(i)
    if current:
        runs.append(current)
    return runs


def heat_map(row_labels: Sequence[str], col_labels: Sequence[str],
             cells: Sequence[Sequence[float | str | None]], *, title: str,
             categories: Mapping[str, str] | None = None, value_format: str = ".0%",
             cell: int = 18, label_width: int = 130) -> str:
    """A grid of cells, one per (row, column).

    Numbers in 0..1 shade from white to blue; strings take their colour from ``categories``
    (e.g. a survey's status); None is drawn as a pale 'no data' cell, so the count of marks is
    always rows x columns.
    """
    categories = categories or {}
    top = 22
    width = label_width + len(col_labels) * cell + 10
    legend_h = 22 if categories else 0
    height = top + len(row_labels) * cell + 10 + legend_h
    out = _open(width, height, title,
                f"{len(row_labels)} rows by {len(col_labels)} columns", "heat")
    for j, label in enumerate(col_labels):
        x = label_width + j * cell + cell / 2
        out.append(f'<text x="{_n(x)}" y="{top - 6}" text-anchor="middle" '
                   f'font-size="10">{escape(label)}</text>')
    for i, row_label in enumerate(row_labels):
        y = top + i * cell
        out.append(f'<text x="{label_width - 6}" y="{_n(y + cell * 0.72)}" text-anchor="end" '
                   f'font-size="11">{escape(row_label)}</text>')
        row = cells[i] if i < len(cells) else []
        for j, col_label in enumerate(col_labels):
            value = row[j] if j < len(row) else None
            fill, shown = _cell_fill(value, categories, value_format)
            tip = f"{row_label}, {col_label}: {shown}"
            out.append(f'<rect class="cell" x="{label_width + j * cell}" y="{y}" '
                       f'width="{cell - 1}" height="{cell - 1}" fill="{fill}">'
                       f"<title>{escape(tip)}</title></rect>")
    x = label_width
    for name, colour in categories.items():
        y = height - 8
        out.append(f'<rect x="{x}" y="{y - 10}" width="10" height="10" fill="{escape(colour)}"/>'
                   f'<text x="{x + 14}" y="{y}" font-size="11">{escape(name)}</text>')
        x += 14 + 7 * len(name) + 12
    out.append("</svg>")
    return "".join(out)


def _cell_fill(value: float | str | None, categories: Mapping[str, str],
               value_format: str) -> tuple[str, str]:
    if value is None:
        return MISSING_FILL, "no data"
    if isinstance(value, str):
        return escape(categories.get(value, MISSING_FILL)), value
    share = min(max(float(value), 0.0), 1.0)
    # white (255,255,255) to the palette blue (43,108,176)
    r, g, b = (round(255 + (c - 255) * share) for c in (43, 108, 176))
    return f"#{r:02x}{g:02x}{b:02x}", _label(float(value), value_format)
