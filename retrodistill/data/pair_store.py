"""Pairwise teacher stores: P(doc_i more relevant than doc_j | query) for the top-m pairs of each query.

A pairwise teacher (PairDistill's pairwise reranker) reads ``(query, doc_i, doc_j)`` and gives the
probability ``p_ij`` that ``doc_i`` is the more relevant of the two. Scoring every pair of a candidate
list costs ``O(k²)`` forward passes, so only *comparisons* among each query's top-m candidates are scored.

Layout of a store directory (parts, manifest and resumption as in :mod:`retrodistill.data.store`)::

    STORE/
      manifest.json         stage "score-pairwise", teacher, m, ranked_by, max_rank_gap, orders,
                            symmetrisation, inputs (corpus, queries, candidates[, teacher_scores]),
                            part_size, parts, complete, fingerprint
      part-00000.parquet    query_id string, doc_i string, doc_j string, prob float32
      part-00001.parquet    ...

Invariants:

- ``prob`` is ``p_ij`` for the ordered pair ``(doc_i, doc_j)``: a probability in [0, 1], never a logit.
- The work is a list of comparisons ``(query_id, doc_a, doc_b)`` made by :func:`select_comparisons`:
  ``doc_a`` is ranked above ``doc_b`` by the pointwise ranking (``ranked_by``), comparisons come in
  query-id order, then in the order of the ranking. Part ``i`` holds the rows of comparisons
  ``[i * part_size, (i + 1) * part_size)``, so it always holds the same rows and a resumed run ends
  with exactly the rows of an uninterrupted one.
- ``orders`` says which rows a comparison writes (:data:`ORDERS`):

  ``symmetrised``  rows ``(a, b)`` then ``(b, a)``; both orders are scored and
                   ``p_ab = (P(a>b) + 1 - P(b>a)) / 2``, ``p_ba = 1 - p_ab`` exactly (in float32), which
                   removes the reranker's position bias;
  ``both``         rows ``(a, b)`` then ``(b, a)``, each the raw ``P`` of that input order;
  ``ranked``       row ``(a, b)`` only, the raw ``P(a>b)`` (PairDistill's released code scores only the
                   order in which the first document is the one ranked higher); ``(b, a)`` is unscored.

- ``fingerprint`` (complete stores) hashes every row ``query_id<TAB>doc_i<TAB>doc_j<TAB>float.hex(prob)``.

Training reads a store with :meth:`PairStore.matrix`, which gives, for a query and its ``1+N`` documents,
the ``(1+N, 1+N)`` matrix the ``pairwise-kl`` loss takes: ``[i, j] = p_ij``, NaN where not scored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrodistill.artifacts import atomic_path, sha256_file, sha256_strings
from retrodistill.data.store import PartStore, part_name

STAGE = "score-pairwise"
ORDERS = ("symmetrised", "both", "ranked")

Comparison = tuple[str, str, str]
"""``(query_id, doc_a, doc_b)``: ``doc_a`` ranked above ``doc_b`` by the pointwise ranking."""


def pair_store_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [("query_id", pa.string()), ("doc_i", pa.string()), ("doc_j", pa.string()), ("prob", pa.float32())]
    )


def comparison_rows(comparisons: Sequence[Comparison], orders: str) -> list[Comparison]:
    """The ordered ``(query_id, doc_i, doc_j)`` rows that ``comparisons`` write under ``orders``."""
    check_orders(orders)
    if orders == "ranked":
        return list(comparisons)
    return [row for q, a, b in comparisons for row in ((q, a, b), (q, b, a))]


def check_orders(orders: str) -> None:
    if orders not in ORDERS:
        raise ValueError(f"orders {orders!r} is not one of {', '.join(ORDERS)}")


def comparisons_fingerprint(comparisons: Iterable[Comparison]) -> str:
    """Fingerprint of the ordered comparisons a store covers."""
    return sha256_strings(f"{q}\t{a}\t{b}" for q, a, b in comparisons)


def pair_rows_fingerprint(
    query_ids: Iterable[str], docs_i: Iterable[str], docs_j: Iterable[str], probs: Iterable[float]
) -> str:
    """Fingerprint of a pair store's rows in order: ``query_id<TAB>doc_i<TAB>doc_j<TAB>float.hex(prob)``."""
    return sha256_strings(
        f"{q}\t{i}\t{j}\t{float(p).hex()}" for q, i, j, p in zip(query_ids, docs_i, docs_j, probs, strict=True)
    )


