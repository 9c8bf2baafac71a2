"""Console pages built on other services: compliance charts and the export/analysis pages."""

from __future__ import annotations

import io
import re
import time
import xml.etree.ElementTree as ET
import zipfile

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from app.auth import service as auth
from app.export.models import ExportJob
from tests.app.export.seed import Seeder

SVG = "{http://www.w3.org/2000/svg}"
DEADLINE_SECONDS = 300


@pytest.fixture
def panel(engine, loaded_study) -> Seeder:  # type: ignore[no-untyped-def]
    seeder = Seeder(engine)
    seeder.populate(14, 3, seed=11)
    seeder.flush()
    return seeder


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def _staff(app, engine, name: str, role: str = "researcher") -> TestClient:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        token = auth.add_staff(s, name, role)
    web = TestClient(app)
    page = web.get("/staff/login")
    assert web.post("/staff/login", data={"csrf_token": _csrf(page.text), "token": token},
                    follow_redirects=False).status_code == 303
    return web


def _marks(svg: str, tag: str, css: str) -> int:
    return sum(1 for e in ET.fromstring(svg).iter(f"{SVG}{tag}") if e.get("class") == css)


def _wait(web: TestClient, job_id: str, done: callable) -> str:  # type: ignore[valid-type]
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        page = web.get("/staff/researcher/exports")
        section = re.search(rf'<section class="export-job" id="job-{job_id}".*?</section>',
                            page.text, re.S).group(0)  # type: ignore[union-attr]
        if done(section):
            return section
        assert time.monotonic() < deadline, section
        time.sleep(0.1)


def test_compliance_page_draws_the_line_and_the_heat_map(app, engine, panel):
    web = _staff(app, engine, "compliance-viewer")
    page = web.get("/staff/researcher/compliance")
    assert page.status_code == 200, page.text
    line = re.search(r'id="compliance-over-time">(<svg.*?</svg>)', page.text, re.S).group(1)  # type: ignore[union-attr]
    weeks = len(re.findall(r"<circle class=\"point\"", line))
    assert weeks >= 1 and _marks(line, "circle", "point") == weeks
    heat = re.search(r'id="wave-matrix">(<svg.*?</svg>)', page.text, re.S).group(1)  # type: ignore[union-attr]
    root = ET.fromstring(heat)
    rows = len(set(re.findall(r"<title>([0-9a-f]{16}), ", heat)))
    assert rows == 14  # every seeded participant has a row
    cells = _marks(heat, "rect", "cell")
    assert cells % rows == 0 and cells // rows >= 3  # rows x waves
    assert root.find(f"{SVG}title").text == "Participant by wave"  # type: ignore[union-attr]
    assert 'id="compliance-table"' in page.text and "phq9" in page.text
    assert "@example" not in page.text  # pseudonyms only


def test_export_from_the_console_download_audit_and_report(app, engine, panel):
    web = _staff(app, engine, "exporter")
    page = web.get("/staff/researcher/exports")
    assert 'id="no-exports"' in page.text
    # A research export without a data-use agreement: refused, explained, nothing started.
    refused = web.post("/staff/researcher/exports", data={
        "csrf_token": _csrf(page.text), "profile": "research", "format": "csv"})
    assert refused.status_code == 422 and 'id="export-error"' in refused.text
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(ExportJob)).one() == 0

    started = web.post("/staff/researcher/exports", data={
        "csrf_token": _csrf(page.text), "profile": "strict", "format": "csv"},
        follow_redirects=False)
    assert started.status_code == 303
    with Session(engine) as s:
        job_id = s.exec(select(ExportJob.id)).one()
    section = _wait(web, job_id, lambda html: 'data-status="done"' in html
                    or 'data-status="failed"' in html)
    assert 'data-status="done"' in section, section
    assert re.search(r"Audit entry #\d+: <code>export.panel</code>", section)

    download = web.get(f"/staff/researcher/exports/{job_id}/download")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(download.content)).namelist()
    assert "datapackage.json" in names

    other = _staff(app, engine, "other-researcher")
    assert other.get(f"/staff/researcher/exports/{job_id}/download").status_code == 404
    irb = _staff(app, engine, "irb-exports", "irb")
    assert irb.get(f"/staff/researcher/exports/{job_id}/download").status_code == 403

    page = web.get("/staff/researcher/exports")
    no_token = web.post(f"/staff/researcher/exports/{job_id}/analyze", data={})
    assert no_token.status_code == 403
    assert web.post(f"/staff/researcher/exports/{job_id}/analyze",
                    data={"csrf_token": _csrf(page.text)}, follow_redirects=False
                    ).status_code == 303
    again = web.post(f"/staff/researcher/exports/{job_id}/analyze",
                     data={"csrf_token": _csrf(page.text)})
    section = _wait(web, job_id, lambda html: "report-running" not in html)
    assert again.status_code == 409  # running or done: never two analyses of one export
    assert 'class="report"' in section, section
    report = web.get(f"/staff/researcher/exports/{job_id}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "sandbox" in report.headers["content-security-policy"]
    assert "<html" in report.text.lower()
    assert other.get(f"/staff/researcher/exports/{job_id}/report").status_code == 404


def test_compliance_of_an_unknown_study_is_a_clear_404(app, engine):
    web = _staff(app, engine, "compliance-typo")
    page = web.get("/staff/researcher/compliance?study=<no-such>")
    assert page.status_code == 404 and 'role="alert"' in page.text
    assert "&lt;no-such&gt;" in page.text and "<no-such>" not in page.text
