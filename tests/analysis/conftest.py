"""Fixtures for the analysis tests: small simulated panels written as Data Packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import simulate


def pytest_collection_modifyitems(config, items):
    """The 1,000-replicate calibration study (marker ``calibration``) runs only when selected,
    e.g. ``pytest -m calibration tests/analysis``; the default run (``make test``) skips it."""
    if "calibration" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="1,000-replicate calibration study: run with -m calibration")
    for item in items:
        if item.get_closest_marker("calibration") is not None:
            item.add_marker(skip)


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
