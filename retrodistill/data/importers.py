"""Import teacher scores others published, instead of rescoring: score files → store + candidates.

:func:`import_scores` (the ``retrodistill import-scores`` command) reads one score file, checks every
id against a collection, and writes the two artifacts ``train-student`` needs: a teacher-score store
(:mod:`retrodistill.data.store`) and a candidates artifact (:mod:`retrodistill.data.candidates`) whose
fingerprint the store records, so ``train-student --store STORE`` finds and accepts both.

Formats (:data:`IMPORT_FORMATS`; text files may be gzipped, ``*.gz``), with the documents each
names as positives (the others get labels from qrels only):

* ``hofstaetter-tsv``: ``pos_score<TAB>neg_score<TAB>qid<TAB>pid+<TAB>pid-``, the teacher files of
  sebastian-hofstaetter/neural-ranking-kd (e.g. ``bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv``).
  Positive: ``pid+``.
* ``st-mse``: rows ``query_id, passage_id, score`` in Parquet (the hub's ``*.parquet``) or JSONL: the
  ``bert-ensemble-mse`` subset of sentence-transformers/msmarco. Positives: none.
* ``st-scores-pickle``: ``scores[qid][pid] = score``, the (gzipped) pickle of sentence-transformers'
  msmarco-hard-negatives (``cross-encoder-ms-marco-MiniLM-L-6-v2-scores.pkl.gz``). Loading a pickle can
  run code, so it needs ``allow_pickle`` and is read with an unpickler that builds only dicts,
  numbers, strings and numpy scalars. Positives: none.
* ``tevatron``: ``{"query_id", "positive_passages": [{"docid", "score", ...}], "negative_passages": [...]}``
  per line; a passage without ``score`` is an error (the file has no teacher scores). Positives:
  ``positive_passages``.
* ``colbert``: ``[qid, [pid, score], [pid, score], ...]`` per line, ColBERT's n-way distillation
  examples. Positive: the first pid of each line (ColBERT trains with it as the target).
* ``flagembedding``: ``{"query", "pos", "neg", "pos_scores", "neg_scores"}`` per line, with texts, not
  ids (mapped through the collection, below). Positives: ``pos``.
* ``trec-run``: ``qid Q0 docid rank score tag`` (e.g. a cross-encoder re-ranking run). Positives: none.
* ``st-margin-mse`` (``query_id, positive_id, negative_id, score`` with ``score`` a margin): refused.

Decisions (what they counted is in both manifests' ``import`` section):

* **Margins are refused** (``st-margin-mse``): a margin ``s(q, d+) - s(q, d-)`` fixes the scores only
  up to an unknown constant per query, so it is not a (query, document) score; storing it on one
  side of a triple would give a negative in several triples several scores. Import the absolute
  scores the margins were computed from (``st-mse`` or ``hofstaetter-tsv``).
* **Repeated pairs**: the same (query, document) with the same float32 score is merged; with another
  score it is a *conflict*: ``on_conflict="first"`` keeps the first and counts the conflicts (with
  examples naming both lines), ``"error"`` stops at the first one. A document that is a positive in
  one record and a negative in another for the same query is always an error.
* **Texts → ids** (``flagembedding``): a query text must equal (after stripping) the text of a query
  of the split; a passage text must equal a document's ``title text`` or its ``text``. A text shared
  by several documents maps to the smallest id (counted as ``ambiguous_texts``). Hashing texts into
  new ids was rejected: ``train-student`` needs the texts in a collection anyway.
* **Unknown ids** (not among the split's queries or the corpus) are an error naming the first line
  and a few ids, unless ``skip_unknown`` drops and counts them.
* **Labels**: the qrels grade where the qrels (``qrels`` file, else the collection's split) judge the
  pair, else 1 for a positive the format names, else 0. **Ranks** (``rank``): ``"file"`` = the run's
  rank column for ``trec-run`` and the order in which the file first lists a query's documents
  otherwise; ``"score"`` = by imported score, best first; ``"none"`` = 0 for all, which puts every
  negative inside ``train-student``'s ``negative_pool``. ``retrieval_score`` is NaN (no retriever).
* **Scale**: the file is read in blocks (:mod:`retrodistill.data.import_readers`); ids become
  integer codes as they arrive (MS MARCO's numeric ids are their own codes, nothing is hashed;
  other ids index a growing dictionary), 13 bytes per record. A stable sort of the records'
  (query, document) codes, a bucket of queries at a time, merges repeated pairs, finds conflicts
  and gives the store its (query_id, doc_id) order; store parts and the candidates file are then
  written a slice at a time. No Python object per record is made.
* **Store manifest**: ``stage`` is ``"import-scores"`` (one of the store stages
  :meth:`TeacherStore.open` accepts); ``teacher`` is
  ``{"name": "imported", "format", "source", "source_sha256", "model"}``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.artifacts import publish_dir, sha256_file
from retrodistill.data.candidates import CandidateSet, CandidatesWriter, read_candidates
from retrodistill.data.collections import Collection, DataFormatError, read_qrels
from retrodistill.data.import_readers import (
    IMPORT_FORMATS,
    ImportFormat,
    ReadContext,
    Records,
    ScoredPair,
    data_row_lines,
)
from retrodistill.data.part_store import PartWriter, StringsHasher
from retrodistill.data.store import TeacherStore, store_schema

__all__ = [
    "CONFLICT_POLICIES",
    "IMPORT_FORMATS",
    "RANK_POLICIES",
    "STAGE",
    "ImportFormat",
    "ImportResult",
    "ReadContext",
    "ScoredPair",
    "import_scores",
]

STAGE = "import-scores"
RANK_POLICIES = ("file", "score", "none")
CONFLICT_POLICIES = ("first", "error")
_EXAMPLES = 5  # conflicts and unknown ids quoted in messages and manifests
_SLICE = 1 << 20  # candidate rows written per step
_LOW = np.int64(0xFFFFFFFF)
_CANONICAL_INT = r"^(0|[1-9][0-9]{0,8})$"
#: Integer ids below this are mapped through a lookup table (8 bytes an entry), larger ones searched.
_TABLE_LIMIT = 1 << 27
#: Records merged per step: bounds the sort's temporaries (about 40 bytes a record).
_BUCKET = 4_000_000


@dataclass
class ImportResult:
    store: TeacherStore
    candidates: CandidateSet
    report: dict[str, Any]  # the manifests' "import" section


# ---------------------------------------------------------------- ids → integer codes


class _Codes:
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
class _Pairs:
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


class _Merger:
    """Collects the records of a file column-wise, then merges repeated pairs in one stable sort."""

    def __init__(self, path: Path, on_conflict: str) -> None:
        self.path = path
        self.on_conflict = on_conflict
        self.queries, self.docs = _Codes(), _Codes()
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

    def _encode(self, codes: _Codes, ids: Any, shift: int) -> np.ndarray:
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

    def merge(self) -> _Pairs:
        """One entry per (query, document): repeated pairs merged, conflicts counted or refused.

        Records are taken a bucket of queries at a time (about :data:`_BUCKET` records each, queries
        in sorted order), so the sort's temporaries stay small whatever the file's size; within a
        bucket one stable sort of (query, document) codes puts each pair's records together, its
        first record first.
        """
        # Record numbers as int32 while they fit: 4 bytes a pair less.
        self.record_type = np.int32 if self.records < 1 << 31 else np.int64
        query_ids, q_rank = self.queries.sorted_ranks(self._used(32) if self.queries.integers else np.empty(0))
        doc_ids, d_rank = self.docs.sorted_ranks(self._used(0) if self.docs.integers else np.empty(0))
        self.queries = self.docs = _Codes()  # the sorted ids replace the first-appearance ones
        # Codes in sorted-id order, so sorting the keys sorts by (query_id, doc_id) as strings do.
        for keys in self.keys:
            keys[:] = (q_rank(keys >> 32) << 32) | d_rank(keys & _LOW)
        del q_rank, d_rank
        offsets = [start for start, *_ in self.segments]
        per_query = np.zeros(len(query_ids), dtype=np.int64)
        for keys in self.keys:
            per_query += np.bincount(keys >> 32, minlength=len(query_ids))
        cumulative = np.cumsum(per_query)
        buckets = max(1, -(-self.records // _BUCKET))
        bounds = np.searchsorted(cumulative, np.arange(1, buckets) * (self.records / buckets)) + 1
        edges = np.unique(np.concatenate([[0], bounds, [len(query_ids)]]))
        out: dict[str, list[np.ndarray]] = {k: [] for k in ("q", "d", "score", "positive", "first", "rank")}
        bad: list[_Bad] = []
        examples: list[_Bad] = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            self._bucket(int(lo), int(hi), offsets, out, bad, examples)
            _return_freed_memory()
        if bad:
            self._refuse(min(bad, key=lambda b: b.record), query_ids, doc_ids)
        examples = sorted(examples, key=lambda b: b.record)[:_EXAMPLES]
        lines = self.lines([b.record for b in examples] + [b.first for b in examples])
        for b in examples:
            line = lines[b.record]
            where = f"{self.path}:{line}" if line is not None else str(self.path)
            self.conflict_examples.append(
                f"{where}: {self._describe(b.key, query_ids, doc_ids)} has score {b.score!r} here "
                f"but {b.first_score!r} {_on_line(lines[b.first])}"
            )
        self.keys, self.scores, self.positive, self.ranks = [], [], [], []

        def joined(name: str, dtype: Any) -> np.ndarray:
            # Popped as joined, so only one column is ever held twice.
            parts = out.pop(name)
            return np.concatenate(parts) if parts else np.empty(0, dtype)

        return _Pairs(
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
        bad: list[_Bad],
        examples: list[_Bad],
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
        for mask, into, count in ((refused, bad, 1), (conflict, examples, _EXAMPLES)):
            if mask.any():
                at_all = np.flatnonzero(mask)
                for at in at_all[np.argsort(record[at_all], kind="stable")[:count]]:
                    first = int(starts[np.searchsorted(starts, at, side="right") - 1])
                    into.append(
                        _Bad(
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

    def _refuse(self, bad: _Bad, query_ids: Any, doc_ids: Any) -> None:
        """Raise at the earliest record (in file order) that gives a pair another role, or (``error``) score."""
        lines = self.lines([bad.record, bad.first])
        key = self._describe(bad.key, query_ids, doc_ids)
        prior = _on_line(lines[bad.first])
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
class _Bad:
    """A record that repeats a pair with another role or score, and the pair's first record."""

    record: int
    first: int
    key: int
    score: float
    first_score: float
    role: bool
    positive: bool


