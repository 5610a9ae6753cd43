"""One record of a collection file: its error type, the document type and the per-line validators.

Shared by :mod:`retrodistill.data.collections` (queries, qrels) and :mod:`retrodistill.data.corpus`
(the Arrow corpus cache), so that a file gives the same ``FILE:LINE: problem`` messages whichever
reads it. Line numbers count every line of the file (blank ones too), starting at 1, with Python's
universal newlines (``\\n``, ``\\r\\n`` and a lone ``\\r`` each end a line). A UTF-8 byte-order mark
at the start of a file is dropped; a byte that is not UTF-8 is a ``FILE:LINE`` error too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

#: The characters ``str.isspace`` accepts (Python 3.11), as an RE2 character class body: Arrow's
#: regex ``\s`` is ASCII-only, and ``str.strip`` is the rule the loaders have always followed.
PY_WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and line."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Document:
    title: str
    text: str

    def joined(self) -> str:
        """Title and text as one passage, the way BEIR and MTEB feed them to an encoder."""
        return f"{self.title} {self.text}".strip()


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for non-blank lines, stripped of the line ending (CRLF too).

    A UTF-8 byte-order mark at the start of the file is dropped (Windows editors write one); a
    ``.gz`` file is decompressed. A byte that is not UTF-8 raises :class:`DataFormatError` naming its
    line, instead of a bare ``UnicodeDecodeError``.

    Raises:
        DataFormatError: the file is not UTF-8 text.
    """
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError:
        # The decoder's offset is within a buffered block, not the file: read again to find the line.
        raise not_utf8_error(path) from None


def _open_text(path: Path, errors: str = "strict") -> TextIO:
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="utf-8-sig", errors=errors)
    return open(path, encoding="utf-8-sig", errors=errors)


def not_utf8_error(path: Path) -> DataFormatError:
    """The :class:`DataFormatError` for a file that does not decode as UTF-8, naming the first bad line."""
    with _open_text(path, errors="surrogateescape") as f:
        for number, line in enumerate(f, start=1):
            # surrogateescape maps each undecodable byte b to the lone surrogate U+DC00 + b, which
            # strict encoding refuses: a C-speed search, even for a bad byte deep in a 3 GB corpus.
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as err:
                byte = ord(line[err.start]) - 0xDC00
                return DataFormatError(
                    path, number, f"not UTF-8 text: byte 0x{byte:02x} at column {err.start + 1}; save the file as UTF-8"
                )
    return DataFormatError(path, None, "not UTF-8 text; save the file as UTF-8")


def parse_json_record(path: Path, number: int, line: str, fields: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Parse one BEIR JSONL line into ``(_id, {field: value})``; missing or null fields read as ``""``.

    An integer ``_id`` is read as its decimal string (some corpora write them so); any other
    non-string ``_id``, an empty one, or a non-string field is a :class:`DataFormatError`.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFormatError(path, number, f"malformed JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, number, f"expected a JSON object, got {type(obj).__name__}")
    if "_id" not in obj:
        raise DataFormatError(path, number, "record has no '_id'")
    record_id = obj["_id"]
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        record_id = str(record_id)
    if not isinstance(record_id, str) or not record_id:
        raise DataFormatError(path, number, f"'_id' must be a non-empty string, got {obj['_id']!r}")
    values = {}
    for name in fields:
        value = obj.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise DataFormatError(path, number, f"{name!r} must be a string, got {type(value).__name__}")
        values[name] = value
    return record_id, values


def parse_tsv_record(path: Path, number: int, line: str) -> tuple[str, str]:
    """Parse one ``id<TAB>text`` line; both are stripped, and further tabs belong to the text."""
    parts = line.split("\t")
    if len(parts) < 2 or not parts[0].strip():
        raise DataFormatError(path, number, "expected 'id<TAB>text'")
    return parts[0].strip(), "\t".join(parts[1:]).strip()


def duplicate_problem(kind: str, record_id: str, first_line: int) -> str:
    """The message for a repeated id: ``kind`` is ``"_id"`` (JSONL) or ``"id"`` (TSV)."""
    return f"duplicate {kind} {record_id!r} (first seen on line {first_line})"
