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
