"""Server-side SVG charts: valid XML, one mark per datum, every label escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from app.web.charts import bar_chart, heat_map, line_chart

NS = {"svg": "http://www.w3.org/2000/svg"}
EVIL = '<script>alert("x")</script> & "quotes"'


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on invalid XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def _marks(root: ET.Element, kind: str, css: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{{{NS['svg']}}}{kind}") if e.get("class") == css]


def test_bar_chart_has_one_bar_per_item_scaled_to_the_largest():
    root = _parse(bar_chart([("screened", 40), ("eligible", 20), ("consented", 0)],
                            title="Funnel"))
    bars = _marks(root, "rect", "bar")
    assert len(bars) == 3
    widths = [float(b.get("width")) for b in bars]  # type: ignore[arg-type]
    assert widths[0] == 2 * widths[1] and widths[2] == 0
    assert root.find("svg:title", NS).text == "Funnel"  # type: ignore[union-attr]


def test_bar_chart_of_nothing_is_still_valid():
    root = _parse(bar_chart([], title="Empty"))
    assert _marks(root, "rect", "bar") == []
    assert "no data" in root.find("svg:desc", NS).text  # type: ignore[union-attr]


def test_labels_are_escaped_everywhere():
    svgs = [
        bar_chart([(EVIL, 1)], title=EVIL),
        line_chart([EVIL, "w2"], {EVIL: [0.5, 0.7]}, title=EVIL),
        heat_map([EVIL], [EVIL], [[EVIL]], title=EVIL, categories={EVIL: "#fff"}),
    ]
    for svg in svgs:
        root = _parse(svg)
        assert "<script>" not in svg
        assert not list(root.iter("script")) and not list(root.iter(f"{{{NS['svg']}}}script"))
        texts = [e.text for e in root.iter() if e.text]
        assert any(EVIL in t for t in texts)  # the text survives, as text


def test_line_chart_marks_known_points_and_breaks_at_gaps():
    labels = ["2026-W45", "2026-W46", "2026-W47", "2026-W48"]
    root = _parse(line_chart(labels, {"all": [0.9, None, 0.5, 0.75], "phq9": [1.0, 0.8, 0.6, 0.4]},
                             title="Compliance"))
    assert len(_marks(root, "circle", "point")) == 7  # 3 + 4 known values
    lines = _marks(root, "polyline", "line")
    assert len(lines) == 3  # 'all' split in two runs by the gap, 'phq9' in one
    top_point = min(float(c.get("cy")) for c in _marks(root, "circle", "point"))  # type: ignore[arg-type]
    assert top_point == 10  # a rate of 1.0 touches the top of the plot


def test_line_chart_with_a_single_week():
    root = _parse(line_chart(["W1"], {"all": [0.3]}, title="One"))
    assert len(_marks(root, "circle", "point")) == 1


def test_heat_map_draws_rows_times_columns_cells():
    rows, cols = ["p1", "p2", "p3"], ["1", "2", "3", "4"]
    cells = [["completed", "missed", None, "open"], [1.0, 0.0, 0.5, None], ["completed"]]
    root = _parse(heat_map(rows, cols, cells, title="Waves",
                           categories={"completed": "#2f855a", "missed": "#c53030"}))
    drawn = _marks(root, "rect", "cell")
    assert len(drawn) == 12  # short rows are padded with 'no data'
    fills = [c.get("fill") for c in drawn]
    assert fills[0] == "#2f855a" and fills[1] == "#c53030"
    assert fills[4] == "#2b6cb0" and fills[5] == "#ffffff"  # 1.0 darkest, 0.0 white
    tips = [c.find("svg:title", NS).text for c in drawn]  # type: ignore[union-attr]
    assert tips[2] == "p1, 3: no data" and tips[6] == "p2, 3: 50%"
