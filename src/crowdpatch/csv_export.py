"""CSV files a requester opens in a spreadsheet, with what workers typed kept from running as formulas.

Workers choose some of what an export holds (their worker id, a client id, the answer's JSON). A
spreadsheet reads a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula, and one that
starts with a tab or a carriage return may be read the same way after it is trimmed, so a worker id
such as ``=cmd|' /C calc'!A0`` would run when the requester opens the file. Following OWASP's rule
for CSV injection, such a text cell is written behind a single quote (``'=cmd|...``), which makes a
spreadsheet show it as text. Numbers the program writes (a negative number of seconds, say) are not
text and are written as they are, so they stay numbers. The exports a requester opens (``answers.csv``,
the workers table) are written through this module.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import IO, Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a text cell as a formula."""


def safe_cell(value: Any) -> Any:
    """``value``, or a text that a spreadsheet would read as a formula behind a single quote."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeWriter:
    """``csv.writer`` whose text cells pass :func:`safe_cell` first."""

    def __init__(self, stream: IO[str], **options: Any):
        self._writer = csv.writer(stream, **options)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def write_frame(frame: pd.DataFrame, path: Any) -> None:
    """``frame.to_csv(path, index=False)`` with its text cells (and column names) passed through :func:`safe_cell`.

    Lines end in CRLF, as ``csv.writer``'s do (RFC 4180): only then is a cell holding a lone carriage
    return quoted, instead of ending its line early.
    """
    safe = frame.map(safe_cell)
    safe.columns = [safe_cell(column) for column in frame.columns]
    safe.to_csv(path, index=False, lineterminator="\r\n")
