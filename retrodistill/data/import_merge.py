"""Merging the records of a score file: ids to integer codes, repeated pairs merged, conflicts found.

:class:`Merger` is what :func:`retrodistill.stages.import_scores.import_scores` feeds the record batches
of a file (:mod:`retrodistill.data.import_readers`) and asks for the distinct pairs. Memory is 13
bytes a record while reading (an int64 key of two 32-bit codes, a float32 score, a bool role), and
the merge sorts a bucket of queries at a time; no Python object is made per record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.data.collections import DataFormatError
from retrodistill.data.import_readers import Records, data_row_lines

#: Conflicts and unknown ids quoted in messages and manifests.
EXAMPLES = 5
#: Records merged per step: bounds the sort's temporaries (about 40 bytes a record).
BUCKET = 4_000_000
_LOW = np.int64(0xFFFFFFFF)
_CANONICAL_INT = r"^(0|[1-9][0-9]{0,8})$"
#: Integer ids below this are mapped through a lookup table (8 bytes an entry), larger ones searched.
_TABLE_LIMIT = 1 << 27


# ---------------------------------------------------------------- ids → integer codes


class Codes:
    """Ids → integer codes (below 2**31).

    While every id seen is a decimal integer below 10**9 written without leading zeros (MS MARCO's
    ids), the code is that integer: nothing is hashed. Otherwise codes index a growing Arrow
    dictionary of the ids, in order of first appearance.
    """

    def __init__(self) -> None:
        import pyarrow as pa

        self.values = pa.array([], pa.string())
        self.integers = True

    def encode(self, ids: Any) -> np.ndarray | None:
        """The codes of ``ids``; ``None`` when an id ends integer mode (call :meth:`to_strings`, then again)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.integers:
            if len(ids) == 0 or pc.all(pc.match_substring_regex(ids, _CANONICAL_INT)).as_py():
                return np.asarray(pc.cast(ids, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
            return None
        index = pc.index_in(ids, value_set=self.values) if len(self.values) else pa.nulls(len(ids), pa.int32())
        codes = index.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        missing = codes < 0
        if missing.any():
            absent = ids.filter(pa.array(missing))
            new = pc.unique(absent)
            codes[missing] = pc.index_in(absent, value_set=new).to_numpy(zero_copy_only=False) + len(self.values)
            self.values = pa.concat_arrays([self.values, new])
            if len(self.values) >= 1 << 31:
                raise ValueError("more than 2**31 distinct ids")
        return codes

    def to_strings(self, used: np.ndarray) -> None:
        """Leave integer mode: the integers ``used`` so far (sorted) become codes ``0 … len(used) - 1``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        self.integers = False
        self.values = pc.cast(pa.array(used, pa.int64()), pa.string())

    def sorted_ranks(self, used: np.ndarray) -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
        """The ids sorted as strings, and a function from codes to their positions among them.

        Args:
            used: the sorted distinct codes handed out (integer mode; ignored otherwise).
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        values = pc.cast(pa.array(used, pa.int64()), pa.string()) if self.integers else self.values
        order = pc.sort_indices(values).to_numpy(zero_copy_only=False)
        ranks = np.empty(len(order), dtype=np.int64)
        ranks[order] = np.arange(len(order), dtype=np.int64)
        ordered = values.take(pa.array(order))
        if not self.integers:
            return ordered, lambda codes: ranks[codes]
        if not len(used) or used[-1] < _TABLE_LIMIT:
            table = np.zeros(int(used[-1]) + 1 if len(used) else 0, dtype=np.int64)
            table[used] = ranks
            return ordered, lambda codes: table[codes]
        return ordered, lambda codes: ranks[np.searchsorted(used, codes)]


# ---------------------------------------------------------------- merging


@dataclass
class Pairs:
    """The distinct pairs, sorted by (query_id, doc_id), with what their first record said."""

    queries: Any  # sorted distinct query ids (Arrow)
    docs: Any  # sorted distinct doc ids (Arrow)
    q: np.ndarray  # int32 index into queries, per pair
    d: np.ndarray  # int32 index into docs
    score: np.ndarray  # float32, of the first record
    positive: np.ndarray  # bool
    rank: np.ndarray | None  # int32 rank the file states (0: none)
    first: np.ndarray  # record number of the first record (int32, or int64 past 2**31 records)

    def __len__(self) -> int:
        return len(self.q)

    def keep(self, mask: np.ndarray) -> None:
        self.q, self.d, self.score, self.positive, self.first = (
            a[mask] for a in (self.q, self.d, self.score, self.positive, self.first)
        )
        if self.rank is not None:
            self.rank = self.rank[mask]


class Merger:
    """Collects the records of a file column-wise, then merges repeated pairs in one stable sort."""

    def __init__(self, path: Path, on_conflict: str) -> None:
        self.path = path
        self.on_conflict = on_conflict
        self.queries, self.docs = Codes(), Codes()
        self.keys: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.positive: list[np.ndarray] = []
        self.ranks: list[np.ndarray | None] = []
        self.has_rank = False  # whether any record states a rank (TREC runs)
        self.record_type: Any = np.int64
        # Where each batch's records came from: (first record number, lines, first data row, records per row).
        self.segments: list[tuple[int, np.ndarray | None, int, int]] = []
        self.records = 0
        self.duplicates = 0
        self.conflicts = 0
        self.conflict_examples: list[str] = []

    def add(self, batch: Records) -> None:
        q = self._encode(self.queries, batch.query_id, 32)
        d = self._encode(self.docs, batch.doc_id, 0)
        self.keys.append((q << 32) | d)
        self.scores.append(batch.score.astype(np.float32))  # the store keeps float32: compare as such
        self.positive.append(batch.positive.astype(bool))
        self.ranks.append(batch.rank)
        self.has_rank = self.has_rank or batch.rank is not None
        self.segments.append((self.records, batch.lines, batch.first_row, batch.per_row))
        self.records += len(batch)

    def _encode(self, codes: Codes, ids: Any, shift: int) -> np.ndarray:
        encoded = codes.encode(ids)
        if encoded is None:  # an id that is not a small integer: recode what was seen as strings
            used = self._used(shift)
            codes.to_strings(used)
            for keys in self.keys:
                side = (keys >> shift) & _LOW
                keys ^= side << shift  # clear that half, then write the new codes
                keys |= np.searchsorted(used, side).astype(np.int64) << shift
            encoded = codes.encode(ids)
            assert encoded is not None
        return encoded

    def _used(self, shift: int) -> np.ndarray:
        """The sorted distinct codes in one half of the keys (``shift`` 32: queries, 0: documents)."""
        if not self.keys:
            return np.empty(0, np.int64)
        top = (
            max(int(((k >> shift) & _LOW).max()) for k in self.keys if len(k)) if any(len(k) for k in self.keys) else 0
        )
        if top < _TABLE_LIMIT:
            present = np.zeros(top + 1, dtype=bool)
            for keys in self.keys:
                present[(keys >> shift) & _LOW] = True
            return np.flatnonzero(present).astype(np.int64)
        return np.unique(np.concatenate([(k >> shift) & _LOW for k in self.keys]))

    def lines(self, records: Iterable[int]) -> dict[int, int | None]:
        """The 1-based line of each record number (``None`` where the file has no lines)."""
        wanted = sorted(set(int(r) for r in records))
        starts = [s for s, *_ in self.segments]
        found: dict[int, int | None] = {}
        rows: dict[int, int] = {}
        for record in wanted:
            start, lines, first_row, per_row = self.segments[int(np.searchsorted(starts, record, side="right")) - 1]
            if lines is not None:
                line = int(lines[record - start])
                found[record] = None if line < 0 else line
            else:
                rows[record] = first_row + (record - start) // per_row
        if rows:
            by_row = data_row_lines(self.path, rows.values())
            found.update({record: by_row.get(row) for record, row in rows.items()})
        return found

    def merge(self) -> Pairs:
        """One entry per (query, document): repeated pairs merged, conflicts counted or refused.

        Records are taken a bucket of queries at a time (about :data:`BUCKET` records each, queries
        in sorted order), so the sort's temporaries stay small whatever the file's size; within a
        bucket one stable sort of (query, document) codes puts each pair's records together, its
        first record first.
        """
        # Record numbers as int32 while they fit: 4 bytes a pair less.
        self.record_type = np.int32 if self.records < 1 << 31 else np.int64
        query_ids, q_rank = self.queries.sorted_ranks(self._used(32) if self.queries.integers else np.empty(0))
        doc_ids, d_rank = self.docs.sorted_ranks(self._used(0) if self.docs.integers else np.empty(0))
        self.queries = self.docs = Codes()  # the sorted ids replace the first-appearance ones
        # Codes in sorted-id order, so sorting the keys sorts by (query_id, doc_id) as strings do.
        for keys in self.keys:
            keys[:] = (q_rank(keys >> 32) << 32) | d_rank(keys & _LOW)
        del q_rank, d_rank
        offsets = [start for start, *_ in self.segments]
        per_query = np.zeros(len(query_ids), dtype=np.int64)
        for keys in self.keys:
            per_query += np.bincount(keys >> 32, minlength=len(query_ids))
        cumulative = np.cumsum(per_query)
        buckets = max(1, -(-self.records // BUCKET))
        bounds = np.searchsorted(cumulative, np.arange(1, buckets) * (self.records / buckets)) + 1
        edges = np.unique(np.concatenate([[0], bounds, [len(query_ids)]]))
        out: dict[str, list[np.ndarray]] = {k: [] for k in ("q", "d", "score", "positive", "first", "rank")}
        bad: list[Bad] = []
        examples: list[Bad] = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            self._bucket(int(lo), int(hi), offsets, out, bad, examples)
            return_freed_memory()
        if bad:
            self._refuse(min(bad, key=lambda b: b.record), query_ids, doc_ids)
        examples = sorted(examples, key=lambda b: b.record)[:EXAMPLES]
        lines = self.lines([b.record for b in examples] + [b.first for b in examples])
        for b in examples:
            line = lines[b.record]
            where = f"{self.path}:{line}" if line is not None else str(self.path)
            self.conflict_examples.append(
                f"{where}: {self._describe(b.key, query_ids, doc_ids)} has score {b.score!r} here "
                f"but {b.first_score!r} {on_line(lines[b.first])}"
            )
        self.keys, self.scores, self.positive, self.ranks = [], [], [], []

        def joined(name: str, dtype: Any) -> np.ndarray:
            # Popped as joined, so only one column is ever held twice.
            parts = out.pop(name)
            return np.concatenate(parts) if parts else np.empty(0, dtype)

        return Pairs(
            queries=query_ids,
            docs=doc_ids,
            q=joined("q", np.int32),
            d=joined("d", np.int32),
            score=joined("score", np.float32),
            positive=joined("positive", bool),
            rank=joined("rank", np.int32) if self.has_rank else None,
            first=joined("first", np.int64),
        )

    def _bucket(
        self,
        lo: int,
        hi: int,
        offsets: list[int],
        out: dict[str, list[np.ndarray]],
        bad: list[Bad],
        examples: list[Bad],
    ) -> None:
        """Merge the records of the queries ranked ``[lo, hi)``; append their pairs to ``out``."""
        pieces: dict[str, list[np.ndarray]] = {k: [] for k in ("keys", "score", "positive", "record", "rank")}
        for i, keys in enumerate(self.keys):
            q = keys >> 32
            where = np.flatnonzero((q >= lo) & (q < hi))
            pieces["keys"].append(keys[where])
            pieces["score"].append(self.scores[i][where])
            pieces["positive"].append(self.positive[i][where])
            pieces["record"].append((where + offsets[i]).astype(self.record_type))
            if self.has_rank:
                rank = self.ranks[i]
                pieces["rank"].append(np.zeros(len(where), np.int32) if rank is None else rank[where])
        keys = np.concatenate(pieces["keys"])
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")  # stable: a pair's first record comes first
        keys = keys[order]
        scores = np.concatenate(pieces["score"])[order]
        positive = np.concatenate(pieces["positive"])[order]
        record = np.concatenate(pieces["record"])[order]
        rank = np.concatenate(pieces["rank"])[order] if self.has_rank else None
        del order, pieces
        new = np.ones(len(keys), dtype=bool)
        new[1:] = keys[1:] != keys[:-1]
        starts = np.flatnonzero(new)
        sizes = np.diff(np.append(starts, len(keys)))
        # Every record against the first record of its pair.
        role = positive != np.repeat(positive[starts], sizes)
        conflict = (scores != np.repeat(scores[starts], sizes)) & ~role
        self.conflicts += int(conflict.sum())
        self.duplicates += len(keys) - len(starts) - int(conflict.sum()) - int(role.sum())
        refused = role | conflict if self.on_conflict == "error" else role
        for mask, into, count in ((refused, bad, 1), (conflict, examples, EXAMPLES)):
            if mask.any():
                at_all = np.flatnonzero(mask)
                for at in at_all[np.argsort(record[at_all], kind="stable")[:count]]:
                    first = int(starts[np.searchsorted(starts, at, side="right") - 1])
                    into.append(
                        Bad(
                            record=int(record[at]),
                            first=int(record[first]),
                            key=int(keys[at]),
                            score=float(scores[at]),
                            first_score=float(scores[first]),
                            role=bool(role[at]),
                            positive=bool(positive[at]),
                        )
                    )
        unique = keys[starts]
        out["q"].append((unique >> 32).astype(np.int32))
        out["d"].append((unique & _LOW).astype(np.int32))
        out["score"].append(scores[starts])
        out["positive"].append(positive[starts])
        out["first"].append(record[starts])
        if rank is not None:
            out["rank"].append(rank[starts])

    def _describe(self, key: int, query_ids: Any, doc_ids: Any) -> tuple[str, str]:
        return (str(query_ids[key >> 32].as_py()), str(doc_ids[key & 0xFFFFFFFF].as_py()))

    def _refuse(self, bad: Bad, query_ids: Any, doc_ids: Any) -> None:
        """Raise at the earliest record (in file order) that gives a pair another role, or (``error``) score."""
        lines = self.lines([bad.record, bad.first])
        key = self._describe(bad.key, query_ids, doc_ids)
        prior = on_line(lines[bad.first])
        if bad.role:
            roles = ("a positive", "a negative") if bad.positive else ("a negative", "a positive")
            problem = f"{key} is {roles[0]} here but {roles[1]} {prior}"
        else:
            problem = (
                f"{key} has score {bad.score!r} here but {bad.first_score!r} {prior}"
                "; --on-conflict first keeps the first score"
            )
        raise DataFormatError(self.path, lines[bad.record], problem)


@dataclass
class Bad:
    """A record that repeats a pair with another role or score, and the pair's first record."""

    record: int
    first: int
    key: int
    score: float
    first_score: float
    role: bool
    positive: bool


def on_line(line: int | None) -> str:
    return f"on line {line}" if line is not None else "earlier in the file"


def return_freed_memory() -> None:
    """Hand freed heap pages back to the OS.

    glibc keeps the pages of freed mid-sized arrays (below its mmap threshold) in the heap, so the
    merge's per-block arrays would stay in RSS after they are freed; ``malloc_trim`` releases them.
    """
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