def _on_line(line: int | None) -> str:
    return f"on line {line}" if line is not None else "earlier in the file"


# ---------------------------------------------------------------- checks and labels


def _drop_unknown(pairs: _Pairs, merger: _Merger, context: ReadContext, skip_unknown: bool) -> dict[str, int]:
    """Refuse (or drop and count) pairs whose query is not in the split or document not in the corpus."""
    collection = context.collection
    known_q = np.fromiter(
        (q in collection.queries for q in _iter_strings(pairs.queries)), dtype=bool, count=len(pairs.queries)
    )
    corpus = collection.corpus
    if hasattr(corpus, "rows"):
        known_d = np.asarray(corpus.rows(pairs.docs, missing=-1)) >= 0
    else:
        known_d = np.fromiter((d in corpus for d in _iter_strings(pairs.docs)), dtype=bool, count=len(pairs.docs))
    bad_q, bad_d = ~known_q[pairs.q], ~known_d[pairs.d]
    bad = bad_q | bad_d
    unknown_queries = np.unique(pairs.q[bad_q])
    unknown_docs = np.unique(pairs.d[bad_d])
    count = int(bad.sum())
    if count and not skip_unknown:

        def named(codes: np.ndarray, column: np.ndarray, flags: np.ndarray, ids: Any) -> str:
            # Each id with the line of the first pair naming it, in order of first appearance.
            firsts = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(firsts, column[flags], pairs.first[flags])
            chosen = codes[np.argsort(firsts[codes], kind="stable")[:_EXAMPLES]]
            lines = merger.lines(firsts[chosen])
            return ", ".join(
                f"{context.labels.get(str(ids[int(c)].as_py()), repr(str(ids[int(c)].as_py())))} "
                f"({_on_line(lines[int(firsts[c])])})"
                for c in chosen
            )

        problems = []
        if len(unknown_queries):
            problems.append(
                f"{len(unknown_queries):,} query ids are not among the {len(collection.queries):,} queries of split "
                f"{collection.split!r} of {collection.name} "
                f"(e.g. {named(unknown_queries, pairs.q, bad_q, pairs.queries)})"
            )
        if len(unknown_docs):
            problems.append(
                f"{len(unknown_docs):,} document ids are not in its corpus "
                f"(e.g. {named(unknown_docs, pairs.d, bad_d, pairs.docs)})"
            )
        first_bad = int(pairs.first[bad].min())
        raise DataFormatError(
            merger.path,
            merger.lines([first_bad])[first_bad],
            f"{count:,} pairs name unknown ids: "
            + "; ".join(problems)
            + ". Was the file made for this dataset and split? --skip-unknown drops such pairs.",
        )
    if count:
        pairs.keep(~bad)
    return {"pairs": count, "query_ids": len(unknown_queries), "doc_ids": len(unknown_docs)}


