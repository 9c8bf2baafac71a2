"""Which addresses from study material may become links: one check for every URL-valued field.

Study files, instruments and consent documents are data written by a study team, and what they
hold ends up in ``href`` attributes of participant pages (crisis lines, help and ethics links).
A ``javascript:`` or ``data:`` address there runs script in a participant's session, so only
``https:``, ``http:`` and ``tel:`` addresses are links, checked by an allow-list (never a
block-list of bad schemes):

- at ``study load``: the JSON Schemas mark URL fields with a format (``https-url``, ``web-url``,
  ``link-url``) whose checker is :func:`url_problem`; the error names the key path;
- when rendering: the Jinja filter ``safe_href`` drops any other address, so a protocol stored
  before this check (or a field someone forgets to mark) still never becomes a script link;
- in consent documents (Markdown): links are checked at load and by the renderer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

import jsonschema

LINK_SCHEMES: tuple[str, ...] = ("https", "http", "tel")
WEB_SCHEMES: tuple[str, ...] = ("https", "http")
HTTPS_ONLY: tuple[str, ...] = ("https",)
MAX_LENGTH = 2000
# JSON Schema formats (surveys/schema/*.schema.json) -> the schemes they allow
FORMATS: dict[str, tuple[str, ...]] = {
    "https-url": HTTPS_ONLY,
    "web-url": WEB_SCHEMES,
    "link-url": LINK_SCHEMES,
}

# Browsers drop tabs and newlines inside a URL and trim spaces, which hides a scheme
# ("java\tscript:"); quotes and angle brackets only serve to break out of an attribute.
_UNSAFE_CHARACTERS = re.compile(r"[\s\"'<>\\`\x00-\x1f\x7f]")
_TEL_NUMBER = re.compile(r"\+?[0-9][0-9().\-]{0,30}")


def _names(schemes: Iterable[str]) -> str:
    return ", ".join(f"{s}:" for s in schemes)


def url_problem(value: object, schemes: Iterable[str] = LINK_SCHEMES) -> str | None:
    """Why `value` may not be a link with one of `schemes` (None when it may)."""
    allowed = tuple(schemes)
    if not isinstance(value, str) or not value:
        return "must be an address (text)"
    if len(value) > MAX_LENGTH:
        return f"is longer than {MAX_LENGTH} characters"
    if _UNSAFE_CHARACTERS.search(value):
        return "contains spaces, quotes, angle brackets or control characters"
    scheme, colon, rest = value.partition(":")
    if not colon or scheme.lower() not in allowed:
        return (f"must be an address starting with {_names(allowed)} "
                "(javascript:, data: and other schemes are refused)")
    if scheme.lower() == "tel":
        return None if _TEL_NUMBER.fullmatch(rest) else "must be tel: and a phone number"
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError as exc:  # e.g. a malformed [IPv6] host
        return f"is not a valid address ({exc})"
    if not rest.startswith("//") or not host:
        return f"must name a host ({scheme.lower()}://host/...)"
    if "@" in parts.netloc:  # https://trusted.example@elsewhere: misleading, never needed
        return "must not contain a user name or password"
    return None


def is_safe_link(value: object, schemes: Iterable[str] = LINK_SCHEMES) -> bool:
    return url_problem(value, schemes) is None


def safe_href(value: object) -> str:
    """Jinja filter ``{{ url | safe_href }}``: the address if it may be a link, else ''."""
    return value if isinstance(value, str) and is_safe_link(value) else ""


def format_problem(format_name: str, value: object) -> str:
    """A schema format error's wording: the value and why it is refused."""
    return f"{value!r}: {url_problem(value, FORMATS[format_name])}"


def format_checker() -> jsonschema.FormatChecker:
    """The JSON Schema formats of :data:`FORMATS`, each checked by :func:`url_problem`; other
    formats (e.g. date) stay annotations, as without a checker."""
    checker = jsonschema.FormatChecker(formats=())
    for name, schemes in FORMATS.items():
        checker.checks(name)(lambda value, schemes=schemes: not isinstance(value, str)
                             or is_safe_link(value, schemes))
    return checker


FORMAT_CHECKER = format_checker()
