"""A CSV reader that fails one record, not the whole file.

polars reads a well-formed manifest fast but refuses the whole file over one ragged row, one
unterminated quote or one byte that is not UTF-8; it cannot say which line, nor go on. When it
refuses, `read_csv_rows` reads the file again with Python's `csv` module, record by record: a
record it cannot read becomes a row with a problem naming its line, and reading goes on after it.

Its rows line up with what polars would have made of the good records (a blank line is a row of
empty cells, a record with fewer fields has its last cells empty), so a row keeps its number, and
its default id, whichever reader read it.
"""

from __future__ import annotations

import csv
import io
import itertools

from ..errors import UsageError

BOM = b"\xef\xbb\xbf"


def read_csv_rows(data: bytes, separator: str, name: str
                  ) -> tuple[list[str], list[list[str | None]], list[str | None]]:
    """(header, records with one cell per header column, a problem per record or None).

    A problem reads `kind: line N: what`; kinds: `malformed_row` (more fields than the header, a
    quote that never closes, text after a closing quote), `not_utf8`. UsageError when the header
    itself cannot be read."""
    lines, undecodable = _decoded_lines(data.removeprefix(BOM))
    if not lines:
        raise UsageError(f"cannot read manifest {name}: the file is empty")
    try:
        header = next(csv.reader([lines[0]], delimiter=separator, strict=True))
    except (csv.Error, StopIteration) as exc:
        raise UsageError(f"cannot read manifest {name}: its header (line 1) is not CSV text ({exc})") from None
    if 0 in undecodable or any(not c.isprintable() for c in "".join(header)):
        raise UsageError(f"cannot read manifest {name}: its header (line 1) is not CSV text")
    width = len(header)
    records: list[list[str | None]] = []
    problems: dict[int, str] = {}  # record index -> problem

    def fail(cells: list[str], problem: str) -> None:
        problems[len(records)] = problem
        records.append(cells[:width] + [None] * (width - len(cells)))

    start = 1  # index of the line the next record starts on (0: the header)
    while start < len(lines):
        reader = csv.reader(itertools.islice(lines, start, None), delimiter=separator, strict=True)
        first = start  # the line the record being read starts on
        try:
            for cells in reader:
                end = start + reader.line_num  # one past its last line
                if len(cells) == width and end == first + 1 and first not in undecodable:
                    records.append(cells)  # the common case, kept lean: one line, every field
                elif len(cells) > width and end > first + 1:
                    # a stray quote swallowed the lines after it: fail its line alone, read on after it
                    fail([], f"malformed_row: line {first + 1}: a quote opens a field that does not close "
                             "where the row ends")
                    end = first + 1
                    break
                elif bad := [i for i in range(first, end) if i in undecodable]:
                    fail(cells, f"not_utf8: line {bad[0] + 1}: {undecodable[bad[0]]} is not UTF-8 text "
                                "(save the manifest as UTF-8)")
                elif len(cells) > width:
                    fail(cells, f"malformed_row: line {first + 1}: {len(cells)} fields, the header has {width}")
                else:  # fewer fields (a blank line: none): the last cells are empty, as in polars
                    records.append(cells + [None] * (width - len(cells)))
                first = end
            else:
                end = len(lines)
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                why = "a quote opens a field that never closes"
            elif start + reader.line_num > first + 1:  # the error came lines after the record began
                why = "a quote opens a field that does not close where the row ends"
            else:
                why = f"not readable as CSV ({exc})"
            fail([], f"malformed_row: line {first + 1}: {why}")
            end = first + 1
        start = end
    return header, records, [problems.get(i) for i in range(len(records))]


def _decoded_lines(data: bytes) -> tuple[list[str], dict[int, str]]:
    """The file's lines as text (line ends kept), and {line index: the first byte that is not UTF-8}.
    Lines end at \n, \r or \r\n, as for the csv module (str.splitlines would also split at
    characters a prompt may hold)."""
    try:
        return io.StringIO(data.decode("utf-8"), newline="").readlines(), {}
    except UnicodeDecodeError:
        pass
    lines, undecodable = [], {}
    for i, raw in enumerate(data.splitlines(keepends=True)):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            undecodable[i] = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
            lines.append(raw.decode("utf-8", errors="replace"))
    return lines, undecodable
