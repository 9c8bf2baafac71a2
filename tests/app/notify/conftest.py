"""A study with one survey a day after enrolling, for tests of invitations and reminders."""

from __future__ import annotations

import pytest

from app.studies import service as studies
from tests.support.studyfiles import StudyCopy

# Participants are enrolled at 10:00 Berlin time; their core surveys open the next day at 10:00.
CORE = {"name": "core", "instruments": ["who5", "phq9"], "cadence": {"offsets_days": [1]},
        "local_time": "10:00", "open_for_hours": 96, "reminders_hours": [24, 72]}


@pytest.fixture
def core_study(tmp_path, session, loaded_study) -> int:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data["schedule"]["entries"] = [CORE]
    copy.write(data)
    return studies.load_study(session, copy.file, copy.surveys, actor="test").protocol_version
