"""Generalization, suppression, k-anonymity and l-diversity (pure), and quasi-identifiers declared
in the study file (end to end on both databases)."""

from __future__ import annotations

import json
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
    assert levels["gender"] <= 1 and levels["age_band"] <= 1


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
    assert anon.report["l_diverse"] is True and anon.report["l"] >= 2
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
    declared = q["thresholds"]
    assert declared["source"] == "study file (quasi_identifiers)" and declared["k"] == 4
    assert declared["sensitive"] == "phq9_band" and declared["l"] == 2
    # the report states what was measured on the released values
    assert q["k"] >= 4 and q["l"] >= 2 and q["l_diverse"] is True
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


# ---- every released column classified ---------------------------------------------------------

def load_classes(engine, tmp_path, edit) -> Seeder:  # type: ignore[no-untyped-def]
    """Load a copy of the study whose column_classes (and quasi_identifiers) ``edit`` changed."""
    copy = StudyCopy(tmp_path / "study")
    data = copy.read()
    edit(data)
    copy.write(data)
    with Session(engine) as s:
        studies.load_study(s, copy.file, copy.surveys, actor="test")
    return Seeder(engine)


def test_every_released_column_has_its_class_in_the_report(engine, tmp_path, study):
    seeder = Seeder(engine)
    seeder.populate(40, 2, seed=21)
    seeder.flush()
    result = export_panel(engine, ExportOptions(out=tmp_path / "out", include_items=True))
    classes = result.deidentification["quasi_identifiers"]["column_classes"]
    panel = load_panel(tmp_path / "out")
    for table, frame in (("participants", panel.participants), ("responses", panel.responses),
                         ("usage", panel.usage), ("panel", panel.wide)):
        assert set(classes[table]) == set(frame.columns), table
    assert classes["participants"]["status"] == "quasi_identifier"
    assert classes["responses"]["phq9_9"] == "sensitive"  # from items.phq9
    assert classes["responses"]["lost_access_feeling"] == "sensitive"  # a per-item override
    assert classes["responses"]["used_models_claude"] == "other"  # items.ai_usage's class
    # baseline answers classified quasi-identifier are generalized in participants, not raw
    assert "ai_use_since" in classes["participants"]
    assert "ai_use_since" not in classes["responses"]


@pytest.mark.parametrize(("edit", "column"), [
    (lambda d: d["column_classes"]["usage"].pop("hours_per_week"), "'hours_per_week' of usage"),
    (lambda d: d["column_classes"]["items"].pop("gad7"), "'gad7_1' of responses"),
    (lambda d: d["column_classes"]["panel"].pop("scores_*"), "of panel"),
])
def test_an_unclassified_column_is_refused_by_name(engine, tmp_path, edit, column):
    seeder = load_classes(engine, tmp_path, edit)
    seeder.populate(8, 1, seed=22)
    seeder.flush()
    with pytest.raises(ExportError) as err:
        export_panel(engine, ExportOptions(out=tmp_path / "out", include_items=True))
    assert err.value.code == "unclassified_column"
    assert column in err.value.message and "no privacy class" in err.value.message
    assert "\n" not in err.value.message
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_a_column_classified_identifier_is_never_released(engine, tmp_path):
    def edit(d: dict[str, Any]) -> None:
        d["column_classes"]["responses"]["translation_status"] = "identifier"

    seeder = load_classes(engine, tmp_path, edit)
    seeder.populate(8, 1, seed=23)
    seeder.flush()
    with pytest.raises(ExportError, match="'translation_status' of responses is classified "
                                          "identifier") as err:
        export_panel(engine, ExportOptions(out=tmp_path / "out"))
    assert err.value.code == "unclassified_column"
    assert not (tmp_path / "out").exists()


def test_malformed_classification_is_refused_naming_the_setting(engine, tmp_path):
    for bad, where in [
        ({"usage": {"day": "secret"}}, "column_classes.usage.day"),
        ({"tables": {}}, "unknown table(s) tables"),
        ({"items": {"phq9": {"klass": "sensitive"}}}, "column_classes.items.phq9"),
        ({"items": {"phq9": {"items": {"phq9_9": "hidden"}}}}, "column_classes.items.phq9.items"),
    ]:
        with pytest.raises(de.DeidentificationError, match=where.replace(".", r"\.")
                           .replace("(", r"\(").replace(")", r"\)")):
            de.parse_classes({"column_classes": bad})
    # the JSON Schema refuses the same at `study load`, naming the place
    copy = StudyCopy(tmp_path / "study")
    data = copy.read()
    data["column_classes"]["usage"]["day"] = "secret"
    copy.write(data)
    with Session(engine) as s, pytest.raises(studies.StudyLoadError, match="column_classes"):
        studies.load_study(s, copy.file, copy.surveys, actor="test")


