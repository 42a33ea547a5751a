"""The text files of ``lines`` and ``csv`` axes (docs/manifest.md): decoded and split into rows.

Encoding: the one set (``encoding:``), else from a BOM (UTF-8, UTF-16, UTF-32), else UTF-8.
Bytes that do not decode are reported with the line they are on. CSV dialect: the delimiter
and quote character set, else detected by ``csv.Sniffer`` on the first ``SNIFF_CHARS``
characters, the delimiter among ``DELIMITERS`` (a delimiter the header row does not contain
is not one: the file then has one column, read with ``,``). Every row keeps its line number
(where its record starts), so problems with it read ``file:line: ...``.

Each function returns its result or the text of the problem (for the caller to report).
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass

DELIMITERS = ",;\t|"
SNIFF_CHARS = 4096  # about 0.4 s at worst
ENCODING_HINT = "set `encoding:` on the axis (e.g. cp1252 or latin-1)"

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True, slots=True)
class Table:
    """A CSV file's rows as mappings (header -> text), each with its first line number."""

    header: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, str]], ...]
    delimiter: str


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with a file (a ``str`` result would be ambiguous with text)."""

    message: str


def check_encoding(encoding: str) -> str | None:
    """Why ``encoding`` cannot be used, or None."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        return f"unknown encoding {encoding!r}"
    try:
        b"a".decode(encoding)
    except LookupError:
        return f"{encoding!r} is not a text encoding"
    except UnicodeDecodeError:
        pass  # a text encoding in which one "a" byte is not a whole character
    return None


def decode(content: bytes, file: str, encoding: str | None) -> str | Problem:
    """The text of ``content``: with ``encoding``, else by its BOM, else as UTF-8."""
    chosen = encoding
    if chosen is None:
        chosen = next((name for bom, name in _BOMS if content.startswith(bom)), "utf-8")
    elif codecs.lookup(chosen).name == "utf-8" and content.startswith(codecs.BOM_UTF8):
        chosen = "utf-8-sig"
    try:
        return content.decode(chosen)
    except UnicodeDecodeError as exc:
        line = content[: exc.start].decode(chosen, errors="replace").count("\n") + 1
        shown = "UTF-8" if chosen in ("utf-8", "utf-8-sig") else chosen
        bad = content[exc.start : exc.start + 1].hex()
        hint = f"; {ENCODING_HINT}" if encoding is None else ""
        return Problem(f"{file}:{line}: not valid {shown} text (byte 0x{bad}: {exc.reason}){hint}")


def lines_of(text: str, file: str) -> list[tuple[int, str]] | str:
    """The non-blank lines of ``text``, stripped, with their line numbers."""
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
    values = [(n, line) for n, line in lines if line]
    return values or f"{file} has no non-blank lines"


def sniff(text: str, delimiters: str = DELIMITERS) -> tuple[str, str]:
    """The delimiter (among ``delimiters``) and quote character of ``text``: ``,`` and ``"``
    when they are not clear. ``csv.Sniffer`` takes time quadratic in its sample on some
    inputs, hence the small ``SNIFF_CHARS``."""
    sample = text[:SNIFF_CHARS]
    if len(text) > SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    header = next((line for line in sample.splitlines() if line.strip()), "")
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=delimiters)
    except csv.Error:
        return ",", '"'
    delimiter = dialect.delimiter if dialect.delimiter in header else ","
    return delimiter, "'" if dialect.quotechar == "'" else '"'


def table_of(
    text: str, file: str, *, delimiter: str | None = None, quotechar: str | None = None
) -> Table | str:
    """The header and rows of the CSV ``text`` (dialect set or detected)."""
    sniffed = sniff(text, delimiter or DELIMITERS) if not (delimiter and quotechar) else ("", "")
    used = delimiter or sniffed[0]
    quote = quotechar or sniffed[1]
    if used in "\r\n" or used == quote:
        return f"delimiter {used!r} cannot be used (with quote character {quote!r})"
    dialect = f"delimiter {used!r}" + ("" if delimiter else " detected")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=used, quotechar=quote)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for record in reader:
            if any(cell.strip() for cell in record):
                records.append((start, record))
            start = reader.line_num + 1
    except csv.Error as exc:
        return f"{file}:{reader.line_num}: invalid CSV ({dialect}): {exc}"
    if not records:
        return f"{file} is empty: expected a header row and at least one row"
    header_line, raw_header = records[0]
    header = tuple(h.strip() for h in raw_header)
    if any(not h for h in header) or len(set(header)) != len(header):
        return f"{file}:{header_line}: the header row needs unique, non-empty column names"
    rows: list[tuple[int, dict[str, str]]] = []
    wrong = [(n, record) for n, record in records[1:] if len(record) != len(header)]
    if wrong:
        number, record = wrong[0]
        more = f"; {len(wrong) - 1} more row(s) like it" if len(wrong) > 1 else ""
        hint = "" if delimiter else ": set `delimiter:` if that is wrong"
        return (
            f"{file}:{number}: expected {len(header)} fields, found {len(record)} "
            f"({dialect}{hint}){more}"
        )
    for number, record in records[1:]:
        rows.append((number, dict(zip(header, record, strict=True))))
    if not rows:
        return f"{file} has a header row but no rows"
    return Table(header=header, rows=tuple(rows), delimiter=used)
