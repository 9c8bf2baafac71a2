"""Fuzzing runs on SQLite only: the point is the API's answers, not the database."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param