def test_thresholds_are_read_and_checked():
    cfg = de.parse_config({"quasi_identifiers": {
        "k": 3, "max_individual_risk": 0.1, "max_expected_reidentifications": 12,
        "sensitive": {"field": "phq9_band", "l": 2, "t": 0.3}}})
    assert cfg.effective_k == 10  # 1/f_k <= 0.1 needs classes of 10
    assert cfg.t_closeness == 0.3 and cfg.max_expected_reidentifications == 12
    for bad, message in [
        ({"max_individual_risk": 0}, "max_individual_risk"),
        ({"max_individual_risk": 1.5}, "max_individual_risk"),
        ({"max_expected_reidentifications": -1}, "max_expected_reidentifications"),
        ({"sensitive": {"field": "phq9_band", "t": 2}}, r"sensitive\.t"),
        ({"sensitive": {"field": "phq9_band", "tee": 0.2}}, "unknown key"),
    ]:
        with pytest.raises(de.DeidentificationError, match=message):
            de.parse_config({"quasi_identifiers": bad})


# Releasing no participant column at all always meets t (one class: everyone) and leaves one
# expected re-identification; the research profile's row-level enrollment weeks are released as
# they are, so a class per enrollment band remains there.
@pytest.mark.parametrize(("qi", "profile", "message"), [
    ({"k": 2, "max_suppressed_share": 0.1, "sensitive": {"field": "phq9_band", "t": 0.0001}},
     "research", "t=0.0001"),
    ({"k": 2, "max_suppressed_share": 0.1, "max_expected_reidentifications": 0.5}, "strict",
     "at most 0.5 expected re-identifications"),
    ({"k": 2, "max_suppressed_share": 0.0, "max_individual_risk": 0.01}, "strict",
     "individual risk at most 0.01"),
])
def test_thresholds_that_cannot_be_met_refuse_and_write_nothing(engine, tmp_path, qi, profile,
                                                                message):
    def edit(d: dict[str, Any]) -> None:
        d["quasi_identifiers"] = {"fields": ["age_band", "gender", "country",
                                             "living_situation"], **qi}

    seeder = load_classes(engine, tmp_path, edit)
    seeder.populate(30, 1, seed=24)
    seeder.flush()
    with pytest.raises(ExportError) as err:
        export_panel(engine, ExportOptions(out=tmp_path / "out", profile=profile,
                                           dua="DUA-9" if profile == "research" else None))
    assert err.value.code == "k_anonymity_unreachable"
    assert message in err.value.message and "Nothing was written" in err.value.message
    assert not (tmp_path / "out").exists()


def test_generalization_prefers_coarser_values_to_withholding_a_column():
    # exact 10-year bands would suppress 6 of 60 (over 5%); 20-year bands meet k=5 with no
    # suppression at a normalised certainty penalty of (2-1)/(7-1); withholding costs 1
    ages = ["age_18_24"] * 3 + ["age_25_34"] * 3 + ["age_35_44"] * 30 + ["age_45_54"] * 24
    anon = de.anonymize({"age_band": ages}, de.QIConfig(fields=("age_band",), k=5,
                                                        max_suppressed_share=0.05),
                        option_values={"age_band": AGES})
    g = anon.report["generalization"]["age_band"]
    assert g["level"] == 1 and g["released"] is True
    assert anon.report["information_loss"] == pytest.approx(1 / 6, abs=1e-6)
    assert set(anon.columns["age_band"]) == {"18-34", "35-54"}
    assert anon.report["suppressed"] == 0 and anon.report["k"] == 6


def test_the_cli_refuses_an_unclassified_column_in_one_line_with_exit_2(engine, tmp_path, cli):
    from typer.testing import CliRunner

    seeder = load_classes(engine, tmp_path, lambda d: d["column_classes"]["participants"].pop(
        "status"))
    seeder.populate(8, 1, seed=25)
    seeder.flush()
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", "panel", "--out", str(out), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "'status' of participants has no privacy class" in lines[0]
    assert not out.exists()


def test_the_cli_summary_states_the_measured_figures(engine, tmp_path, study, cli):
    from typer.testing import CliRunner

    seeder = Seeder(engine)
    seeder.populate(30, 1, seed=26)
    seeder.flush()
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", "panel", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    q = json.loads((out / "datapackage.json").read_text("utf-8"))["wellpanel"][
        "deidentification"]["quasi_identifiers"]
    assert (f"k={q['k']}, l={q['l']}, t={q['t']}, max individual risk "
            f"{q['max_individual_risk']}, expected re-identifications "
            f"{q['expected_reidentifications']}") in result.output
