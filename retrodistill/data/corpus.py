"""The corpus of a collection as a memory-mapped Arrow table, converted once from its source file.

:func:`open_corpus` turns a BEIR ``corpus.jsonl`` or an MS MARCO ``collection.tsv`` into a
:class:`Corpus`: a read-only ``Mapping[str, Document]`` (so ``corpus[doc_id]``, ``in``, ``len`` and
iteration in file order work as with a dict) with vectorised methods for large corpora
(:meth:`Corpus.rows`, :meth:`Corpus.texts`, :meth:`Corpus.id_at`). The first open converts the file
(:mod:`retrodistill.data.corpus_convert`); later opens map the cache and read nothing else.

Cache layout, under ``cache_root() / "collections"``::

    <key>/                       key = sha256 of (kind, resolved source path, size, mtime_ns)
      corpus.arrow               Arrow IPC file, uncompressed: _id, title, text (strings), file order
      ids.sorted.npy, order.npy  the id index (retrodistill.data.id_index)
      manifest.json              {"format", "version", "kind", "source": {"path", "size", "mtime_ns"},
                                  "fingerprint": sha256_file(source), "counts": {"documents",
                                  "empty_documents"}, "id_width", "files": {name: bytes}, "reader",
                                  "wall_time_s", "versions": {"pyarrow"}}

A cache is written in a temporary folder beside ``<key>`` (``.tmp-KEY-PID-HOST-XXXXXXXX``) and
renamed into place, so ``<key>`` is complete or absent; the next conversion removes the temporary
folders of killed ones (:func:`clean_stale_staging`). A folder without a manifest is ignored and
rebuilt; one whose files do not match their manifest is rebuilt with a warning. ``fingerprint`` is
the source's ``sha256_file`` value, the one collections have always reported, so a second open
needs no hashing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import weakref
from collections.abc import ItemsView, Iterator, Mapping, Sequence, ValuesView
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrodistill.data.column_reader import StringColumn
from retrodistill.data.id_index import ORDER_FILE, SORTED_FILE, IdIndex
from retrodistill.data.records import Document
from retrodistill.temporaries import host_tag, process_alive

if TYPE_CHECKING:
    import pyarrow as pa

    from retrodistill.data.corpus_convert import Converted

logger = logging.getLogger(__name__)

CACHE_ENV = "RETRODISTILL_CACHE"
FORMAT = "retrodistill.corpus"
VERSION = 1
MANIFEST = "manifest.json"
TABLE_FILE = "corpus.arrow"
_FILES = (TABLE_FILE, SORTED_FILE, ORDER_FILE)


def cache_root() -> Path:
    """``$RETRODISTILL_CACHE`` if set, else ``~/.cache/retrodistill``: the root every cache lives under."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "retrodistill"