def _distinct(codes: np.ndarray, size: int) -> int:
    """How many distinct values ``codes`` (integers in ``[0, size)``) holds."""
    return int(np.count_nonzero(np.bincount(codes, minlength=size))) if len(codes) else 0


def _iter_strings(array: Any) -> Iterator[str]:
    """The values of an Arrow string array, a slice at a time (bounded Python memory)."""
    for start in range(0, len(array), _SLICE):
        yield from array.slice(start, _SLICE).to_pylist()


def _judged(pairs: _Pairs, qrels: dict[str, dict[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """For each pair: whether the qrels judge it, and the grade (0 where not)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    jq = [q for q, docs in qrels.items() for _ in docs]
    jd = [d for docs in qrels.values() for d in docs]
    grades = np.array([int(g) for docs in qrels.values() for g in docs.values()], dtype=np.int64)
    judged = np.zeros(len(pairs), dtype=bool)
    grade = np.zeros(len(pairs), dtype=np.int32)
    if not jq or not len(pairs):
        return judged, grade
    qi = pc.index_in(pa.array(jq, pa.string()), value_set=pairs.queries)
    di = pc.index_in(pa.array(jd, pa.string()), value_set=pairs.docs)
    present = pc.and_(qi.is_valid(), di.is_valid()).to_numpy(zero_copy_only=False)
    q = qi.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    d = di.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    keys = (q[present] << 32) | d[present]
    order = np.argsort(keys)
    keys, values = keys[order], grades[present][order]
    if len(keys):
        for begin in range(0, len(pairs), 4 * _SLICE):  # a slice at a time: the temporaries stay small
            rows = slice(begin, begin + 4 * _SLICE)
            wanted = (pairs.q[rows].astype(np.int64) << 32) | pairs.d[rows]
            position = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
            hit = keys[position] == wanted
            judged[rows] = hit
            grade[rows] = np.where(hit, values[position], 0)
    return judged, grade


def _query_slices(q: np.ndarray, size: int) -> Iterator[slice]:
    """Consecutive slices of about ``size`` pairs that never split a query (``q`` is sorted)."""
    start, n = 0, len(q)
    while start < n:
        stop = min(start + size, n)
        if stop < n:
            stop = int(np.searchsorted(q, q[stop - 1], side="right"))
        yield slice(start, stop)
        start = stop


def _ranks(pairs: _Pairs, rows: slice, policy: str) -> np.ndarray:
    """The candidate rank (module docstring) of each pair in ``rows``, a slice of whole queries."""
    q = pairs.q[rows]
    n = len(q)
    if policy == "none":
        return np.zeros(n, dtype=np.int32)
    if policy == "score":
        order = np.lexsort((pairs.d[rows], -pairs.score[rows].astype(np.float64), q))
    else:
        order = np.lexsort((pairs.first[rows], q))
    # The pairs are sorted by query, so sorted position i lies in the query that pair i lies in.
    new = np.ones(n, dtype=bool)
    new[1:] = q[1:] != q[:-1]
    starts = np.flatnonzero(new)
    group_start = np.repeat(starts, np.diff(np.append(starts, n)))
    position = np.empty(n, dtype=np.int32)
    position[order] = np.arange(n) - group_start + 1
    if policy == "file" and pairs.rank is not None:
        stated = pairs.rank[rows]
        position = np.where(stated > 0, stated, position).astype(np.int32)
    return position


def _return_freed_memory() -> None:
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


# ---------------------------------------------------------------- the stage


def import_scores(
    source: str | os.PathLike[str],
    format: str,
    *,
    collection: Collection,
    out: str | os.PathLike[str],
    candidates_out: str | os.PathLike[str] | None = None,
    model: str = "unknown",
    qrels: str | os.PathLike[str] | None = None,
    rank: str = "file",
    on_conflict: str = "first",
    skip_unknown: bool = False,
    allow_pickle: bool = False,
    part_size: int = 50_000,
    overwrite: bool = False,
) -> ImportResult:
    """Import the score file ``source`` (in ``format``) as a teacher-score store and its candidates.

    Args:
        source: the score file.
        format: a name in :data:`IMPORT_FORMATS` (see the module docstring).
        collection: the collection split the scores belong to; every id is checked against it.
        out: the store directory to write.
        candidates_out: the candidates directory to write (default: ``OUT-candidates`` beside ``out``).
        model: what produced the scores (e.g. ``"bert-ensemble"``), recorded as ``teacher.model``.
        qrels: a qrels file for the labels (default: the collection's qrels of its split).
        rank: candidate ranks: ``"file"``, ``"score"`` or ``"none"``.
        on_conflict: a pair given two scores: ``"first"`` keeps the first, ``"error"`` raises.
        skip_unknown: drop pairs with ids the collection lacks instead of raising.
        allow_pickle: permit ``st-scores-pickle`` (read with a restricted unpickler).
        part_size: pairs per store part.
        overwrite: replace ``out`` / ``candidates_out`` if they exist.

    Raises:
        DataFormatError: a malformed record, a conflict under ``on_conflict="error"``, unknown ids.
        ValueError: bad arguments, existing outputs, a margin file, a pickle without ``allow_pickle``.
    """
    start = time.perf_counter()
    path = Path(source)
    importer = IMPORT_FORMATS.get(format)
    if rank not in RANK_POLICIES:
        raise ValueError(f"rank must be one of {', '.join(RANK_POLICIES)}, got {rank!r}")
    if on_conflict not in CONFLICT_POLICIES:
        raise ValueError(f"on_conflict must be one of {', '.join(CONFLICT_POLICIES)}, got {on_conflict!r}")
    if part_size < 1:
        raise ValueError(f"part_size must be positive, got {part_size}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    store_dir = Path(out)
    cand_dir = (
        Path(candidates_out) if candidates_out is not None else store_dir.with_name(f"{store_dir.name}-candidates")
    )
    _check_outputs(path, store_dir, cand_dir, overwrite)

    context = ReadContext(collection, allow_pickle=allow_pickle)
    merger = _Merger(path, on_conflict)
    for batch in importer.read(path, context):
        merger.add(batch)
    pairs = merger.merge()
    _return_freed_memory()
    if not len(pairs):
        raise DataFormatError(path, None, "empty file: no scores")
    skipped = _drop_unknown(pairs, merger, context, skip_unknown)
    if not len(pairs):
        raise ValueError(
            f"{path}: every pair names an id unknown to {collection.name} ({collection.split}); nothing to import"
        )
    judged_by = read_qrels(qrels) if qrels is not None else collection.qrels
    judged, grade = _judged(pairs, judged_by)
    _return_freed_memory()
    labels = np.where(judged, grade, pairs.positive.astype(np.int32))
    changed = int((judged & ((grade > 0) != pairs.positive)).sum()) if importer.names_positives else 0
    queries_with_pairs = _distinct(pairs.q, len(pairs.queries))
    report: dict[str, Any] = {
        "records": merger.records,
        "pairs": len(pairs),
        "duplicates": merger.duplicates,
        "conflicts": merger.conflicts,
        "conflict_examples": merger.conflict_examples,
        "on_conflict": on_conflict,
        "skipped_unknown": skipped,
        "ambiguous_texts": context.ambiguous_texts,
        "labels": f"qrels file {qrels}" if qrels is not None else f"qrels/{collection.split} of {collection.name}",
        "labels_changed_by_qrels": changed,
        "queries_without_positive": queries_with_pairs - _distinct(pairs.q[labels > 0], len(pairs.queries)),
        "rank": rank,
    }
    teacher = {
        "name": "imported",
        "format": format,
        "source": str(path),
        "source_sha256": sha256_file(path),
        "model": model,
    }
    config = {
        "source": str(path),
        "format": format,
        "dataset": collection.name,
        "split": collection.split,
        "candidates": str(cand_dir),  # where train-student finds the candidates when not given them
        "model": model,
        "qrels": None if qrels is None else str(qrels),
        "rank": rank,
        "on_conflict": on_conflict,
        "skip_unknown": skip_unknown,
        "part_size": part_size,
    }
    cand_inputs = dict(collection.fingerprints)
    if qrels is not None:
        cand_inputs["qrels_file"] = sha256_file(qrels)

    staging = [_staging_dir(cand_dir), _staging_dir(store_dir)]
    try:
        cand_manifest = _write_candidates(
            staging[0],
            pairs,
            labels,
            rank,
            {
                "stage": STAGE,
                "config": config,
                "dataset": collection.name,
                "split": collection.split,
                "teacher": teacher,
                "inputs": cand_inputs,
                "import": report,
            },
        )
        inputs = {
            "corpus": collection.fingerprints["corpus"],
            "queries": collection.fingerprints["queries"],
            "candidates": cand_manifest["fingerprint"],
        }
        writer = _write_store(staging[1], pairs, part_size, teacher, inputs, config, report, start)
        publish_dir(staging[0], cand_dir)
        writer.publish(store_dir)
    finally:
        for directory in staging:
            shutil.rmtree(directory, ignore_errors=True)
    # Just written and hashed: opened without a second pass over the rows.
    return ImportResult(TeacherStore.open(store_dir), read_candidates(cand_dir, verify=False), report)


def _write_candidates(
    directory: Path, pairs: _Pairs, labels: np.ndarray, rank: str, manifest: dict[str, Any]
) -> dict[str, Any]:
    """The candidates in their canonical order (query_id, rank == 0, rank, doc_id), whole queries at a time."""
    import pyarrow as pa

    writer = CandidatesWriter(directory)
    try:
        for rows in _query_slices(pairs.q, _SLICE):
            ranks = _ranks(pairs, rows, rank)
            # The pairs are sorted by (query, doc); a stable sort on (query, rank == 0, rank) keeps doc order in ties.
            take = np.lexsort((ranks, ranks == 0, pairs.q[rows]))
            chosen = take + rows.start
            writer.write(
                pa.table(
                    {
                        "query_id": pairs.queries.take(pa.array(pairs.q[chosen])),
                        "doc_id": pairs.docs.take(pa.array(pairs.d[chosen])),
                        "label": labels[chosen],
                        "rank": ranks[take],
                        "retrieval_score": np.full(len(chosen), np.nan, dtype=np.float32),
                    }
                )
            )
    except BaseException:
        writer.abort()
        raise
    return writer.close(manifest)


def _write_store(
    directory: Path,
    pairs: _Pairs,
    part_size: int,
    teacher: dict[str, Any],
    inputs: dict[str, str],
    config: dict[str, Any],
    report: dict[str, Any],
    start: float,
) -> PartWriter:
    """Write the parts and the manifest of a complete store, as ``score_pairs_to_store`` would."""
    import pyarrow as pa

    num_parts = -(-len(pairs) // part_size)
    manifest: dict[str, Any] = {
        "stage": STAGE,
        "config": config,
        "teacher": teacher,
        "inputs": inputs,
        "part_size": part_size,
        "num_parts": num_parts,
        "num_pairs": len(pairs),
        "pairs_fingerprint": "",  # set below, once every part is hashed
        "parts": {},
        "complete": False,
        "counts": {
            "pairs": len(pairs),
            "queries": _distinct(pairs.q, len(pairs.queries)),
            "documents": _distinct(pairs.d, len(pairs.docs)),
            "parts": num_parts,
        },
        "import": report,
    }
    writer = PartWriter(directory, manifest)
    pair_hash, row_hash = StringsHasher(), StringsHasher()
    for index in range(num_parts):
        rows = slice(index * part_size, (index + 1) * part_size)
        table = pa.table(
            {
                "query_id": pairs.queries.take(pa.array(pairs.q[rows])),
                "doc_id": pairs.docs.take(pa.array(pairs.d[rows])),
                "score": pairs.score[rows],
            },
            schema=store_schema(),
        )
        writer.write(index, table, save=False)
        pair_hash.update(table.column("query_id"), table.column("doc_id"))
        row_hash.update(table.column("query_id"), table.column("doc_id"), table.column("score"))
    manifest["pairs_fingerprint"] = pair_hash.hexdigest()
    manifest["wall_time_s"] = round(time.perf_counter() - start, 3)
    writer.finish(row_hash.hexdigest())
    return writer


def _check_outputs(source: Path, store_dir: Path, cand_dir: Path, overwrite: bool) -> None:
    a, b = store_dir.resolve(), cand_dir.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise ValueError(f"the store ({store_dir}) and the candidates ({cand_dir}) need two separate directories")
    for target in (store_dir, cand_dir):
        if target.exists() and not overwrite:
            raise ValueError(f"{target} already exists; choose another output or pass --overwrite to replace it")
        if target.resolve() in source.resolve().parents:
            raise ValueError(f"{source} lies inside the output {target}, which the import would replace")


def _staging_dir(target: Path) -> Path:
    """A fresh folder beside ``target`` (same filesystem, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
