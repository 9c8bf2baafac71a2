"""Defence in depth for study-file addresses (#13 part 6): a template never puts a stored address
into a link without the `safe_href` filter, and a protocol stored before the load-time check with
a javascript: or data: address shows no such link on the help page."""

from __future__ import annotations

import copy
import re
from pathlib import Path

from sqlmodel import col, select

from app.studies import crisis
from app.studies.models import ProtocolVersion, Study
from app.web.common import TEMPLATES
from tests.support.flows import STUDY

TEMPLATE_DIR = Path(__file__).resolve().parents[3] / "app" / "web" / "templates"
URL_ATTRIBUTES = re.compile(r'\b(href|src|action|formaction|poster|srcset)="([^"]*)"')
# Attribute values the server builds itself (routes, not study material), by variable name.
SERVER_BUILT = {
    "request.url.path": "the page's own path (the language switch form)",
    "next_url": "the survey route's next page (/p/...)",
    "home": "/p or /join/<study> from the route",
    "join_url": "/join/<default study> from the settings",
    "path": "the staff console's own navigation table (console_common)",
    "email_stopped_page": "/p/unsubscribe/<token> from app/notify/unsubscribe.py (settings page)",
}


def _attribute_values() -> list[tuple[str, str, str]]:
    found = []
    for template in sorted(TEMPLATE_DIR.rglob("*.html")):
        text = template.read_text("utf-8")
        for match in URL_ATTRIBUTES.finditer(text):
            found.append((template.name, match.group(2), text))
    return found


def test_no_template_renders_a_stored_address_into_a_link_without_the_check() -> None:
    """A value that starts the attribute decides the scheme: it must be checked by safe_href
    (directly, or set from it in the same template) or be built by the server."""
    starting_with_expression = 0
    for name, value, text in _attribute_values():
        head = re.match(r"\{\{\s*(.*?)\s*\}\}", value)
        if head is None:
            # literal start (/, ?, #, tel:): the template fixes the scheme
            assert not value.lstrip().lower().startswith(("javascript", "data:")), (name, value)
            continue
        starting_with_expression += 1
        expression = head.group(1)
        if "| safe_href" in expression:
            continue
        set_from_filter = re.search(rf"set {re.escape(expression)} = [^%]*\| safe_href", text)
        assert set_from_filter or expression in SERVER_BUILT, (
            f"{name}: {value!r} puts {expression!r} into a link without `| safe_href`")
    assert starting_with_expression >= 5


def test_the_filter_is_registered_and_drops_other_schemes() -> None:
    env = TEMPLATES.env
    render = env.from_string('<a href="{{ u | safe_href }}">x</a>').render
    assert render(u="https://988lifeline.org") == '<a href="https://988lifeline.org">x</a>'
    assert render(u="tel:+49800111") == '<a href="tel:+49800111">x</a>'
    for bad in ["javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,x", "vbscript:x",
                "//evil.example", "https://a.example/\"onclick=x", None, 42]:
        assert render(u=bad) == '<a href="">x</a>', bad


def test_a_stored_script_address_is_never_a_link_on_the_help_page(client, session) -> None:  # type: ignore[no-untyped-def]
    """As if the protocol had been stored before study load checked addresses."""
    study = session.exec(select(Study).where(Study.key == STUDY)).one()
    latest = session.exec(select(ProtocolVersion).where(ProtocolVersion.study_id == study.id)
                          .order_by(col(ProtocolVersion.version).desc())).first()
    content = copy.deepcopy(latest.content)
    crisis = content["study"]["crisis_resources"]
    crisis["directory"][0]["url"] = "javascript:alert(document.cookie)"
    crisis["countries"]["de"]["lines"][0]["url"] = "data:text/html,<script>alert(1)</script>"
    latest.content = content
    session.add(latest)
    session.commit()

    page = client.get("/help?lang=de")
    assert page.status_code == 200
    hrefs = re.findall(r'href="([^"]*)"', page.text)
    assert hrefs and not [h for h in hrefs if h.lower().startswith(("javascript", "data"))]
    assert 'href=""' not in page.text  # a refused address gives no link at all, not an empty one
    assert "https://www.telefonseelsorge.de" not in hrefs  # the line's refused address is gone
    # ... while the line itself (name, phone) is still shown, and other lines keep their links
    assert "tel:08001110111" in hrefs
    assert "https://www.iasp.info/crisis-centres-helplines/" in hrefs


def test_a_stored_script_address_is_dropped_from_the_crisis_lines_the_api_lists_too() -> None:
    config = {"countries": {"de": {"emergency": [{"number": "112"}], "lines": [
        {"name": {"en": "Line"}, "phone": "0800 111 0 111", "url": "javascript:alert(1)",
         "hours": "24/7"},
        {"name": {"en": "Web"}, "url": "https://www.telefonseelsorge.de", "hours": "24/7"}]}},
        "directory": [{"name": {"en": "Directory"}, "url": "data:text/html,x"}]}
    found = crisis.crisis_help(config, "de", "en")
    assert found.country is not None
    assert [(line.name, line.phone, line.url) for line in found.country.lines] == [
        ("Line", "0800 111 0 111", None), ("Web", None, "https://www.telefonseelsorge.de")]
    assert [line.url for line in found.directory] == [None]
