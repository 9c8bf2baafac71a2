"""Free text only where allowed (issue 16 part 4): never in the strict profile; in the research
profile under a data-use agreement, with e-mail addresses, phone numbers, URLs and handles
masked and counted in the de-identification report. The masking rules first, over many
written forms; then exports on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from app.export.freetext import TextMasker
from app.export.service import ExportOptions, export_panel
from tests.app.export.conftest import populate
from tests.app.export.seed import START

MASKED = [
    # e-mail addresses
    ("Jane Doe (jane.doe@example.com)", "Jane Doe ([email])", {"email": 1}),
    ("write to Jane.Doe+ai@Sub.Example.CO.UK today", "write to [email] today", {"email": 1}),
    ("ask bob@uni.edu.", "ask [email].", {"email": 1}),
    ("jane [at] example [dot] org", "[email]", {"email": 1}),
    ("jane(at)mail(dot)example(dot)de", "[email]", {"email": 1}),
    ("李雷 li.lei@qq.com 谢谢", "李雷 [email] 谢谢", {"email": 1}),
    # URLs
    ("see https://x.com/jane_d?x=1.", "see [url].", {"url": 1}),
    ("http://[::1]:8080/x and ftp://files.example.org/a", "[url] and [url]", {"url": 2}),
    ("my site www.janedoe.net, and janedoe.de/blog", "my site [url], and [url]", {"url": 2}),
    ("t.me/janedoe", "[url]", {"url": 1}),
    ("https://user@example.org/p", "[url]", {"url": 1}),
    # handles
    ("my insta @jane.doe_88!", "my insta [handle]!", {"handle": 1}),
    ("on mastodon @jane@mastodon.social", "on mastodon [handle]", {"handle": 1}),
    ("reddit u/janed88 and /u/other_one", "reddit [handle] and [handle]", {"handle": 2}),
    ("(@JaneD)", "([handle])", {"handle": 1}),
    # phone numbers, international and national, however they are spaced
    ("call +49 30 1234567", "call [phone]", {"phone": 1}),
    ("+44 20 7946 0958 or +55 (11) 91234-5678", "[phone] or [phone]", {"phone": 2}),
    ("(555) 123-4567", "[phone]", {"phone": 1}),
    ("555.123.4567", "[phone]", {"phone": 1}),
    ("Tel. 030/1234567", "Tel. [phone]", {"phone": 1}),
    ("电话 13812345678 微信", "电话 [phone] 微信", {"phone": 1}),
    ("ring 0171 1234567!", "ring [phone]!", {"phone": 1}),
    ("00 33 1 23 45 67 89", "[phone]", {"phone": 1}),
    # several kinds at once
    ("Jane: jane@ex.org, +1 212 555 0100, @jane, https://jane.example.org",
     "Jane: [email], [phone], [handle], [url]",
     {"email": 1, "phone": 1, "handle": 1, "url": 1}),
]

KEPT = [
    "I used it 3 hours a day in 2024, 15 times a week",
    "on 2026-03-15 it changed; 15.03.2026 too; 03/15/2026",
    "I scored 100 points and paid 12000 dollars",
    "the 4o model, GPT-4o, o3 and Claude 3.5",
    "great.It was fine. Really!",
    "my friend Zebulon Quark's homemade bot",
    "at home @ night",  # a lone @ is not a handle
    "",
]


@pytest.mark.parametrize(("text", "expected", "counts"), MASKED)
def test_contact_details_are_masked(text, expected, counts):
    masker = TextMasker()
    assert masker(text) == expected
    assert masker.report() == {"url": 0, "email": 0, "handle": 0, "phone": 0} | counts


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_is_kept(text):
    masker = TextMasker()
    assert masker(text) == text
    assert sum(masker.report().values()) == 0


CONTACT = "Jane Doe jane.doe@example.com +49 30 1234567 @janedoe https://jane.example.org"


def test_research_export_masks_free_text_and_counts_it(engine, seeder, tmp_path):
    population = populate(seeder, tmp_path)
    seeder.participant(random.Random(5), enrolled_at=START + timedelta(days=8), waves=2,
                       free_text=CONTACT, miss=0.0)
    seeder.flush()
    out = tmp_path / "research"
    result = export_panel(engine, ExportOptions(
        out=out, profile="research", dua="DUA-2026-004", include_items=True,
        include_free_text=True, key_file=population.key_file))
    for f in out.iterdir():
        content = f.read_bytes()
        for secret in (b"jane.doe@example.com", b"1234567", b"@janedoe", b"jane.example.org"):
            assert secret not in content, (f.name, secret)
    text = (out / "responses.csv").read_text("utf-8")
    assert "Jane Doe [email] [phone] [handle] [url]" in text
    assert "Zebulon Quark" in text  # nothing to mask in the fixture's other free text
    report = result.deidentification["free_text"]
    # two waves answered by the participant with contact details: two of each kind
    assert report["masked"] == {"url": 2, "email": 2, "handle": 2, "phone": 2}
    assert report["items"] == ["ai_usage.other_model_name"] and report["included"] is True
    assert "names" in report["masking"] and "may remain" in report["masking"]
    saved = json.loads((out / "datapackage.json").read_text("utf-8"))
    assert saved["wellpanel"]["deidentification"]["free_text"]["masked"] == report["masked"]
    assert saved["wellpanel"]["export"]["dua"] == "DUA-2026-004"


def test_the_cli_refuses_free_text_in_the_strict_profile(cli, small_study, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", "panel", "--out", str(out), "--items",
                                      "--free-text"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: free text is never released in the strict profile")
    assert not out.exists()


@pytest.fixture
def small_study(seeder):  # type: ignore[no-untyped-def]
    seeder.populate(6, 1, seed=2)
    seeder.flush()
    return seeder
