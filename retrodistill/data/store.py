"""Teacher-score stores: the teacher's score for every distinct (query, document) pair.

Layout of a store directory::

    STORE/
      manifest.json         stage, teacher (name, model, revision, max_length, dtype, ...), inputs
                            (corpus, queries, candidates fingerprints), part_size, parts, complete
      part-00000.parquet    query_id string, doc_id string, score float32
      part-00001.parquet    ...

Invariants (Tevatron-style): scores are the teacher's raw outputs (logits for cross-encoders,
similarities for bi-encoders), no activation applied; the pairs are the candidates' distinct
(query_id, doc_id) pairs in sorted order, cut into consecutive parts of ``part_size`` pairs, so
part ``i`` always holds the same pairs and a resumed run ends with exactly the rows of an
uninterrupted one. ``manifest["parts"]`` lists the parts that are complete (name → rows, sha256);
a part file not listed there is ignored and rewritten. ``complete`` is true once every part is.
The store's ``fingerprint`` (set when complete) hashes all rows in order.

Reading (:class:`TeacherStore`): :meth:`PartStore.open` refuses an incomplete store, and a part
that is missing or whose bytes changed since it was written (sha256 checked once per file version),
naming the part and the command that rebuilds it. Scores are looked up column-wise:
:meth:`TeacherStore.lookup` for any pairs, :meth:`TeacherStore.scores_for` for a candidate set's
rows, both through one index of sorted integer keys built on first use (40M pairs: 12 bytes a pair).
Parts, their checks and the fingerprints live in :mod:`retrodistill.data.part_store`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from retrodistill.artifacts import read_manifest
from retrodistill.data.part_store import iter_part_tables, part_name, verify_parts, write_table_part

STAGE = "score-teacher"
#: Stages whose output is a teacher-score store: scored here, imported from a published file, or an
#: ensemble of other stores. All share this module's layout and invariants.
STORE_STAGES = frozenset({STAGE, "import-scores", "ensemble"})
#: The command that rebuilds a store of each stage, named when a part fails its check.
REBUILD_COMMANDS = {
    STAGE: "`retrodistill score-teacher` (the same arguments rescore the changed part)",
    "import-scores": "`retrodistill import-scores ... --overwrite`",
    "ensemble": "`retrodistill ensemble-teachers` (the same arguments rebuild it)",
    "score-pairwise": "`retrodistill score-pairwise` (the same arguments rescore the changed part)",
}

__all__ = [
    "STAGE",
    "STORE_STAGES",
    "PartStore",
    "TeacherStore",
    "part_name",
    "score_table",
    "store_schema",
    "write_part",
]


def store_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("score", pa.float32())])


def score_table(pairs: Any, scores: Any) -> Any:
    """The rows of a part: ``pairs`` (a table with ``query_id``/``doc_id``, or (query_id, doc_id)
    tuples) with one score each, stored as float32."""
    import pyarrow as pa

    if len(pairs) != len(scores):
        raise ValueError(f"{len(pairs)} pairs but {len(scores)} scores")
    if hasattr(pairs, "column"):
        query_ids, doc_ids = pairs.column("query_id"), pairs.column("doc_id")
    else:
        query_ids, doc_ids = [q for q, _ in pairs], [d for _, d in pairs]
    return pa.table(
        {"query_id": query_ids, "doc_id": doc_ids, "score": np.asarray(scores, dtype=np.float32)},
        schema=store_schema(),
    )


def write_part(directory: str | os.PathLike[str], index: int, pairs: Any, scores: Any) -> dict[str, Any]:
    """Write one part atomically; return its manifest entry (``rows``, ``sha256``).

    Args:
        directory: the store directory.
        index: the part's index.
        pairs: a table with ``query_id`` and ``doc_id`` columns, or a sequence of (query_id, doc_id) tuples.
        scores: one score per pair (array or sequence), stored as float32.
    """
    if len(pairs) != len(scores):
        raise ValueError(f"part {index}: {len(pairs)} pairs but {len(scores)} scores")
    return write_table_part(directory, index, score_table(pairs, scores))


S = TypeVar("S", bound="PartStore")


@dataclass
class PartStore:
    """A complete store of Parquet parts listed in its manifest, read back.

    :meth:`open` checks every part's sha256 against the manifest (once per file version, see
    :func:`~retrodistill.data.part_store.verify_parts`). Subclasses name the manifest stages they
    accept, what they are called in errors, the command that resumes an incomplete one, and their
    row schema.
    """

    path: Path
    manifest: dict[str, Any]

    stages: ClassVar[frozenset[str]] = frozenset()
    what: ClassVar[str] = "store"
    resume_command: ClassVar[str] = ""

    @classmethod
    def schema(cls) -> Any:
        raise NotImplementedError

    @classmethod
    def open(cls: type[S], path: str | os.PathLike[str]) -> S:
        """Open a complete store.

        Raises:
            ValueError: not a store of this kind, or incomplete.
            PartChangedError: a part is missing or was changed since it was written.
        """
        directory = Path(path)
        manifest = read_manifest(directory)
        if manifest.get("stage") not in cls.stages:
            raise ValueError(f"{directory} is not a {cls.what} (stage {manifest.get('stage')!r})")
        if not manifest.get("complete"):
            done, total = len(manifest.get("parts", {})), manifest.get("num_parts", "?")
            raise ValueError(
                f"{directory} is incomplete ({done}/{total} parts); run `retrodistill {cls.resume_command}` "
                "again with the same arguments to resume it"
            )
        stage = str(manifest.get("stage"))
        verify_parts(directory, manifest, REBUILD_COMMANDS.get(stage, f"`retrodistill {cls.resume_command}`"))
        return cls(directory, manifest)

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def inputs(self) -> dict[str, str]:
        return dict(self.manifest.get("inputs", {}))

    def table(self, columns: Sequence[str] | None = None) -> Any:
        """All rows (or ``columns``) as one pyarrow Table, in part order (one chunk per part)."""
        import pyarrow as pa

        tables = list(iter_part_tables(self.path, self.manifest, columns))
        if not tables:
            empty = self.schema().empty_table()
            return empty if columns is None else empty.select(list(columns))
        return pa.concat_tables(tables)


@dataclass
class TeacherStore(PartStore):
    """A complete teacher-score store, read back; :meth:`table` is sorted by (query_id, doc_id).

    Look scores up column-wise with :meth:`lookup` (any pairs) or :meth:`scores_for` (a candidate
    set's rows). :meth:`scores` builds a dict of every pair: for small stores only.
    """

    _index: _ScoreIndex | None = field(default=None, repr=False, compare=False)

    stages: ClassVar[frozenset[str]] = STORE_STAGES
    what: ClassVar[str] = "teacher-score store"
    resume_command: ClassVar[str] = "score-teacher"

    @classmethod
    def schema(cls) -> Any:
        return store_schema()

    def lookup(self, query_ids: Any, doc_ids: Any) -> np.ndarray:
        """The stored score of each (query_ids[i], doc_ids[i]); NaN where the store has none.

        Args:
            query_ids: Arrow string array (or chunked array, or a sequence of str).
            doc_ids: the same, as long as ``query_ids``.

        Returns:
            float32 array ``(len(query_ids),)``.

        Each call hashes the store's distinct ids once (about a second at 8.8M documents), so look
        up many pairs per call: a whole candidate set, an epoch, not one batch at a time.
        """
        if self._index is None:
            self._index = _ScoreIndex.build(self)
        return self._index.lookup(query_ids, doc_ids)

    def scores_for(self, candidates: Any) -> np.ndarray:
        """The score of each row of ``candidates.table`` (a :class:`~retrodistill.data.candidates.CandidateSet`).

        Returns:
            float32 array aligned with ``candidates.table``'s rows; NaN where the store has no score.
        """
        table = candidates.table
        return self.lookup(table.column("query_id"), table.column("doc_id"))

    def scores(self) -> dict[tuple[str, str], float]:
        """Every (query_id, doc_id) → score as a dict: one Python object per pair, small stores only."""
        table = self.table()
        return dict(
            zip(
                zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), strict=True),
                table.column("score").to_pylist(),
                strict=True,
            )
        )


@dataclass
class _ScoreIndex:
    """A store's rows as sorted integer keys ``(query_code << 32) | doc_code``, and their scores.

    When every id is a decimal integer below 10**9 without leading zeros (MS MARCO), an id's code
    is that integer: nothing is hashed, ids are only parsed. Otherwise codes are positions among
    the store's distinct ids, sorted. Memory: 12 bytes per row (key and score), plus those ids.
    """

    queries: Any  # distinct query ids, sorted (Arrow string array); None for integer codes
    docs: Any  # distinct doc ids, sorted; None for integer codes
    keys: np.ndarray  # int64, ascending
    scores: np.ndarray  # float32, aligned with keys

    @classmethod
    def build(cls, store: PartStore) -> _ScoreIndex:
        """Read ``store`` a part at a time into keys (integer ids), or whole (other ids)."""
        total = int(store.manifest.get("num_pairs", 0)) or sum(
            int(e.get("rows", 0)) for e in store.manifest.get("parts", {}).values()
        )
        keys = np.empty(total, dtype=np.int64)
        scores = np.empty(total, dtype=np.float32)
        at = 0
        for table in iter_part_tables(store.path, store.manifest):
            query_col, doc_col = table.column("query_id"), table.column("doc_id")
            if at + table.num_rows > total or not (_integer_codes(query_col).all() and _integer_codes(doc_col).all()):
                return cls._build_with_dictionaries(store.table())
            keys[at : at + table.num_rows] = (_as_int64(query_col) << 32) | _as_int64(doc_col)
            scores[at : at + table.num_rows] = table.column("score").to_numpy()
            at += table.num_rows
        return cls._sorted(None, None, keys[:at], scores[:at])

    @classmethod
    def _build_with_dictionaries(cls, table: Any) -> _ScoreIndex:
        query_col, doc_col = table.column("query_id"), table.column("doc_id")
        queries, docs = _sorted_unique(query_col), _sorted_unique(doc_col)
        keys = (_codes(query_col, queries) << 32) | _codes(doc_col, docs)
        return cls._sorted(queries, docs, keys, table.column("score").to_numpy().astype(np.float32, copy=False))

    @classmethod
    def _sorted(cls, queries: Any, docs: Any, keys: np.ndarray, scores: np.ndarray) -> _ScoreIndex:
        if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):  # integer codes: numeric, not string order
            order = np.argsort(keys)
            keys = keys[order]
            scores = scores[order]
        return cls(queries, docs, keys, scores)

    def lookup(self, query_ids: Any, doc_ids: Any) -> np.ndarray:
        import pyarrow as pa

        qa = query_ids if isinstance(query_ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(query_ids), pa.string())
        da = doc_ids if isinstance(doc_ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(doc_ids), pa.string())
        if len(qa) != len(da):
            raise ValueError(f"got {len(qa)} query ids but {len(da)} doc ids")
        out = np.full(len(qa), np.nan, dtype=np.float32)
        if len(self.keys) == 0:
            return out
        for begin in range(0, len(qa), _LOOKUP_SLICE):  # a slice at a time: the temporaries stay small
            qs, ds = qa.slice(begin, _LOOKUP_SLICE), da.slice(begin, _LOOKUP_SLICE)
            if self.queries is None:  # integer codes: an id that is not such an integer is not in the store
                q, d = _as_int64(qs, missing=-1), _as_int64(ds, missing=-1)
            else:
                q, d = _codes(qs, self.queries, missing=-1), _codes(ds, self.docs, missing=-1)
            known = np.flatnonzero((q >= 0) & (d >= 0))
            wanted = (q[known] << 32) | d[known]
            position = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
            found = self.keys[position] == wanted
            out[begin + known[found]] = self.scores[position[found]]
        return out


_LOOKUP_SLICE = 1 << 22
_CANONICAL_INT = r"^(0|[1-9][0-9]{0,8})$"


def _integer_codes(column: Any) -> np.ndarray:
    """Whether each id is a decimal integer below 10**9 without leading zeros (bool array)."""
    import pyarrow.compute as pc

    flags = pc.match_substring_regex(column, _CANONICAL_INT)
    return np.asarray(flags.to_numpy(zero_copy_only=False), dtype=bool) if len(column) else np.ones(0, bool)


def _as_int64(column: Any, missing: int | None = None) -> np.ndarray:
    """The integer value of each id; ``missing`` for ids that are not such integers (None: all are)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if missing is None:
        return np.asarray(pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    flags = _integer_codes(column)
    out = np.full(len(column), missing, dtype=np.int64)
    if flags.any():
        good = pc.filter(column, pa.array(flags))
        out[flags] = np.asarray(pc.cast(good, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    return out


def _sorted_unique(column: Any) -> Any:
    import pyarrow.compute as pc

    unique = pc.unique(column)
    return unique.take(pc.sort_indices(unique))


def _codes(values: Any, dictionary: Any, missing: int | None = None) -> np.ndarray:
    """Position of each value in ``dictionary`` as int64; ``missing`` where absent (None: must be present)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    index = pc.index_in(values, value_set=dictionary)
    if isinstance(index, pa.ChunkedArray):
        index = index.combine_chunks()
    if index.null_count:
        if missing is None:
            raise ValueError("an id is missing from its own dictionary")
        index = index.fill_null(missing)
    return index.to_numpy(zero_copy_only=False).astype(np.int64)
