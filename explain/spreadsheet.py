"""CSV files that a spreadsheet opens as data, never as formulas.

A cell that begins with "=", "+", "-", "@", a tab or a carriage return is
read by Excel, LibreOffice and Google Sheets as a formula, so a file name
such as `=HYPERLINK("http://evil.example","click").jpg` or a class named
`=1+2` would run when the CSV is opened (OWASP's "CSV injection"). Every
text cell Descry writes to a CSV goes through `safe_cell`, which puts a
single quote in front of such a cell, as OWASP advises; numbers are
written as numbers and left alone. Parquet, JSON and FiftyOne keep the
raw strings.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """A text cell that cannot start a formula; anything that is not text, unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_rows(handle, columns: list[str], rows: Iterable[Mapping[str, object]]) -> None:
    """A header and the rows, every text cell made safe."""
    writer = csv.DictWriter(handle, fieldnames=columns)
    writer.writeheader()
    writer.writerows({key: safe_cell(value) for key, value in row.items()} for row in rows)
