"""What an amendment changes, before it applies: `study diff`, `study load --dry-run`, the
console's protocol page (app/studies/diff.py, service.preview_load / protocol_history)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from app.audit.models import AuditEvent
from app.main import create_app
from app.studies import diff as study_diff
from app.studies import service as studies
from app.studies.models import ProtocolVersion
from tests.app.test_cli import run
from tests.support.flows import STUDY, joined_and_consented
from tests.support.staff import add_member, logged_in
from tests.support.studyfiles import StudyCopy


def _amend(copy: StudyCopy) -> None:
    """Drop SWLS, lengthen the biweekly window, retitle, and a consent 2.0 for everyone."""
    copy.add_consent_version("2.0", requires_reconsent=True)
    data = copy.read()
    data["instruments"].remove("swls")
    monthly = next(e for e in data["schedule"]["entries"] if e["name"] == "monthly")
    monthly["instruments"].remove("swls")
    baseline = next(e for e in data["schedule"]["entries"] if e["name"] == "baseline")
    baseline["instruments"].remove("swls")
    next(e for e in data["schedule"]["entries"] if e["name"] == "biweekly")["open_for_hours"] = 120
    data["title"]["en"] = "Keep4o panel (amended)"
    copy.write(data)


@pytest.fixture
def copy(tmp_path: Path) -> StudyCopy:
    made = StudyCopy(tmp_path / "amended")
    _amend(made)
    return made


def _keys(diff: study_diff.StudyDiff) -> set[tuple[str, str, str]]:
    return {(c.section, c.kind, c.what) for c in diff.changes}


EXPECTED = {("instruments", "removed", "swls"),
            ("schedule", "changed", "monthly.instruments"),
            ("schedule", "changed", "baseline.instruments"),
            ("schedule", "changed", "biweekly.open_for_hours"),
            ("consent", "added", "version 2.0"),
            ("consent", "changed", "current"),
            ("title", "changed", "en")}


def _counts(engine) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return (s.exec(select(func.count()).select_from(ProtocolVersion)).one(),
                s.exec(select(func.count()).select_from(AuditEvent)).one())


def test_preview_lists_every_change_and_writes_nothing(client, smtp, engine, copy):  # type: ignore[no-untyped-def]
    joined_and_consented(client, smtp, "scheduled@example.org")
    before = _counts(engine)
    with Session(engine) as s:
        diff = studies.preview_load(s, copy.file, copy.surveys)
    assert _keys(diff) == EXPECTED
    assert diff.from_version == 1 and not diff.unchanged
    assert diff.new_consent_versions == ["2.0"] and diff.reconsent_required
    assert diff.replanned_participants == 1
    biweekly = next(c for c in diff.changes if c.what == "biweekly.open_for_hours")
    assert (biweekly.old, biweekly.new) == (96, 120)
    assert _counts(engine) == before


def test_the_loaded_amendment_shows_the_same_changes_in_the_history(engine, copy, loaded_study):  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        previewed = studies.preview_load(s, copy.file, copy.surveys)
        studies.load_study(s, copy.file, copy.surveys, actor="test")
        history = studies.protocol_history(s, STUDY)
        again = studies.preview_load(s, copy.file, copy.surveys)
    (newest, newest_diff), (first, first_diff) = history
    assert (newest.version, first.version) == (2, 1)
    assert _keys(newest_diff) == _keys(previewed) == EXPECTED
    assert first_diff.from_version is None
    assert again.unchanged and again.changes == [] and again.replanned_participants == 0


def test_an_instrument_change_names_the_items(engine, tmp_path, loaded_study):  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path / "items")
    who5 = copy.surveys / "instruments" / "who5.yaml"
    text = who5.read_text("utf-8").replace('version: "1.0.0"', 'version: "1.1.0"')
    who5.write_text(text.replace("title: WHO-Five Well-Being Index (WHO-5)",
                                 "title: WHO-5 Well-Being Index"), "utf-8")
    with Session(engine) as s:
        diff = studies.preview_load(s, copy.file, copy.surveys)
    assert ("instruments", "changed", "who5.version") in _keys(diff)
    title = next(c for c in diff.changes if c.what == "who5.title")
    assert (title.old, title.new) == ("WHO-Five Well-Being Index (WHO-5)", "WHO-5 Well-Being Index")
    assert all(c.section == "instruments" for c in diff.changes)


def test_cli_diff_and_dry_run_print_the_changes_and_load_nothing(db_url, copy, loaded_study):  # type: ignore[no-untyped-def]
    refused = run(db_url, "study", "diff", str(copy.file))
    assert refused.returncode == 1  # the default surveys dir lacks consent 2.0's documents
    assert "consent document missing" in refused.stderr and "Traceback" not in refused.stderr
    shipped = run(db_url, "study", "diff", str(Path("surveys/studies/keep4o-panel.yaml")))
    assert shipped.returncode == 0, shipped.stderr
    assert "unchanged from protocol version 1" in shipped.stdout


def test_cli_dry_run_with_the_amended_surveys_dir(db_url, copy, monkeypatch, loaded_study):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WELLPANEL_SURVEYS_DIR", str(copy.surveys))
    dry = run(db_url, "study", "load", "--dry-run", str(copy.file))
    assert dry.returncode == 0, dry.stderr
    assert "changes from protocol version 1" in dry.stdout
    assert "- swls" in dry.stdout and "~ biweekly.open_for_hours: 96 -> 120" in dry.stdout
    assert "new consent versions: 2.0 (everyone signs again)" in dry.stdout
    as_json = run(db_url, "study", "diff", "--json", str(copy.file))
    assert '"reconsent_required": true' in as_json.stdout
    again = run(db_url, "study", "load", "--dry-run", str(copy.file))
    assert "changes from protocol version 1" in again.stdout  # the dry run loaded nothing


@pytest.fixture
def app(settings, clock, loaded_study, copy):  # type: ignore[no-untyped-def]
    settings.surveys_dir = copy.surveys
    application = create_app(settings, clock=clock)
    yield application
    application.state.engine.dispose()


@pytest.mark.parametrize("role", ["researcher", "irb"])
def test_console_page_shows_the_pending_amendment_and_the_history(app, engine, role):  # type: ignore[no-untyped-def]
    web = logged_in(app, add_member(engine, f"{role}-protocol", role))
    page = web.get("/staff/protocol")
    assert page.status_code == 200
    assert "Not loaded yet." in page.text and 'id="pending-changes-1"' in page.text
    assert "biweekly.open_for_hours" in page.text and "everyone signs again" in page.text
    assert 'id="version-keep4o-panel-1"' in page.text
    assert 'href="/staff/protocol"' in page.text  # in the navigation


def test_console_page_is_not_for_the_safety_role(app, engine):  # type: ignore[no-untyped-def]
    web = logged_in(app, add_member(engine, "safety-protocol", "safety"))
    assert web.get("/staff/protocol").status_code == 403
