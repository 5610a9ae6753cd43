"""Candidate lists: for each training query, its judged positives and mined negatives.

Schema (one Parquet file ``candidates.parquet`` in the artifact directory, long format)::

    query_id         string   query id in the collection
    doc_id           string   document id in the corpus
    label            int32    qrels grade for judged documents (> 0 for positives), 0 for mined negatives
    rank             int32    1-based rank in the mining run; 0 when the document was not retrieved
    retrieval_score  float32  the miner's score (BM25, dense similarity); NaN when not retrieved
    source           string   optional: the retriever(s) that found the document, ``+``-joined in the
                              order given (``bm25s+sentence-transformers/all-MiniLM-L6-v2``); ``qrels``
                              for a judged document none retrieved. Rank and score are those of the
                              first source that ranked it best.

Invariants: one row per (query_id, doc_id); rows sorted by (query_id, rank == 0, rank, doc_id), so a
query's positives not found by the miner come after its retrieved documents. The manifest's
``fingerprint`` is a hash of the rows, which teacher-score stores record as their ``candidates`` input.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.artifacts import atomic_path, read_manifest, write_manifest
from retrodistill.data.collections import DataFormatError
from retrodistill.data.part_store import StringsHasher

CANDIDATES_FILE = "candidates.parquet"
#: Rows per Parquet row group and per step of the column-wise checks.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Candidate:
    query_id: str
    doc_id: str
    label: int
    rank: int
    retrieval_score: float


def candidates_schema(source: bool = False) -> Any:
    """The columns of a candidates file; ``source``: with the optional ``source`` column."""
    import pyarrow as pa

    fields = [
        ("query_id", pa.string()),
        ("doc_id", pa.string()),
        ("label", pa.int32()),
        ("rank", pa.int32()),
        ("retrieval_score", pa.float32()),
    ]
    return pa.schema(fields + ([("source", pa.string())] if source else []))


def _schema_of(table: Any) -> Any:
    """The candidates schema ``table`` is written with: with ``source`` when it has that column."""
    return candidates_schema(source="source" in table.column_names)


_schema = candidates_schema  # the name older code imports


def candidate_order(c: Candidate) -> tuple[str, bool, int, str]:
    """The row order of a candidates file: by query, retrieved before not retrieved, rank, doc id."""
    return (c.query_id, c.rank == 0, c.rank, c.doc_id)


def candidates_table(rows: Iterable[Candidate]) -> Any:
    """``Candidate`` rows as a pyarrow Table with the candidates schema, in the order given (small inputs)."""
    import pyarrow as pa

    rows = list(rows)
    return pa.table(
        {
            "query_id": [c.query_id for c in rows],
            "doc_id": [c.doc_id for c in rows],
            "label": [c.label for c in rows],
            "rank": [c.rank for c in rows],
            "retrieval_score": [c.retrieval_score for c in rows],
        },
        schema=candidates_schema(),
    )


def sort_candidates(table: Any) -> Any:
    """``table`` in the canonical row order: (query_id, rank == 0, rank, doc_id), column-wise."""
    import pyarrow.compute as pc

    keyed = table.append_column("_unranked", pc.equal(table.column("rank"), 0))
    order = pc.sort_indices(
        keyed,
        sort_keys=[
            ("query_id", "ascending"),
            ("_unranked", "ascending"),
            ("rank", "ascending"),
            ("doc_id", "ascending"),
        ],
    )
    return table.take(order)


def candidates_fingerprint(rows: Any) -> str:
    """Hash of the rows ``query_id<TAB>doc_id<TAB>label<TAB>rank``, in order.

    Args:
        rows: a pyarrow Table with the candidates columns, or an iterable of :class:`Candidate`.
    """
    table = rows if hasattr(rows, "column") else candidates_table(rows)
    hasher = StringsHasher()
    hasher.update(*(table.column(name) for name in ("query_id", "doc_id", "label", "rank")))
    return hasher.hexdigest()


class CandidatesWriter:
    """Writes ``candidates.parquet`` in row groups, already in canonical order, hashing as it goes.

    For callers that produce the sorted rows a slice at a time (``import-scores`` at tens of millions
    of rows); :func:`write_candidates` sorts and checks a whole table, then uses this writer.
    """

    def __init__(self, out_dir: str | os.PathLike[str], source: bool = False) -> None:
        import pyarrow.parquet as pq

        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._schema = candidates_schema(source)
        self._atomic = atomic_path(self.out / CANDIDATES_FILE)
        self._tmp = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, self._schema)
        self._hasher = StringsHasher()
        self.rows = self.positives = 0
        self._queries = 0
        self._last_query: str | None = None

    def write(self, table: Any) -> None:
        """Append ``table`` (candidates columns, canonical order, continuing the previous slices)."""
        import pyarrow.compute as pc

        if table.num_rows == 0:
            return
        table = table.select(self._schema.names).cast(self._schema)
        self._writer.write_table(table, row_group_size=_CHUNK)
        self._hasher.update(*(table.column(name) for name in ("query_id", "doc_id", "label", "rank")))
        queries = table.column("query_id")
        starts = pc.sum(pc.not_equal(queries.slice(1), queries.slice(0, len(queries) - 1))).as_py() or 0
        self._queries += starts + (queries[0].as_py() != self._last_query)
        self._last_query = queries[-1].as_py()
        self.rows += table.num_rows
        self.positives += pc.sum(pc.greater(table.column("label"), 0)).as_py() or 0

    def close(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Finish the file and write the manifest (adding ``fingerprint`` and ``counts``); return it."""
        self._writer.close()
        self._atomic.__exit__(None, None, None)
        data = dict(manifest)
        data["fingerprint"] = self._hasher.hexdigest()
        data["counts"] = {
            "queries": self._queries,
            "rows": self.rows,
            "positives": self.positives,
            "negatives": self.rows - self.positives,
            **dict(data.get("counts", {})),
        }
        write_manifest(self.out, data)
        return data

    def abort(self) -> None:
        self._writer.close()
        self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)