def write_pair_part(
    directory: str | os.PathLike[str], index: int, rows: Sequence[Comparison], probs: Sequence[float] | np.ndarray
) -> dict[str, Any]:
    """Write one part atomically; return its manifest entry (``rows``, ``sha256``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(rows) != len(probs):
        raise ValueError(f"part {index}: {len(rows)} rows but {len(probs)} probabilities")
    table = pa.table(
        {
            "query_id": [q for q, _, _ in rows],
            "doc_i": [i for _, i, _ in rows],
            "doc_j": [j for _, _, j in rows],
            "prob": np.asarray(probs, dtype=np.float32),
        },
        schema=pair_store_schema(),
    )
    path = Path(directory) / part_name(index)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return {"rows": len(rows), "sha256": sha256_file(path)}


def ranking_by_scores(scores: Mapping[tuple[str, str], float]) -> dict[str, list[str]]:
    """Each query's documents by decreasing teacher score (ties and NaN: by doc id, NaN last).

    Args:
        scores: ``(query_id, doc_id) → score``, e.g. :meth:`retrodistill.data.store.TeacherStore.scores`.
    """
    grouped: dict[str, list[tuple[float, str]]] = {}
    for (query_id, doc_id), score in scores.items():
        key = float(score)
        grouped.setdefault(query_id, []).append((np.inf if np.isnan(key) else -key, doc_id))
    return {q: [d for _, d in sorted(docs)] for q, docs in grouped.items()}


def ranking_by_candidates(rows: Iterable[Any]) -> dict[str, list[str]]:
    """Each query's candidates in mining-rank order (retrieved by rank, then those not retrieved).

    Args:
        rows: :class:`~retrodistill.data.candidates.Candidate` rows (``CandidateSet.rows``).
    """
    from retrodistill.data.candidates import candidate_order

    ranking: dict[str, list[str]] = {}
    for c in sorted(rows, key=candidate_order):
        ranking.setdefault(c.query_id, []).append(c.doc_id)
    return ranking


def select_comparisons(
    ranking: Mapping[str, Sequence[str]], m: int, max_rank_gap: int | None = None
) -> list[Comparison]:
    """Comparisons among each query's top-m documents: every pair once, higher-ranked document first.

    A query with ``k >= m`` documents gets ``m (m - 1) / 2`` comparisons (``m (m - 1)`` ordered pairs
    once both orders are scored); with ``max_rank_gap = g`` only pairs at most ``g`` ranks apart
    (PairDistill's released code pairs each document with the next 5). Queries are taken in sorted
    id order, pairs by (rank of a, rank of b).

    Args:
        ranking: query id → its documents, best first (:func:`ranking_by_scores`, :func:`ranking_by_candidates`).
        m: documents per query to compare, ``>= 2``.
        max_rank_gap: only pair documents at most this many ranks apart (``>= 1``); ``None`` for all.

    Raises:
        ValueError: ``m < 2``, ``max_rank_gap < 1``, or a query ranking a document twice in its top-m.

    Example:
        >>> select_comparisons({"q": ["d3", "d1", "d2"]}, m=2)
        [('q', 'd3', 'd1')]
    """
    if m < 2:
        raise ValueError(f"m must be at least 2 (one pair), got {m}")
    if max_rank_gap is not None and max_rank_gap < 1:
        raise ValueError(f"max_rank_gap must be at least 1 or null, got {max_rank_gap}")
    comparisons: list[Comparison] = []
    for query_id in sorted(ranking):
        top = list(ranking[query_id][:m])
        if len(set(top)) != len(top):
            raise ValueError(f"query {query_id}: its top-{m} documents list a document twice")
        for a in range(len(top)):
            stop = len(top) if max_rank_gap is None else min(len(top), a + 1 + max_rank_gap)
            comparisons.extend((query_id, top[a], top[b]) for b in range(a + 1, stop))
    return comparisons


@dataclass
class PairStore(PartStore):
    """A complete pairwise teacher store, read back; :meth:`matrix` is what training calls per example."""

    _lookup: _Lookup | None = field(default=None, repr=False)

    stages: ClassVar[frozenset[str]] = frozenset({STAGE})
    what: ClassVar[str] = "pairwise teacher store"
    resume_command: ClassVar[str] = "score-pairwise"

    @classmethod
    def schema(cls) -> Any:
        return pair_store_schema()

    @property
    def query_ids(self) -> list[str]:
        """The queries with at least one scored pair, sorted."""
        return sorted(self._index().spans)

    def __contains__(self, query_id: object) -> bool:
        return query_id in self._index().spans

    def matrix(self, query_id: str, doc_ids: Sequence[str]) -> np.ndarray:
        """The pairwise teacher probabilities among ``doc_ids`` for ``query_id``.

        Args:
            query_id: the query.
            doc_ids: its ``1+N`` documents in the training example's column order (positive first).

        Returns:
            float32 array ``(1+N, 1+N)``: ``[i, j] = p_ij``, the probability that ``doc_ids[i]`` is more
            relevant than ``doc_ids[j]``; NaN where the pair was not scored (the diagonal, pairs outside
            the query's top-m, the other order under ``orders: ranked``, a query without scored pairs).

        Raises:
            ValueError: ``doc_ids`` names a document twice.
        """
        n = len(doc_ids)
        out = np.full((n, n), np.nan, dtype=np.float32)
        index = self._index()
        span = index.spans.get(query_id)
        if len(set(doc_ids)) != n:
            raise ValueError(f"query {query_id}: doc_ids name a document twice: {list(doc_ids)}")
        if span is None or n < 2:
            return out
        codes = np.fromiter((index.doc_codes.get(d, -1) for d in doc_ids), dtype=np.int64, count=n)
        start, stop = span
        order = np.argsort(codes)
        ordered = codes[order]
        rows, row_found = _columns(ordered, order, index.doc_i[start:stop])
        cols, col_found = _columns(ordered, order, index.doc_j[start:stop])
        found = row_found & col_found
        out[rows[found], cols[found]] = index.prob[start:stop][found]
        return out

    def matrices(self, query_ids: Sequence[str], doc_ids: Sequence[Sequence[str]]) -> np.ndarray:
        """:meth:`matrix` for a batch: float32 ``(B, 1+N, 1+N)``; every example needs the same ``1+N``."""
        if len(query_ids) != len(doc_ids):
            raise ValueError(f"got {len(query_ids)} query ids but {len(doc_ids)} document lists")
        sizes = {len(docs) for docs in doc_ids}
        if len(sizes) > 1:
            raise ValueError(f"every example needs the same number of documents, got sizes {sorted(sizes)}")
        width = sizes.pop() if sizes else 0
        out = np.empty((len(query_ids), width, width), dtype=np.float32)
        for b, (query_id, docs) in enumerate(zip(query_ids, doc_ids, strict=True)):
            out[b] = self.matrix(query_id, docs)
        return out

    def _index(self) -> _Lookup:
        if self._lookup is None:
            self._lookup = _Lookup.build(self.table())
        return self._lookup


def _columns(ordered: np.ndarray, order: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column of each stored doc code among a row's sorted codes; ``found`` false where absent."""
    position = np.minimum(np.searchsorted(ordered, codes), len(ordered) - 1)
    return order[position], ordered[position] == codes


@dataclass
class _Lookup:
    """Rows grouped by query: ``doc_i``/``doc_j`` as integer codes, ``spans[q] = (start, stop)``."""

    spans: dict[str, tuple[int, int]]
    doc_codes: dict[str, int]
    doc_i: np.ndarray
    doc_j: np.ndarray
    prob: np.ndarray

    @classmethod
    def build(cls, table: Any) -> _Lookup:
        import pyarrow as pa
        import pyarrow.compute as pc

        queries = pc.dictionary_encode(table.column("query_id").combine_chunks())
        query_codes = queries.indices.to_numpy(zero_copy_only=False)
        order = np.argsort(query_codes, kind="stable")
        sorted_codes = query_codes[order]
        names = queries.dictionary.to_pylist()
        starts = np.searchsorted(sorted_codes, np.arange(len(names)), side="left")
        stops = np.searchsorted(sorted_codes, np.arange(len(names)), side="right")
        spans = {name: (int(a), int(b)) for name, a, b in zip(names, starts, stops, strict=True)}

        # One code space for both document columns, so a document has the same code as i and as j.
        docs = pc.dictionary_encode(
            pa.concat_arrays([table.column("doc_i").combine_chunks(), table.column("doc_j").combine_chunks()])
        )
        doc_codes = docs.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        rows = len(table)
        return cls(
            spans=spans,
            doc_codes={d: k for k, d in enumerate(docs.dictionary.to_pylist())},
            doc_i=doc_codes[:rows][order],
            doc_j=doc_codes[rows:][order],
            prob=table.column("prob").to_numpy().astype(np.float32)[order],
        )
