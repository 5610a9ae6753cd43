"""Convert a corpus file (BEIR ``corpus.jsonl`` or MS MARCO ``collection.tsv``) into Arrow, once.

:func:`convert` writes into a staging folder the files that :mod:`retrodistill.data.corpus` maps:
``corpus.arrow`` (an uncompressed Arrow IPC file, columns ``_id``, ``title``, ``text``, in file
order, record batches of about 100k rows) and the id index of :mod:`retrodistill.data.id_index`.

Two readers give the same table. The fast one is pyarrow's streaming JSON / CSV reader; while it
runs, a second thread hashes the source (its fingerprint, the same ``sha256_file`` value the
loaders always gave) and counts its lines. The fast result is kept only if pyarrow raised nothing,
every ``_id`` is a non-empty string, every value is valid UTF-8, the file has no byte-order mark and
pyarrow found as many records as the file has lines (so blank lines, two records on a line, a stray
``\\r``, a byte that is not UTF-8 or a BOM all take the slow reader, which drops a BOM). Otherwise
the slow reader, a Python loop over lines with the validators of :mod:`retrodistill.data.records`,
converts the file or raises the ``FILE:LINE: problem`` that the loaders have always raised. Both
write batch by batch: memory does not grow with the corpus beyond the id index, which is built last
from the memory-mapped table.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrodistill.data.id_index import IdIndex, InvalidIdError
from retrodistill.data.records import (
    PY_WHITESPACE,
    DataFormatError,
    duplicate_problem,
    iter_lines,
    parse_json_record,
    parse_tsv_record,
)

if TYPE_CHECKING:
    import pyarrow as pa

#: What a corpus file holds: ``beir`` for ``corpus.jsonl``, ``msmarco`` for ``collection.tsv``.
KINDS = ("beir", "msmarco")
TABLE_FILE = "corpus.arrow"
_BATCH_ROWS = 100_000
# pyarrow parses a few blocks at once and needs several times a block's size for each: on 1M passages
# 4 MiB blocks peaked at ~400 MB RSS, 32 MiB ones at ~780 MB, for about the same wall time on 2 cores.
_BLOCK_BYTES = 4 << 20
_NON_SPACE = f"[^{PY_WHITESPACE}]"
_SPACE = f"[{PY_WHITESPACE}]"


class _UseSlowReader(Exception):
    """The fast reader cannot vouch for this file; the Python reader decides."""


@dataclass
class Converted:
    """What :func:`convert` learned about the source while writing ``TABLE_FILE`` and the index."""

    fingerprint: str
    documents: int
    empty_documents: int
    id_width: int
    reader: str  # "pyarrow" or "python"


def schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("_id", pa.string()), ("title", pa.string()), ("text", pa.string())])


def convert(source: Path, kind: str, staging: Path) -> Converted:
    """Write ``staging/corpus.arrow`` and the id index for ``source``; raise :class:`DataFormatError` if malformed."""
    import pyarrow as pa
    import pyarrow.ipc

    if kind not in KINDS:
        raise ValueError(f"unknown corpus kind {kind!r}; expected one of {', '.join(KINDS)}")
    table_path = staging / TABLE_FILE
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="corpus-scan") as pool:
        scan = pool.submit(_scan, source, stop)
        try:
            row_lines: np.ndarray | None = None  # None: row i is on line i + 1 (no blank lines)
            try:
                rows, empty = _write(table_path, lambda: _fast_batches(source, kind))
                fingerprint, lines, bom = scan.result()
                reader = "pyarrow" if rows == lines and not bom else "python"
            except (_UseSlowReader, pa.ArrowException):
                reader = "python"
            if reader == "python":
                line_numbers: list[np.ndarray] = []
                rows, empty = _write(table_path, lambda: _slow_batches(source, kind, line_numbers))
                row_lines = np.concatenate(line_numbers)
                fingerprint, lines, bom = scan.result()
        finally:
            stop.set()  # a DataFormatError need not wait for the hash of the whole file

    def line_of(row: int) -> int:
        return row + 1 if row_lines is None else int(row_lines[row])

    with pa.memory_map(str(table_path)) as mapped:
        ids = pa.ipc.open_file(mapped).read_all().column("_id")
        try:
            index = IdIndex.build(ids)
        except InvalidIdError as err:
            raise DataFormatError(source, line_of(err.row), err.problem) from None
        duplicate = index.first_duplicate()
        if duplicate is not None:
            row, first_row = duplicate
            problem = duplicate_problem(_ID_WORD[kind], ids[row].as_py(), line_of(first_row))
            raise DataFormatError(source, line_of(row), problem)
        del ids
    index.save(staging)
    return Converted(fingerprint, rows, empty, index.width, reader)


_ID_WORD = {"beir": "_id", "msmarco": "id"}


def _write(table_path: Path, batches: Callable[[], Any]) -> tuple[int, int]:
    """Stream record batches into an uncompressed Arrow IPC file; return ``(rows, empty documents)``.

    Small batches are concatenated up to ``_BATCH_ROWS`` rows, so the table has few chunks whatever
    block size the reader used.
    """
    import pyarrow as pa
    import pyarrow.ipc

    rows = empty = 0
    pending: list[pa.RecordBatch] = []
    options = pa.ipc.IpcWriteOptions(compression=None)
    with pa.OSFile(str(table_path), "wb") as sink, pa.ipc.new_file(sink, schema(), options=options) as writer:
        for batch in batches():
            pending.append(batch)
            rows += batch.num_rows
            empty += _count_empty(batch)
            if sum(b.num_rows for b in pending) >= _BATCH_ROWS:
                writer.write_batch(pa.concat_batches(pending))
                pending.clear()
        if pending:
            writer.write_batch(pa.concat_batches(pending))
    return rows, empty


def _count_empty(batch: pa.RecordBatch) -> int:
    """Documents whose ``Document.joined()`` is empty: only whitespace (as ``str.isspace`` has it) or nothing."""
    import pyarrow.compute as pc

    title, text = batch.column("title"), batch.column("text")
    # The regex only narrows the candidates; Python's strip() has the last word on each.
    maybe = pc.invert(pc.or_(pc.match_substring_regex(title, _NON_SPACE), pc.match_substring_regex(text, _NON_SPACE)))
    titles, texts = title.filter(maybe).to_pylist(), text.filter(maybe).to_pylist()
    return sum(1 for t, x in zip(titles, texts, strict=True) if not f"{t} {x}".strip())


def _fast_batches(source: Path, kind: str) -> Any:
    """Record batches of ``schema()`` from pyarrow's readers; raise :class:`_UseSlowReader` on doubt."""
    import pyarrow as pa
    import pyarrow.compute as pc

    reader: Any
    if kind == "beir":
        import pyarrow.json as pj

        reader = pj.open_json(
            source,
            read_options=pj.ReadOptions(block_size=_BLOCK_BYTES),
            parse_options=pj.ParseOptions(explicit_schema=schema(), unexpected_field_behavior="ignore"),
        )
    else:
        import pyarrow.csv as pcsv

        reader = pcsv.open_csv(
            source,
            read_options=pcsv.ReadOptions(column_names=["_id", "text"], block_size=_BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False),
            convert_options=pcsv.ConvertOptions(
                column_types={"_id": pa.string(), "text": pa.string()}, strings_can_be_null=False
            ),
        )
    for batch in reader:
        ids = batch.column("_id")
        if kind == "beir":
            title, text = pc.fill_null(batch.column("title"), ""), pc.fill_null(batch.column("text"), "")
        else:
            ids, text = _py_strip(ids), _py_strip(batch.column("text"))
            title = pa.repeat("", len(ids)) if len(ids) else pa.array([], pa.string())
        if ids.null_count or pc.any(pc.equal(pc.binary_length(ids), 0)).as_py():
            raise _UseSlowReader
        if kind == "beir":
            # pyarrow's JSON reader copies string bytes unchecked (its CSV reader checks them): a byte
            # that is not UTF-8 must reach the Python reader, which names its line (~6 GB/s to check).
            for column in (ids, title, text):
                column.validate(full=True)
        yield pa.record_batch([ids, title, text], schema=schema())