def write_candidates(out_dir: str | os.PathLike[str], rows: Any, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Write the candidates Parquet file and its manifest (adding ``fingerprint`` and ``counts``).

    Args:
        out_dir: the artifact directory.
        rows: a pyarrow Table with the candidates columns, or an iterable of :class:`Candidate`; any order.
        manifest: the manifest fields of the stage.

    Raises:
        ValueError: a (query_id, doc_id) pair appears twice.
    """
    table = rows if hasattr(rows, "column") else candidates_table(rows)
    schema = _schema_of(table)
    table = sort_candidates(table.select(schema.names).cast(schema))
    duplicate = _first_duplicate(table)
    if duplicate is not None:
        raise ValueError(f"candidate ({duplicate[0]}, {duplicate[1]}) appears twice")
    writer = CandidatesWriter(out_dir, source="source" in schema.names)
    try:
        for start in range(0, max(table.num_rows, 1), _CHUNK):
            writer.write(table.slice(start, _CHUNK))
    except BaseException:
        writer.abort()
        raise
    return writer.close(manifest)


def _first_duplicate(table: Any) -> tuple[str, str] | None:
    """A (query_id, doc_id) pair that appears twice in ``table``, or ``None``."""
    import pyarrow.compute as pc

    pairs = sorted_pairs(table, distinct=False)
    if pairs.num_rows < 2:
        return None
    q, d = pairs.column("query_id"), pairs.column("doc_id")
    n = pairs.num_rows
    same = pc.and_(pc.equal(q.slice(1), q.slice(0, n - 1)), pc.equal(d.slice(1), d.slice(0, n - 1)))
    hits = pc.indices_nonzero(same)
    if len(hits) == 0:
        return None
    at = hits[0].as_py()
    return (q[at].as_py(), d[at].as_py())


def sorted_pairs(table: Any, *, distinct: bool = True) -> Any:
    """The (query_id, doc_id) columns of ``table`` sorted by (query_id, doc_id), duplicates dropped if ``distinct``."""
    import pyarrow.compute as pc

    pairs = table.select(["query_id", "doc_id"])
    pairs = pairs.take(pc.sort_indices(pairs, sort_keys=[("query_id", "ascending"), ("doc_id", "ascending")]))
    if distinct and pairs.num_rows > 1:
        q, d = pairs.column("query_id"), pairs.column("doc_id")
        n = pairs.num_rows
        same = pc.and_(pc.equal(q.slice(1), q.slice(0, n - 1)), pc.equal(d.slice(1), d.slice(0, n - 1)))
        if pc.any(same).as_py():
            import pyarrow as pa

            keep = pa.concat_arrays([pa.array([True]), pc.invert(same).combine_chunks()])
            pairs = pairs.filter(keep)
    return pairs.combine_chunks()


class CandidateSet:
    """Candidates read back from an artifact directory, column-wise.

    :attr:`table` is the pyarrow Table (schema in the module docstring), in canonical order when
    read from disk; :meth:`pair_table` gives the sorted distinct pairs. :attr:`rows`,
    :meth:`by_query` and :meth:`pairs` build one Python object per row: conveniences for small
    sets (tests, SciFact-sized data), never for MS MARCO-sized ones.
    """

    def __init__(self, path: str | os.PathLike[str], table: Any, manifest: dict[str, Any]) -> None:
        """
        Args:
            path: where the candidates came from (artifact directory, or a triples file).
            table: a pyarrow Table with the candidates columns, a list of :class:`Candidate` (kept in
                the order given), or ``None`` to read ``path/candidates.parquet`` on first use.
            manifest: the artifact's manifest (at least ``fingerprint``).
        """
        self.path = Path(path)
        self.manifest = manifest
        self._table = None if table is None else table if hasattr(table, "column") else candidates_table(table)
        self._rows: list[Candidate] | None = None
        self._pairs: Any = None

    def __repr__(self) -> str:
        return f"CandidateSet(path={str(self.path)!r}, rows={len(self)})"

    @property
    def table(self) -> Any:
        """The rows as a pyarrow Table (read, memory-mapped, on first use)."""
        if self._table is None:
            self._table = _read_table(self.path / CANDIDATES_FILE)
        return self._table

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    def __len__(self) -> int:
        if self._table is None:
            return int(self.manifest.get("counts", {}).get("rows", self.table.num_rows))
        return int(self._table.num_rows)

    def pair_table(self) -> Any:
        """Distinct (query_id, doc_id) pairs sorted by (query_id, doc_id): the order teacher scoring follows."""
        if self._pairs is None:
            self._pairs = sorted_pairs(self.table)
        return self._pairs

    @property
    def rows(self) -> list[Candidate]:
        """One :class:`Candidate` per row (small sets only)."""
        if self._rows is None:
            cols = {name: self.table.column(name).to_pylist() for name in candidates_schema().names}
            self._rows = [
                Candidate(q, d, int(lab), int(r), math.nan if s is None else float(s))
                for q, d, lab, r, s in zip(
                    cols["query_id"], cols["doc_id"], cols["label"], cols["rank"], cols["retrieval_score"], strict=True
                )
            ]
        return self._rows

    def pairs(self) -> list[tuple[str, str]]:
        """:meth:`pair_table` as a list of tuples (small sets only)."""
        table = self.pair_table()
        return list(zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), strict=True))

    def by_query(self) -> dict[str, list[Candidate]]:
        """Rows grouped by query, in row order (small sets only)."""
        grouped: dict[str, list[Candidate]] = {}
        for c in self.rows:
            grouped.setdefault(c.query_id, []).append(c)
        return grouped


def read_candidates(path: str | os.PathLike[str], *, verify: bool = True) -> CandidateSet:
    """Open a candidates artifact directory written by :func:`write_candidates`.

    The rows are checked against the manifest's fingerprint a row group at a time (``verify``), and
    read as a table (memory-mapped) only when :attr:`CandidateSet.table` is first used.

    Raises:
        FileNotFoundError: no ``candidates.parquet`` there.
        ValueError: a column is missing, or the rows do not match the manifest's fingerprint.
    """
    import pyarrow.parquet as pq

    directory = Path(path)
    manifest = read_manifest(directory)
    file = directory / CANDIDATES_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing; is {directory} a candidates artifact?")
    parquet = pq.ParquetFile(file, memory_map=True)
    missing = set(candidates_schema().names) - set(parquet.schema_arrow.names)
    if missing:
        raise ValueError(f"{file}: missing columns {sorted(missing)}")
    if verify:
        hasher = StringsHasher()
        for batch in parquet.iter_batches(batch_size=_CHUNK, columns=["query_id", "doc_id", "label", "rank"]):
            hasher.update(*batch.columns)
        if hasher.hexdigest() != manifest.get("fingerprint"):
            raise ValueError(f"{file}: rows do not match the fingerprint in {directory / 'manifest.json'}")
    return CandidateSet(directory, None, manifest)


def _read_table(file: Path) -> Any:
    import pyarrow.parquet as pq

    table = pq.read_table(file, memory_map=True)
    schema = _schema_of(table)
    return table.select(schema.names).cast(schema)


def read_triples(path: str | os.PathLike[str]) -> list[Candidate]:
    """:func:`read_triples_table` as :class:`Candidate` rows (small files)."""
    return CandidateSet(path, read_triples_table(path), {}).rows


def read_triples_table(path: str | os.PathLike[str]) -> Any:
    """Read an MS MARCO id-triples TSV (``qid <TAB> pid+ <TAB> pid-``) into a candidates table.

    Each positive gets label 1 and each negative label 0; ranks are 0 (not from a miner); one row per
    distinct pair, in order of first appearance. A pair listed as both positive and negative is an
    error naming the line. Read column-wise by pyarrow's CSV reader; a file it cannot parse is read
    line by line, which names the bad line.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as csv

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    try:
        raw = csv.read_csv(
            file,
            csv.ReadOptions(column_names=["q", "pos", "neg"]),
            csv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False),
            csv.ConvertOptions(
                column_types=dict.fromkeys(["q", "pos", "neg"], pa.string()),
                null_values=[],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return candidates_table(_read_triples_rows(file))
    q, pos, neg = (pc.utf8_trim_whitespace(raw.column(name)) for name in ("q", "pos", "neg"))
    if any(pc.any(pc.equal(pc.utf8_length(c), 0)).as_py() for c in (q, pos, neg)):
        return candidates_table(_read_triples_rows(file))
    n = raw.num_rows
    if n == 0:
        raise DataFormatError(file, None, "empty file: no triples")
    both = pa.array(np.column_stack([np.arange(n), np.arange(n, 2 * n)]).reshape(-1))  # row i's two records
    records = pa.table(
        {
            "query_id": pa.concat_arrays([q.combine_chunks(), q.combine_chunks()]).take(both),
            "doc_id": pa.concat_arrays([pos.combine_chunks(), neg.combine_chunks()]).take(both),
            "label": np.tile(np.array([1, 0], dtype=np.int32), n),
            "record": np.arange(2 * n, dtype=np.int64),
        }
    )
    grouped = records.group_by(["query_id", "doc_id"], use_threads=False).aggregate(
        [("label", "min"), ("label", "max"), ("record", "min")]
    )
    if not pc.all(pc.equal(grouped.column("label_min"), grouped.column("label_max"))).as_py():
        _read_triples_rows(file)  # raises, naming the line
    grouped = grouped.take(pc.sort_indices(grouped.column("record_min")))
    size = grouped.num_rows
    return pa.table(
        {
            "query_id": grouped.column("query_id"),
            "doc_id": grouped.column("doc_id"),
            "label": grouped.column("label_min"),
            "rank": np.zeros(size, dtype=np.int32),
            "retrieval_score": np.full(size, np.nan, dtype=np.float32),
        },
        schema=candidates_schema(),
    )


def triples_candidates(path: str | os.PathLike[str]) -> CandidateSet:
    """A triples file as a :class:`CandidateSet` (rows in first-appearance order), fingerprinted as
    :func:`write_candidates` would fingerprint its rows."""
    table = read_triples_table(path)
    return CandidateSet(path, table, {"fingerprint": candidates_fingerprint(sort_candidates(table))})


def _read_triples_rows(file: Path) -> list[Candidate]:
    """The triples of ``file`` line by line: the reference rules, and the errors that name a line."""
    rows: dict[tuple[str, str], Candidate] = {}
    with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3 or not all(p.strip() for p in parts):
                raise DataFormatError(file, number, "expected 'qid<TAB>pid_positive<TAB>pid_negative'")
            qid, pos, neg = (p.strip() for p in parts)
            for doc_id, label in ((pos, 1), (neg, 0)):
                prior = rows.get((qid, doc_id))
                if prior is not None and prior.label != label:
                    raise DataFormatError(file, number, f"({qid}, {doc_id}) is both a positive and a negative")
                rows[qid, doc_id] = Candidate(qid, doc_id, label, 0, math.nan)
    if not rows:
        raise DataFormatError(file, None, "empty file: no triples")
    return list(rows.values())
