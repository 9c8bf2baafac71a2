"""Survey instances and responses (the questionnaire issue fills this in)."""

from __future__ import annotations

from sqlmodel import Session


def erase_participant_responses(session: Session, participant_id: str) -> int:
    """No response table exists yet, so there is nothing to erase."""
    return 0
