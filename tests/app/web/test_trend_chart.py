"""The participant's score chart: scaled to the score's range, gaps for unscored waves, safe."""

from __future__ import annotations

import re

from app.web.charts import trend_chart


def test_points_sit_on_the_scores_whole_range_and_gaps_break_the_line():
    svg = trend_chart(["Nov 2", "Nov 16", "Nov 30", "Dec 14"], [0, None, 100, 50],
                      title="WHO-5 <yours>", y_min=0, y_max=100)
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" class="chart trend"')
    assert 'role="img" aria-label="WHO-5 &lt;yours&gt;"' in svg and "<yours>" not in svg
    assert "<desc>Nov 2: 0; Nov 16: -; Nov 30: 100; Dec 14: 50</desc>" in svg
    ys = [float(y) for y in re.findall(r'<circle class="point" cx="[^"]+" cy="([^"]+)"', svg)]
    assert len(ys) == 3  # no mark for the unscored wave
    bottom, top, middle = ys
    assert bottom > middle > top and abs((bottom + top) / 2 - middle) < 0.01
    assert svg.count("<polyline") == 2  # the gap is not bridged


def test_a_range_that_does_not_start_at_zero_and_a_single_point():
    svg = trend_chart(["3 Nov"], [3.5], title="t", y_min=1, y_max=5, value_format=".1f")
    assert ">1.0</text>" in svg and ">3.0</text>" in svg and ">5.0</text>" in svg
    assert svg.count('<circle class="point"') == 1 and "<title>3 Nov: 3.5</title>" in svg
