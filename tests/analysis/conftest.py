"""Fixtures for the analysis tests: small simulated panels written as Data Packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import simulate


@pytest.fixture(scope="session")
def sim_panel_dir(tmp_path_factory) -> Path:
    """A simulated panel (120 participants x 10 waves, CSV, with calendar alignment)."""
    out = tmp_path_factory.mktemp("sim-panel")
    simulate.simulate_datapackage(out, n_participants=120, n_waves=10, seed=11)
    return out


@pytest.fixture(scope="session")
def sim_frames():
    """In-memory resources of a simulated panel (for building broken variants)."""
    return simulate.simulate_panel(60, 6, seed=5)
