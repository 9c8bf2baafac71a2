"""CSV cells that a spreadsheet will not run as formulas (OWASP "CSV Injection").

A participant's free text, a typed signature or a study team's label can start with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return; a spreadsheet opening the CSV would take it for
a formula (``=HYPERLINK("http://x", "click")`` leaks data when clicked, DDE formulas run
commands). As https://owasp.org/www-community/attacks/CSV_Injection recommends, every *text*
cell that starts with one of these characters gets a single quote in front, and text cells are
written in double quotes (so a ``,`` or ``;`` inside cannot start a new cell in a spreadsheet
that splits on either). Numbers stay numbers: a negative score or day is written as is, since
only text cells are neutralized. A text that already starts with quotes before such a
character gets one more, so the change can be undone exactly (:func:`restore`; the analysis
package's CSV reader does it).

Every CSV the platform writes goes through here: the research export (Arrow, column-wise:
:func:`neutralize_text_array`), the participant's own-data download and the IRB CSVs (the
standard csv module: :func:`writer` / :class:`DictWriter`, or :func:`neutralize` per cell). A
reader who needs the original text removes the first quote from a text cell that starts with
quotes followed by one of the characters (the export's codebook says so).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PREFIX = "'"
# what gets the prefix: a formula character, after any quotes (so that restore() is exact)
_NEEDS_PREFIX = re.compile(r"'*[=+\-@\t\r]")
_NEEDS_PREFIX_RE2 = r"^('*[=+\-@\t\r])"  # the same for Arrow (RE2)
_PREFIXED = re.compile(r"''*[=+\-@\t\r]")
CODEBOOK_NOTE = (
    "CSV files: a text cell whose text starts with =, +, -, @, a tab or a carriage return has a "
    "single quote (') put in front of it, so that spreadsheet programs do not run it as a "
    "formula (OWASP CSV injection). Numbers are never changed (a negative number stays "
    "negative); a text starting with quotes before one of those characters gets one more "
    "quote. To get the original text, remove the first character of a text cell that starts "
    "with ' and, after any further quotes, one of those characters (the analysis package's "
    "reader does this). Parquet, SPSS and Stata files hold the text unchanged."
)


def neutralize(value: Any) -> Any:
    """The value, with a quote in front if it is text that starts like a formula."""
    if isinstance(value, str) and _NEEDS_PREFIX.match(value):
        return PREFIX + value
    return value


def restore(text: str) -> str:
    """The text as it was before :func:`neutralize`."""
    return text[1:] if _PREFIXED.match(text) else text


def neutralize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: neutralize(value) for key, value in row.items()}


def neutralize_text_array(values: Any) -> Any:
    """An Arrow string array (or chunked array) with every formula-like cell quoted; missing
    values stay missing. Vectorized: exports write millions of cells."""
    import pyarrow.compute as pc

    return pc.replace_substring_regex(values, pattern=_NEEDS_PREFIX_RE2,
                                      replacement=PREFIX + r"\1")


class _NeutralizingWriter:
    """A csv.writer whose text cells are neutralized and quoted; numbers are left unquoted."""

    def __init__(self, out: Any, **options: Any) -> None:
        self._writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([neutralize(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(out: Any, **options: Any) -> _NeutralizingWriter:
    return _NeutralizingWriter(out, **options)


class DictWriter(csv.DictWriter):
    """csv.DictWriter whose text cells are neutralized and quoted (numbers unquoted)."""

    def __init__(self, out: Any, fieldnames: Iterable[str], **options: Any) -> None:
        options.setdefault("quoting", csv.QUOTE_NONNUMERIC)
        super().__init__(out, fieldnames, **options)

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow(neutralize_row(rowdict))

    def writerows(self, rowdicts: Iterable[Mapping[str, Any]]) -> None:
        for row in rowdicts:
            self.writerow(row)