class Corpus(Mapping[str, Document]):
    """Documents by id over an Arrow table with columns ``_id``, ``title``, ``text``; read-only.

    Build one with :func:`open_corpus` (a file, through the cache) or :meth:`from_dict` (in memory).

    Args:
        table: the documents in their order.
        index: ids to rows of ``table``.
        empty_documents: how many documents have an empty :meth:`Document.joined`.
        fingerprint: ``sha256_file`` of the source file, or None for a corpus built in memory.
        directory: the cache folder the table is mapped from, or None.
        mapping: for a mapped table, ``(file descriptor, base address, size)`` of its file, so that
            values are read with ``pread`` (:mod:`retrodistill.data.column_reader`); the corpus
            owns the descriptor and closes it.
    """

    def __init__(
        self,
        table: pa.Table,
        index: IdIndex,
        *,
        empty_documents: int,
        fingerprint: str | None = None,
        directory: Path | None = None,
        mapping: tuple[int, int, int] | None = None,
    ) -> None:
        if len(index) != table.num_rows:
            raise ValueError(f"id index has {len(index)} rows, the table {table.num_rows}")
        self._table = table
        self._index = index
        fd, base, size = mapping if mapping is not None else (None, 0, 0)
        self._columns = {
            name: StringColumn(table.column(name).chunks, fd, base, size) for name in ("_id", "title", "text")
        }
        if fd is not None:  # registered last: if building failed, the caller still owns the descriptor
            weakref.finalize(self, os.close, fd)
        self.empty_documents = empty_documents
        self.fingerprint = fingerprint
        self.directory = directory

    @classmethod
    def from_dict(cls, documents: Mapping[str, Document]) -> Corpus:
        """A corpus held in memory, in the mapping's order (for tests and small hand-made collections)."""
        import pyarrow as pa

        from retrodistill.data.corpus_convert import schema

        docs = list(documents.values())
        table = pa.Table.from_arrays(
            [
                pa.array(list(documents), pa.string()),
                pa.array([d.title for d in docs], pa.string()),
                pa.array([d.text for d in docs], pa.string()),
            ],
            schema=schema(),
        )
        empty = sum(1 for d in docs if not d.joined())
        return cls(table, IdIndex.build(table.column("_id")), empty_documents=empty)

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Corpus:
        """Map a cache folder written by :func:`open_corpus` (checked against its manifest)."""
        directory = Path(directory)
        manifest = _read_manifest(directory)
        if manifest is None:
            raise FileNotFoundError(f"{directory}: no corpus cache here (no {MANIFEST})")
        problem = _check_files(directory, manifest)
        if problem:
            raise ValueError(f"{directory}: {problem}")
        return cls._map(directory, manifest)

    @classmethod
    def _map(cls, directory: Path, manifest: dict[str, Any]) -> Corpus:
        import pyarrow as pa
        import pyarrow.ipc

        # Zero-copy: the table's buffers point into the mapped file, read only when touched.
        path = directory / TABLE_FILE
        whole = pa.memory_map(str(path)).read_buffer()
        table = pa.ipc.open_file(pa.BufferReader(whole)).read_all()
        counts = manifest["counts"]
        if table.num_rows != counts["documents"]:
            raise ValueError(f"{directory}: {table.num_rows} rows, the manifest says {counts['documents']}")
        index = IdIndex.load(directory)
        fd = os.open(path, os.O_RDONLY)
        try:
            return cls(
                table,
                index,
                empty_documents=int(counts["empty_documents"]),
                fingerprint=manifest["fingerprint"],
                directory=directory,
                mapping=(fd, whole.address, whole.size),
            )
        except BaseException:
            os.close(fd)
            raise

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (e.g. for a worker process) as its cache folder, not as gigabytes of text.
        if self.directory is not None:
            return (Corpus.open, (self.directory,))
        return (Corpus.from_dict, (dict(self.items()),))

    # --- Mapping ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def __iter__(self) -> Iterator[str]:
        for ids in self._columns["_id"].iter_chunks():
            yield from ids

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._index.row(key) >= 0

    def __getitem__(self, key: str) -> Document:
        row = self._index.row(key) if isinstance(key, str) else -1
        if row < 0:
            raise KeyError(key)
        return self.document(row)

    def items(self) -> ItemsView[str, Document]:
        return _Items(self)

    def values(self) -> ValuesView[Document]:
        return _Values(self)

    def __repr__(self) -> str:
        where = f", {self.directory}" if self.directory else ""
        return f"Corpus({len(self):,} documents{where})"

    # --- vectorised access -----------------------------------------------------------------------

    @property
    def ids(self) -> pa.ChunkedArray:
        """The ``_id`` column in file order (memory-mapped; no Python strings are made)."""
        return self._table.column("_id")

    @property
    def table(self) -> pa.Table:
        """The whole table (``_id``, ``title``, ``text``), e.g. to stream it in record batches."""
        return self._table

    def rows(self, ids: Sequence[str] | pa.Array | pa.ChunkedArray, missing: int | None = None) -> np.ndarray:
        """Row numbers (int64) of ``ids``, in their order.

        Args:
            ids: document ids, as Python strings or an Arrow string array.
            missing: the row given for an unknown id; None raises instead.

        Raises:
            KeyError: naming the first unknown id, when ``missing`` is None.
        """
        import pyarrow as pa

        if isinstance(ids, pa.Array | pa.ChunkedArray):
            rows = self._index.rows(ids)
        else:
            ids = ids if isinstance(ids, list) else list(ids)
            rows = self._index.rows_of(ids)
        unknown = rows < 0
        if unknown.any():
            if missing is None:
                first = int(np.flatnonzero(unknown)[0])
                raise KeyError(ids[first].as_py() if isinstance(ids, pa.Array | pa.ChunkedArray) else ids[first])
            rows[unknown] = missing
        return rows

    def texts(self, rows: np.ndarray | Sequence[int]) -> list[str]:
        """``Document.joined()`` of each row: ``f"{title} {text}".strip()``, the encoder's input."""
        rows = self._checked(rows)
        titles, texts = self._columns["title"].take(rows), self._columns["text"].take(rows)
        return [f"{t} {x}".strip() for t, x in zip(titles, texts, strict=True)]

    def id_at(self, rows: np.ndarray | Sequence[int]) -> list[str]:
        """The id of each row."""
        return self._columns["_id"].take(self._checked(rows))

    def document(self, row: int) -> Document:
        """The document in ``row`` (0-based, file order)."""
        row = int(row)
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range for a corpus of {len(self):,} documents")
        return Document(self._columns["title"].value(row), self._columns["text"].value(row))

    def _checked(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            bad = int(rows[(rows < 0) | (rows >= len(self))][0])
            raise IndexError(f"row {bad} out of range for a corpus of {len(self):,} documents")
        return rows


class _Items(ItemsView[str, Document]):
    """``corpus.items()`` streamed chunk by chunk, instead of one index lookup per id."""

    _mapping: Corpus

    def __iter__(self) -> Iterator[tuple[str, Document]]:
        columns = self._mapping._columns
        chunks = (columns[name].iter_chunks() for name in ("_id", "title", "text"))
        for ids, titles, texts in zip(*chunks, strict=True):
            for doc_id, title, text in zip(ids, titles, texts, strict=True):
                yield doc_id, Document(title, text)


class _Values(ValuesView[Document]):
    _mapping: Corpus

    def __iter__(self) -> Iterator[Document]:
        for _, document in _Items(self._mapping):
            yield document


def open_corpus(
    path: str | os.PathLike[str], kind: str = "beir", *, cache_dir: str | os.PathLike[str] | None = None
) -> Corpus:
    """The corpus in ``path``, converted into the cache on first use and memory-mapped after.

    Args:
        path: a BEIR ``corpus.jsonl`` (``kind="beir"``) or an MS MARCO ``collection.tsv`` (``"msmarco"``).
        kind: the file's format.
        cache_dir: where caches live; default ``cache_root() / "collections"``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        DataFormatError: the file is malformed (the message names file and line).
    """
    from retrodistill.data.corpus_convert import KINDS, convert

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    if kind not in KINDS:
        raise ValueError(f"unknown corpus kind {kind!r}; expected one of {', '.join(KINDS)}")
    stat = source.stat()
    resolved = source.resolve()
    key = hashlib.sha256(json.dumps([kind, str(resolved), stat.st_size, stat.st_mtime_ns]).encode()).hexdigest()
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "collections"
    target = root / key
    cached = _open_valid(target, stat)
    if cached is not None:
        return cached

    if target.exists():
        _discard(target)
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(root)
    staging = root / f"{_STAGING}{key[:16]}-{os.getpid()}-{host_tag()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        started = time.perf_counter()
        logger.info("converting %s into %s (once)", source, target)
        converted = convert(source, kind, staging)
        after = source.stat()
        if (after.st_size, after.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            raise RuntimeError(f"{source} changed while it was being converted; open it again")
        manifest = _manifest(kind, resolved, stat, converted, staging, time.perf_counter() - started)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    corpus = _open_valid(target, stat)
    if corpus is None:
        raise RuntimeError(f"{target}: the corpus cache just written does not open")
    return corpus


def _manifest(
    kind: str, resolved: Path, stat: os.stat_result, converted: Converted, staging: Path, wall: float
) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "source": {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "fingerprint": converted.fingerprint,
        "counts": {"documents": converted.documents, "empty_documents": converted.empty_documents},
        "id_width": converted.id_width,
        "files": {name: (staging / name).stat().st_size for name in _FILES},
        "reader": converted.reader,
        "wall_time_s": round(wall, 3),
        "versions": {"pyarrow": version("pyarrow")},
    }


def _publish(staging: Path, target: Path) -> None:
    """Rename ``staging`` onto ``target``; if a concurrent conversion got there first, keep its copy."""
    try:
        os.rename(staging, target)
    except OSError:
        if not target.is_dir():
            raise


#: Name prefixes of the cache's temporary folders: conversions in progress, and caches being deleted.
_STAGING, _TRASH = ".tmp-", ".old-"
#: A staging folder nothing has written to for this long is abandoned, whatever its process id says
#: (the id may have been reused); a live conversion writes its table continuously.
STALE_AFTER_S = 3600.0


def clean_stale_staging(root: str | os.PathLike[str], *, now: float | None = None) -> list[Path]:
    """Remove what killed conversions left in the cache folder ``root``; return the folders removed.

    A staging folder (``.tmp-KEY-PID-HOST-XXXXXXXX``) is stale when its process is gone (checked only
    when ``HOST`` is this machine's: a cache on a shared disk may hold another machine's live
    conversion) or when nothing in it was written for :data:`STALE_AFTER_S` seconds. Folders being
    deleted (``.old-*``) are garbage already. A live conversion's folder is never touched.
    """
    root = Path(root)
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for path in entries:
        if path.name.startswith(_TRASH) or (path.name.startswith(_STAGING) and _stale(path, now)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        logger.info("%s: removed %d leftover folder(s) of interrupted conversions", root, len(removed))
    return removed


def _stale(staging: Path, now: float) -> bool:
    parts = staging.name[len(_STAGING) :].split("-")
    if len(parts) >= 4 and parts[1].isdigit() and parts[2] == host_tag() and not process_alive(int(parts[1])):
        return True
    try:
        newest = max([staging.stat().st_mtime, *(child.stat().st_mtime for child in staging.iterdir())])
    except OSError:  # removed meanwhile (its conversion finished or failed): nothing to do
        return False
    return now - newest > STALE_AFTER_S


def _discard(directory: Path) -> None:
    """Remove an invalid cache folder; renamed away first, so no reader ever sees it half-deleted."""
    trash = directory.with_name(f"{_TRASH}{directory.name[:16]}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(directory, trash)
    except FileNotFoundError:
        return  # another process discarded it first
    shutil.rmtree(trash, ignore_errors=True)


def _open_valid(directory: Path, stat: os.stat_result) -> Corpus | None:
    """The cached corpus in ``directory`` if it is complete and matches the source; else None."""
    if not directory.is_dir():
        return None
    manifest = _read_manifest(directory)
    if manifest is None:
        logger.info("%s: ignoring a half-written corpus cache; converting again", directory)
        return None
    source = manifest.get("source", {})
    problem = _check_files(directory, manifest)
    if not problem and (source.get("size"), source.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
        problem = "it was made from another version of the source file"
    if not problem:
        try:
            corpus = Corpus._map(directory, manifest)
        except Exception as err:  # a damaged file: any error pyarrow or numpy raises means "rebuild"
            problem = f"it does not open ({type(err).__name__}: {err})"
        else:
            if not _kept_byte_order_mark(corpus):
                return corpus
            problem = "its first id starts with the file's byte-order mark"
    logger.warning("%s: corrupt corpus cache (%s); converting the source again", directory, problem)
    return None


def _kept_byte_order_mark(corpus: Corpus) -> bool:
    """Whether the first id holds the source's byte-order mark, as caches converted before BOMs were dropped do."""
    return len(corpus) > 0 and corpus.id_at([0])[0].startswith("\ufeff")


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _check_files(directory: Path, manifest: Mapping[str, Any]) -> str:
    """A problem with the cache's files against its manifest, or ``""`` when they agree."""
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        return f"format {manifest.get('format')!r} version {manifest.get('version')!r}, expected {FORMAT!r} {VERSION}"
    sizes = manifest.get("files", {})
    for name in _FILES:
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != sizes.get(name):
            return f"{name} has {path.stat().st_size} bytes, the manifest says {sizes.get(name)}"
    return ""
