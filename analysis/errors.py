"""Errors a user can cause and fix (bad input), as opposed to bugs.

Every expected user error derives from :class:`AnalysisError`. The command line catches it and
prints its one-line message without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AnalysisError(Exception):
    """Base class: an expected, user-fixable problem. ``str(err)`` is a complete sentence."""


class PanelError(AnalysisError):
    """The directory is not a valid panel Data Package (missing file, resource, column, type)."""


class FormulaError(AnalysisError):
    """A model formula is malformed or names columns that the data do not have."""


class InsufficientDataError(AnalysisError):
    """Too few participants, waves or observations for the model that was asked for."""


class ColumnError(AnalysisError):
    """A column's values make the model impossible: infinite values, numbers stored as text,
    a constant or perfectly explained outcome, values too large to square. ``column`` names
    the column, ``problem`` is a stable short code (``non_finite``, ``text_numbers``,
    ``constant``, ``zero_residual``, ``too_large``, ``collinear``)."""

    def __init__(self, column: str, problem: str, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.problem = problem
