"""Where a notebook finds its panel and puts its figures (shared by analysis/notebooks/*.py).

WELLPANEL_PANEL names a panel Data Package; without it a small simulated panel is made, so every
notebook runs top to bottom anywhere. WELLPANEL_FIGURES is the figure folder (default figures/).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from analysis import simulate


def figure_dir() -> Path:
    folder = Path(os.environ.get("WELLPANEL_FIGURES", "figures"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def panel_dir(n_participants: int = 200, n_waves: int = 12, seed: int = 1) -> Path:
    given = os.environ.get("WELLPANEL_PANEL")
    if given:
        return Path(given)
    folder = tempfile.mkdtemp(prefix="wellpanel-sim-")
    simulate.simulate_datapackage(folder, n_participants=n_participants, n_waves=n_waves,
                                  seed=seed)
    return Path(folder)
