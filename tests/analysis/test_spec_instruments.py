"""The analysis contract's instrument summaries (analysis.spec.INSTRUMENTS) agree with the study's
instrument files (surveys/instruments/<key>.yaml), which the exporter scores with: a drift here
would flag real scores as out of scale and print wrong ranges in codebooks and reports."""

from __future__ import annotations

import pytest

from analysis import spec
from app.surveys.instruments import INSTRUMENTS_DIR, load_instrument

WITH_FILES = [k for k in spec.INSTRUMENTS if (INSTRUMENTS_DIR / f"{k}.yaml").is_file()]


def test_the_study_modules_and_validated_scales_all_have_instrument_files():
    assert {"who5", "phq9", "gad7", "ucla3", "swls", "social_contact", "ai_dependence"} <= set(
        WITH_FILES
    )


@pytest.mark.parametrize("key", WITH_FILES)
def test_spec_range_and_item_count_match_the_instrument_file(key):
    declared = spec.INSTRUMENTS[key]
    scoring = load_instrument(INSTRUMENTS_DIR / f"{key}.yaml").scoring
    assert scoring is not None
    primary = scoring.primary_range  # after any transformation (WHO-5: raw sum x 4)
    assert (declared.minimum, declared.maximum) == (primary.min, primary.max)
    assert declared.n_items == len(scoring.items)
    assert f"{primary.min:g}-{primary.max:g}" in declared.score  # the description's range