def _py_strip(column: pa.Array) -> pa.Array:
    """``str.strip()`` on every value, in Python only for the values that start or end with whitespace."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # The first and last characters, cut out, are tested twice as fast as "^\s|\s$" over whole passages.
    first, last = pc.utf8_slice_codeunits(column, 0, 1), pc.utf8_slice_codeunits(column, -1)
    edge = pc.or_(pc.match_substring_regex(first, _SPACE), pc.match_substring_regex(last, _SPACE))
    if not pc.any(edge).as_py():
        return column
    values = column.to_pylist()
    for i in np.flatnonzero(edge.to_numpy(zero_copy_only=False)):
        values[i] = values[i].strip()
    return pa.array(values, pa.string())


def _slow_batches(source: Path, kind: str, line_numbers: list[np.ndarray]) -> Any:
    """Record batches from a Python loop over lines; raise the first problem in file order.

    Duplicates are found from the ids read so far when another problem turns up (or at the end, by
    :func:`convert`), so no dict of all ids is held; ``line_numbers`` receives each row's line.
    """
    import pyarrow as pa

    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    lines: list[int] = []
    seen: list[pa.Array] = []

    def flush() -> pa.RecordBatch:
        id_array = pa.array(ids, pa.string())
        seen.append(id_array)
        line_numbers.append(np.array(lines, dtype=np.int64))
        batch = pa.record_batch([id_array, pa.array(titles, pa.string()), pa.array(texts, pa.string())], schema())
        for column in (ids, titles, texts, lines):
            column.clear()
        return batch

    try:
        for number, line in iter_lines(source):
            if kind == "beir":
                record_id, values = parse_json_record(source, number, line, ("title", "text"))
                title, text = values["title"], values["text"]
            else:
                record_id, text = parse_tsv_record(source, number, line)
                title = ""
            ids.append(record_id)
            titles.append(title)
            texts.append(text)
            lines.append(number)
            if len(ids) >= _BATCH_ROWS:
                yield flush()
    except DataFormatError:
        if ids:
            flush()
        _raise_earlier_duplicate(source, kind, seen, line_numbers)
        raise
    if ids:
        yield flush()
    if not seen:
        raise DataFormatError(source, None, "empty file: no records")


def _raise_earlier_duplicate(source: Path, kind: str, seen: list[pa.Array], line_numbers: list[np.ndarray]) -> None:
    """Raise the duplicate among the rows read so far, which precedes the problem being raised."""
    import pyarrow as pa

    if not seen:
        return
    ids = pa.chunked_array(seen, pa.string())
    lines = np.concatenate(line_numbers)
    try:
        duplicate = IdIndex.build(ids).first_duplicate()
    except InvalidIdError as err:
        raise DataFormatError(source, int(lines[err.row]), err.problem) from None
    if duplicate is not None:
        row, first_row = duplicate
        problem = duplicate_problem(_ID_WORD[kind], ids[row].as_py(), int(lines[first_row]))
        raise DataFormatError(source, int(lines[row]), problem)


def _scan(source: Path, stop: threading.Event) -> tuple[str, int, bool]:
    """``(sha256 fingerprint, number of lines, starts with a UTF-8 BOM)`` in one read of ``source``.

    Lines end as Python's universal newlines end them (``\\n``, ``\\r\\n``, a lone ``\\r``); a last
    line without an ending counts too. Stops early (with a meaningless result) once ``stop`` is set.
    """
    digest = hashlib.sha256()
    lines = 0
    previous = b""
    with open(source, "rb") as f:
        first = f.read(3)
        bom = first == b"\xef\xbb\xbf"
        f.seek(0)
        while not stop.is_set():
            block = f.read(1 << 20)
            if not block:
                break
            digest.update(block)
            lines += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
            if previous.endswith(b"\r") and block.startswith(b"\n"):
                lines -= 1  # a CRLF split between two blocks is one line ending
            previous = block
    if previous and not previous.endswith((b"\n", b"\r")):
        lines += 1
    return "sha256:" + digest.hexdigest(), lines, bom
