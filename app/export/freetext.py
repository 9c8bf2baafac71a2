"""Masking contact details in free-text answers before a research export releases them.

Free text leaves the server only in the research profile, under a data-use agreement, and only
after :class:`TextMasker` replaced what would let a reader contact or look up the participant:

- ``[url]``: web addresses, with a scheme (``https://``, ``ftp://``...), starting ``www.``, or
  a bare domain with a common top-level domain (``example.com/x``, ``t.me/name``);
- ``[email]``: e-mail addresses, also written ``name [at] host [dot] org``;
- ``[handle]``: social-media handles (``@name``, ``@name@instance.social``, ``u/name``);
- ``[phone]``: phone numbers, found by Google's libphonenumber (the ``phonenumbers`` package)
  as valid international numbers or national numbers of common regions, and any other run of
  seven or more digits written like a phone number; never fewer than seven digits (years,
  hours, counts stay) and never a date.

URLs go first (they may hold an @), then fediverse handles (``@a@b.social``, which look like
e-mail), then e-mail addresses (before handles, which they contain), then handles, then phone
numbers. The masker counts what it replaced, per kind, for the
de-identification report. Names and places written in prose are not found: the report says so.
"""

from __future__ import annotations

import re
from collections import Counter

import phonenumbers

KINDS = ("url", "email", "handle", "phone")
# regions whose national formats libphonenumber tries on numbers written without a +
PHONE_REGIONS = ("US", "GB", "DE", "BR", "CN", "FR", "IN", "JP", "AU", "CA")
MIN_PHONE_DIGITS = 7

_TLDS = (
    "com|org|net|edu|gov|int|mil|info|biz|io|ai|app|dev|me|co|ly|gg|tv|xyz|site|online|link|"
    "page|blog|chat|social|club|news|shop|store|tech|cloud|art|fm|to|so|sh|cc|ws|bio|"
    "de|uk|br|cn|jp|fr|es|it|nl|ru|in|au|ca|us|eu|be|ch|at|pl|se|no|dk|fi|pt|ie|kr|tw|hk|"
    "sg|nz|mx|ar|cl|za|tr|gr|cz|hu|ro|il|ua|vn|th|id|my|ph|pk|ng|ke|eg|sa|ae"
)
_URL = re.compile(
    r"(?:\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s<>\"']+"  # any scheme
    r"|\bwww\.[^\s<>\"']+"
    # a bare domain: lower-case top-level domain (so "great.It was" is a sentence, not a site);
    # not the host of an e-mail address or a fediverse handle (they are masked whole)
    rf"|(?<![@\w.-])(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)+(?:{_TLDS})\b(?:[/?#][^\s<>\"']*)?)",
)
_EMAIL = re.compile(
    r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|[\w.%+-]+\s*[\[({<]\s*at\s*[\])}>]\s*[\w-]+(?:\s*[\[({<]\s*dot\s*[\])}>]\s*[\w-]+)+",
    re.IGNORECASE,
)
_FEDIVERSE = re.compile(r"(?<![\w@./])@[A-Za-z0-9_.]+@[\w-]+(?:\.[\w-]+)+")
_HANDLE = re.compile(
    r"(?<![\w@./])@[A-Za-z0-9_](?:[A-Za-z0-9_.]*[A-Za-z0-9_])?"
    r"|(?<![\w/])/?u/[A-Za-z0-9_-]{3,20}\b"
)
# phone-like: digits with spaces, dots, dashes, slashes or parentheses between them
_DIGITS = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().\-/]{5,}\d(?!\w)")
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_TRAILING = ".,;:!?)]}'\""


class TextMasker:
    """Masks contact details in free text; ``counts`` has what was masked, per kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter({k: 0 for k in KINDS})

    def __call__(self, text: str) -> str:
        text = self._sub(_URL, "url", text, strip_trailing=True)
        text = self._sub(_FEDIVERSE, "handle", text)  # @name@host, before it looks like mail
        text = self._sub(_EMAIL, "email", text)
        text = self._sub(_HANDLE, "handle", text)
        return self._phones(text)

    def report(self) -> dict[str, int]:
        return {k: self.counts[k] for k in KINDS}

    def _sub(self, pattern: re.Pattern[str], kind: str, text: str, *,
             strip_trailing: bool = False) -> str:
        def replace(m: re.Match[str]) -> str:
            found = m.group(0)
            tail = ""
            if strip_trailing:  # "see example.com." keeps its full stop
                core = found.rstrip(_TRAILING)
                tail = found[len(core):]
            self.counts[kind] += 1
            return f"[{kind}]{tail}"

        return pattern.sub(replace, text)

    def _phones(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        for region in PHONE_REGIONS:
            for match in phonenumbers.PhoneNumberMatcher(text, region):  # valid numbers
                spans.append((match.start, match.end))
        spans += [(m.start(), m.end()) for m in _DIGITS.finditer(text)]
        merged = _merge([(a, b) for a, b in spans if _phone_like(text[a:b])])
        for start, end in reversed(merged):
            text = text[:start] + "[phone]" + text[end:]
        self.counts["phone"] += len(merged)
        return text


def _phone_like(found: str) -> bool:
    """Seven digits or more and not a date: years, counts and hours stay."""
    return (sum(c.isdigit() for c in found) >= MIN_PHONE_DIGITS
            and not _DATE.fullmatch(found.strip()))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching spans as one (the same number found by several regions)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
