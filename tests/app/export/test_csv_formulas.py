"""CSV formula neutralization (#13 part 6, OWASP CSV injection): a text cell starting with =, +,
-, @, tab or CR gets a single quote in front in every CSV the platform writes (research export,
the participant's own-data download, the IRB consent log); numbers stay numbers; the codebook
says so; the analysis package reads the original text back."""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from analysis import spec
from analysis.panel import load_panel
from app.consent.models import ConsentLogEntry
from app.consent.service import consent_log_csv
from app.core import csv_cells
from app.export.service import ExportOptions, export_panel
from app.export.writers import TableWriter
from app.participants import own_data
from tests.app.export.conftest import populate
from tests.app.export.seed import START
from tests.support.flows import consent, fresh_link, join

FORMULA = '=HYPERLINK("http://x","y")'
NEUTRALIZED = "'" + FORMULA
# free text without a URL: an export masks URLs in free text before it neutralizes (#16 part 4)
FREE_FORMULA = '=SUM(1+2)*cmd|" /C calc"!A0'
FREE_NEUTRALIZED = "'" + FREE_FORMULA
STARTS = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"]


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# ---- the rule ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", STARTS + ["'=x", "''-x"])
def test_text_starting_like_a_formula_gets_a_quote_and_can_be_restored(text: str) -> None:
    assert csv_cells.neutralize(text) == "'" + text
    assert csv_cells.restore(csv_cells.neutralize(text)) == text


@pytest.mark.parametrize("value", ["abc", "x=1", "'quoted", "", " =x", -3, -1.5, 0, True, None])
def test_other_text_and_every_number_is_left_alone(value: Any) -> None:
    assert csv_cells.neutralize(value) is value or csv_cells.neutralize(value) == value


def test_the_arrow_and_the_python_rules_agree() -> None:
    import pyarrow as pa

    values = [*STARTS, "'=x", "abc", "x-1", "", None, FORMULA]
    arrow = csv_cells.neutralize_text_array(pa.array(values, pa.string())).to_pylist()
    assert arrow == [csv_cells.neutralize(v) for v in values]


# ---- the research export ----------------------------------------------------------------------

def test_table_writer_neutralizes_text_cells_and_keeps_negative_numbers(tmp_path: Path) -> None:
    fields = [("text", "string"), ("count", "integer"), ("score", "number"), ("ok", "boolean")]
    path = tmp_path / "t.csv"
    writer = TableWriter(path, fields, "csv")
    writer.write({"text": [FORMULA, "-5", "plain", None], "count": [-3, 2, None, -7],
                  "score": [-1.5, 0.25, None, -2.0], "ok": [True, False, None, True]})
    writer.close()
    raw = path.read_text("utf-8").splitlines()
    assert raw[1] == '"\'=HYPERLINK(""http://x"",""y"")",-3,-1.5,true'
    assert raw[2] == '"\'-5",2,0.25,false'  # text "-5" is text; the number -3 is a number
    assert raw[3] == '"plain",,,'
    assert raw[4] == ",-7,-2,true"
    parquet = TableWriter(tmp_path / "t.parquet", fields, "parquet")
    parquet.write({"text": [FORMULA], "count": [-3], "score": [-1.5], "ok": [True]})
    parquet.close()
    assert pq.read_table(tmp_path / "t.parquet").column("text").to_pylist() == [FORMULA]


def test_free_text_in_an_export_is_neutralized_in_csv_only(engine, seeder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    population = populate(seeder, tmp_path)
    person = seeder.participant(random.Random(11), enrolled_at=START + timedelta(days=7),
                                waves=2, free_text=FREE_FORMULA, miss=0.0)
    seeder.flush()
    assert person.free_text == [FREE_FORMULA, FREE_FORMULA]
    out = tmp_path / "csv"
    export_panel(engine, ExportOptions(out=out, profile="research", dua="DUA-1",
                                       include_items=True, include_free_text=True,
                                       key_file=population.key_file))
    text = (out / "responses.csv").read_text("utf-8")
    rows = _cells(text)
    header, body = rows[0], rows[1:]
    column = header.index("other_model_name")
    written = {row[column] for row in body if row[column]}
    assert FREE_NEUTRALIZED in written and FREE_FORMULA not in written
    assert not [cell for row in rows for cell in row if cell.startswith(("=", "+", "@"))]
    # negative numbers are numbers, unquoted and unprefixed (weeks before the study's event)
    week = header.index(spec.event_column("gpt4o_retirement"))
    negatives = [row[week] for row in body if row[week].startswith("-")]
    assert negatives and all(int(v) < 0 for v in negatives)
    assert ",-" in text and "'-" not in text.replace(FREE_NEUTRALIZED, "")
    # the codebook says so, and the analysis reads the original text back
    book = json.loads((out / "datapackage.json").read_text("utf-8"))["wellpanel"]["codebook"]
    note = book["csv_formula_neutralization"]
    assert note == csv_cells.CODEBOOK_NOTE and "=, +, -, @" in note and "Numbers" in note
    responses = load_panel(out).responses
    assert FREE_FORMULA in set(responses["other_model_name"].dropna())
    assert not any(str(v).startswith("'") for v in responses["other_model_name"].dropna())


# ---- the participant's own data and the IRB consent log ---------------------------------------

def test_own_data_csv_neutralizes_text_and_keeps_numbers() -> None:
    rows = [{"name": FORMULA, "n": -3, "x": -1.5, "t": "-3", "ok": True, "none": None}]
    body = own_data._csv(rows, []).decode("utf-8-sig")
    assert body.splitlines()[1] == '"\'=HYPERLINK(""http://x"",""y"")",-3,-1.5,"\'-3",True,""'


def test_my_data_download_neutralizes_my_typed_signature(app, client, smtp) -> None:  # type: ignore[no-untyped-def]
    person = join(client, smtp, "formula@example.org")
    consent(client, person, signature_name=FORMULA)
    web = TestClient(app)
    assert web.get(f"/p/login/{fresh_link(client, smtp, person)}",
                   follow_redirects=False).status_code == 303
    response = web.get("/p/data/my-data.zip")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    for name in archive.namelist():
        for row in _cells(archive.read(name).decode("utf-8-sig")):
            assert not [c for c in row if c.startswith(("=", "+", "@", "\t", "\r"))], name
    records = list(csv.DictReader(io.StringIO(
        archive.read("consent_records.csv").decode("utf-8-sig"))))
    assert [r["signature_name"] for r in records] == [NEUTRALIZED]


def test_the_irb_consent_log_csv_neutralizes_text() -> None:
    entry = ConsentLogEntry(at=datetime(2026, 11, 2, 9, tzinfo=UTC), action="consent",
                            pseudonym="-abc", study="keep4o-panel", version="1.1",
                            language="en", document_sha256=None, identity_method=None,
                            statements=["@SUM(1)", "data"], record_id=-1)
    [row] = list(csv.DictReader(io.StringIO(consent_log_csv([entry]))))
    assert row["pseudonym"] == "'-abc" and row["statements"] == "'@SUM(1);data"
    assert row["record_id"] == "-1"  # a number, not text
    assert ",-1," in consent_log_csv([entry])
