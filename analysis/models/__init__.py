"""Model families for "does continued 4o-style use help or harm?", one module each.

- :mod:`.growth`: change over time per outcome (random intercept and slope).
- :mod:`.within_between`: within- and between-person usage effects with random slopes.
- :mod:`.lagged`: usage at t-1 predicting the outcome at t, controlling for usage at t, the
  outcome at t-1 and access loss.
- :mod:`.event`: interrupted time series and event-study curves around access loss or a study
  event such as the GPT-4o retirement.
- :mod:`.moderation`: within-person usage effects moderated by dependence or companion framing.

Each returns a :class:`ModelFit` (the mixed-model result plus a tidy estimates table with 95%
intervals and standardized effects, and every warning of the fit).
"""

from analysis.models.common import ModelFit, estimates_table
from analysis.models.event import EventStudy, fit_event_its, fit_event_study
from analysis.models.growth import fit_growth
from analysis.models.lagged import fit_lagged
from analysis.models.moderation import fit_moderation
from analysis.models.within_between import fit_within_between

__all__ = [
    "EventStudy",
    "ModelFit",
    "estimates_table",
    "fit_event_its",
    "fit_event_study",
    "fit_growth",
    "fit_lagged",
    "fit_moderation",
    "fit_within_between",
]
