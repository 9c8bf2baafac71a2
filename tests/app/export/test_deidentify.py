"""Generalization, suppression, k-anonymity and l-diversity (pure), and quasi-identifiers declared
in the study file (end to end on both databases)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import pytest
from sqlmodel import Session

from analysis.panel import load_panel
from app.export import deidentify as de
from app.export.service import ExportError, ExportOptions, export_panel
from app.studies import service as studies
from tests.app.export.seed import Seeder
from tests.support.studyfiles import StudyCopy

AGES = ["age_18_24", "age_25_34", "age_35_44", "age_45_54", "age_55_64", "age_65_plus",
        "prefer_not_to_say"]
GENDERS = ["woman", "man", "non_binary", "another_gender", "prefer_not_to_say"]
COUNTRIES = ["us", "de", "gb", "br", "cn", "jp", "au", "in", "za", "nz", "other"]
LIVING = ["alone", "with_partner", "with_family", "with_others", "other", "prefer_not_to_say"]


def population(n: int, seed: int = 0) -> dict[str, list[Any]]:
    rng = random.Random(seed)
    return {
        "age_band": [rng.choices(AGES, [20, 35, 22, 12, 6, 3, 2])[0] for _ in range(n)],
        "gender": [rng.choices(GENDERS, [45, 45, 5, 2, 3])[0] for _ in range(n)],
        "country": [rng.choices(COUNTRIES, [30, 20, 12, 10, 8, 6, 5, 4, 2, 1, 2])[0]
                    for _ in range(n)],
        "living_situation": [rng.choice(LIVING) for _ in range(n)],
    }


def released(anon: de.Anonymized) -> list[tuple[Any, ...]]:
    cols = list(anon.columns)
    return [tuple(anon.columns[c][i] for c in cols) for i in range(len(anon.suppressed))]


@pytest.mark.parametrize(("n", "k"), [(20, 5), (60, 5), (300, 5), (300, 10), (2000, 5)])
def test_every_released_combination_occurs_at_least_k_times(n, k):
    anon = de.anonymize(population(n, seed=n + k), de.QIConfig(k=k))
    assert de.check_k_anonymity(released(anon), k) >= k
    assert anon.report["smallest_class"] >= k
    assert anon.report["suppressed"] == sum(anon.suppressed)
    assert anon.report["suppressed_share"] <= 0.1
    # suppressed participants have every quasi-identifier cell empty
    for i, s in enumerate(anon.suppressed):
        if s:
            assert all(anon.columns[c][i] is None for c in anon.columns)
    assert set(anon.columns) == {"age_band", "gender", "region", "living_situation"}


def test_more_data_allows_finer_categories():
    small = de.anonymize(population(30, 1), de.QIConfig())
    large = de.anonymize(population(5000, 1), de.QIConfig())
    assert large.report["information_loss"] < small.report["information_loss"]
    levels = {f: g["level"] for f, g in large.report["generalization"].items()}
    assert levels["gender"] == 0 and levels["age_band"] <= 1


def test_countries_become_regions_never_countries():
    anon = de.anonymize(population(5000, 2), de.QIConfig(fields=("country", "gender")))
    assert anon.report["generalization"]["country"]["level_name"] == "world subregion (UN M49)"
    values = set(anon.columns["region"]) - {None}
    assert values and not values & (set(COUNTRIES) - {"other"})
    assert values <= set(de.COUNTRY_SUBREGION.values()) | set(de.COUNTRY_CONTINENT.values())
    assert de.hierarchy_for("country").levels[0]("de") == "Western Europe"
    assert de.hierarchy_for("country").levels[1]("jp") == "Asia"
    assert de.hierarchy_for("country").levels[0]("xx") == "other"


def test_a_small_suppressed_group_is_padded_to_k():
    # 40 identical people and 2 unique ones: suppressing just the 2 would single them out
    raw = {"age_band": ["age_25_34"] * 40 + ["age_65_plus", "age_18_24"],
           "gender": ["woman"] * 42}
    anon = de.anonymize(raw, de.QIConfig(fields=("age_band", "gender"), k=5,
                                         max_suppressed_share=0.5))
    n_supp = sum(anon.suppressed)
    assert n_supp == 0 or n_supp >= 5
    assert de.check_k_anonymity(released(anon), 5) >= 5


def test_too_much_suppression_is_refused():
    raw = population(30, 3)
    with pytest.raises(de.DeidentificationError) as err:
        de.anonymize(raw, de.QIConfig(k=31))
    assert "k=31" in err.value.message and "30 participant" in err.value.message
    assert err.value.details["participants"] == 30


def test_l_diversity_of_a_sensitive_attribute():
    raw = population(400, 4)
    rng = random.Random(4)
    # the sensitive value is almost a function of gender: classes must mix it
    sens = [("severe" if g == "non_binary" else rng.choice(["minimal", "mild"]))
            for g in raw["gender"]]
    cfg = de.QIConfig(k=5, sensitive="phq9_band", l_diversity=2, max_suppressed_share=0.2)
    anon = de.anonymize(raw, cfg, sensitive_values=sens)
    classes: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
    for row, s in zip(released(anon), sens, strict=True):
        classes[row].add(s)
    assert min(len(v) for v in classes.values()) >= 2
    assert anon.report["l_diverse"] is True and anon.report["smallest_sensitive_diversity"] >= 2
    with pytest.raises(de.DeidentificationError, match="l=2"):
        de.anonymize(raw, cfg, sensitive_values=["same"] * 400)


def test_config_from_the_study_file():
    assert de.parse_config({}) == de.QIConfig()
    cfg = de.parse_config({"quasi_identifiers": {
        "fields": ["age_band", "country"], "k": 10, "max_suppressed_share": 0.05,
        "sensitive": {"field": "phq9_band", "l": 3}}})
    assert cfg.fields == ("age_band", "country") and cfg.k == 10
    assert cfg.sensitive == "phq9_band" and cfg.l_diversity == 3 and cfg.declared
    for bad, message in [
        ({"k": 0}, "k"), ({"k": "5"}, "k"), ({"max_suppressed_share": 2}, "share"),
        ({"fields": "age_band"}, "fields"), ({"fields": ["a", "a"]}, "fields"),
        ({"colour": 1}, "unknown"), ({"sensitive": {"field": "x", "l": 0}}, "l"),
        ({"fields": ["age_band"], "sensitive": "age_band"}, "also"),
    ]:
        with pytest.raises(de.DeidentificationError, match=message):
            de.parse_config({"quasi_identifiers": bad})


# ---- declared in the study file, end to end ---------------------------------------------------

def load_copy(engine, tmp_path, qi: dict[str, Any]) -> Seeder:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path / "study")
    data = copy.read()
    data["quasi_identifiers"] = qi
    copy.write(data)
    with Session(engine) as s:
        studies.load_study(s, copy.file, copy.surveys, actor="test")
    return Seeder(engine)


def test_declared_quasi_identifiers_with_l_diversity(engine, tmp_path):
    seeder = load_copy(engine, tmp_path, {
        "fields": ["age_band", "gender", "country", "living_situation"], "k": 4,
        "max_suppressed_share": 0.25, "sensitive": {"field": "phq9_band", "l": 2}})
    seeder.populate(80, 1, seed=11)
    seeder.flush()
    out = tmp_path / "out"
    result = export_panel(engine, ExportOptions(out=out))
    q = result.deidentification["quasi_identifiers"]
    assert q["source"] == "study file (quasi_identifiers)" and q["k"] == 4
    assert q["sensitive"] == "phq9_band" and q["l"] == 2 and q["l_diverse"] is True
    panel = load_panel(out)
    cols = ["age_band", "gender", "region", "living_situation"]
    parts = panel.participants.set_index("pid")
    band = panel.responses[(panel.responses["instrument"] == "phq9")
                           & (panel.responses["wave"] == 0)].set_index("pid")["severity"]
    classes: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
    sizes: Counter[tuple[Any, ...]] = Counter()
    for pid, row in parts[cols].iterrows():
        key = tuple(None if not isinstance(v, str) else v for v in row)
        sizes[key] += 1
        classes[key].add(band.get(pid))
    assert min(sizes.values()) >= 4
    assert min(len(v) for v in classes.values()) >= 2


def test_declared_k_that_cannot_be_met_refuses(engine, tmp_path):
    seeder = load_copy(engine, tmp_path, {"fields": ["age_band", "gender"], "k": 50,
                                          "max_suppressed_share": 0.0})
    seeder.populate(20, 1, seed=12)
    seeder.flush()
    with pytest.raises(ExportError) as err:
        export_panel(engine, ExportOptions(out=tmp_path / "out"))
    assert err.value.code == "k_anonymity_unreachable" and "k=50" in err.value.message
    assert not (tmp_path / "out").exists()


def test_an_unknown_quasi_identifier_is_a_clear_error(engine, tmp_path):
    seeder = load_copy(engine, tmp_path, {"fields": ["shoe_size"]})
    seeder.populate(6, 1, seed=13)
    seeder.flush()
    with pytest.raises(ExportError, match="shoe_size"):
        export_panel(engine, ExportOptions(out=tmp_path / "out"))


def test_an_extra_quasi_identifier_gets_its_own_generalized_column(engine, tmp_path):
    seeder = load_copy(engine, tmp_path, {
        "fields": ["age_band", "gender", "country", "living_situation",
                   "gpt4o_before_retirement"], "k": 3})
    seeder.populate(40, 1, seed=14)
    seeder.flush()
    out = tmp_path / "out"
    export_panel(engine, ExportOptions(out=out, include_items=True))
    panel = load_panel(out)
    assert "gpt4o_before_retirement" in panel.participants.columns
    header = (out / "responses.csv").read_text("utf-8").splitlines()[0]
    assert '"gpt4o_before_retirement"' not in header  # a quasi-identifier: participants only
