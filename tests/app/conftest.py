"""Fixtures shared by the app's test packages (tests/app/export has its own `cli`, on db_url)."""

from __future__ import annotations

import pytest

from app.config import get_settings


@pytest.fixture
def cli(settings, monkeypatch):  # type: ignore[no-untyped-def]
    """`wellpanel` in this process, on the test's database."""
    for name in ("database_url", "secret_key", "smtp_host", "smtp_port", "notify_channel",
                 "base_url", "environment"):
        monkeypatch.setenv(f"WELLPANEL_{name.upper()}", str(getattr(settings, name)))
    get_settings.cache_clear()
    from app.cli import app as wellpanel

    yield wellpanel
    get_settings.cache_clear()
