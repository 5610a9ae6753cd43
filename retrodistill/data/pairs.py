"""The (query, document) pairs a teacher scores, as an Arrow table, and their texts a part at a time.

A *pair table* has two string columns, ``query_id`` and ``doc_id``, one row per distinct pair,
sorted by (query_id, doc_id) (``CandidateSet.pair_table()`` gives one). Scoring walks it in
zero-copy slices; :class:`PairTexts` turns a slice's ids into the texts a teacher reads, through
the collection's memory-mapped :class:`~retrodistill.data.corpus.Corpus` (``rows`` then
``texts``), so no dict of all texts and no list of all pairs is ever built.

Stages that hold their pairs as Python tuples (``score-pairwise``) check them with
:func:`check_pair_texts` and read document texts through :class:`DocTexts`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np


def pair_table(pairs: Any) -> Any:
    """``pairs`` as a pair table: a table with ``query_id``/``doc_id`` is kept, a list of tuples converted."""
    import pyarrow as pa

    if hasattr(pairs, "column"):
        return pairs.select(["query_id", "doc_id"])
    rows = list(pairs)
    return pa.table(
        {"query_id": pa.array([q for q, _ in rows], pa.string()), "doc_id": pa.array([d for _, d in rows], pa.string())}
    )


def check_sorted_pairs(pairs: Any) -> None:
    """Raise ``ValueError`` unless the pairs are distinct and sorted by (query_id, doc_id)."""
    import pyarrow.compute as pc

    n = pairs.num_rows
    if n < 2:
        return
    q, d = pairs.column("query_id"), pairs.column("doc_id")
    q0, q1, d0, d1 = q.slice(0, n - 1), q.slice(1), d.slice(0, n - 1), d.slice(1)
    ascending = pc.or_(pc.less(q0, q1), pc.and_(pc.equal(q0, q1), pc.less(d0, d1)))
    if not pc.all(ascending).as_py():
        raise ValueError("pairs must be distinct and sorted by (query_id, doc_id)")


def count_distinct(column: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.count_distinct(column).as_py())


class PairTexts:
    """Texts of the queries and documents of some pairs, fetched column-wise per slice.

    Args:
        queries: query id → text.
        docs: a :class:`~retrodistill.data.corpus.Corpus` (anything with ``rows(ids, missing=)`` and
            ``texts(rows)``), or a mapping document id → text.
    """

    def __init__(self, queries: Mapping[str, str], docs: Mapping[str, Any]) -> None:
        self._queries = queries
        self._docs = docs
        self._corpus = docs if hasattr(docs, "rows") and hasattr(docs, "texts") else None

    def queries(self, ids: Any) -> list[str]:
        """The text of each query id (an Arrow string array)."""
        return [self._queries[q] for q in ids.to_pylist()]

    def docs(self, ids: Any) -> list[str]:
        """The text of each document id (an Arrow string array): ``title text`` for a corpus."""
        if self._corpus is not None:
            return list(self._corpus.texts(self._corpus.rows(ids)))
        return [self._docs[d] for d in ids.to_pylist()]

    def check(self, pairs: Any) -> None:
        """Raise ``ValueError`` counting the pairs whose query or document has no text."""
        import pyarrow.compute as pc

        problems = []
        for kind, column in (("query", "query_id"), ("document", "doc_id")):
            ids = pairs.column(column)
            unique = pc.unique(ids)
            unknown = self._unknown(unique, documents=kind == "document")
            if len(unknown):
                named = int(pc.sum(pc.is_in(ids, value_set=unknown)).as_py() or 0)
                examples = sorted(unknown.to_pylist())[:3] if len(unknown) <= 1000 else unknown.slice(0, 3).to_pylist()
                problems.append(f"{named:,} pairs name {len(unknown):,} unknown {kind} ids (e.g. {examples})")
        if problems:
            raise ValueError(" and ".join(problems) + "; were the candidates made for this collection and split?")

    def _unknown(self, unique: Any, *, documents: bool) -> Any:
        import pyarrow as pa

        if documents and self._corpus is not None:
            rows = np.asarray(self._corpus.rows(unique, missing=-1))
            return unique.filter(pa.array(rows < 0))
        known = self._docs if documents else self._queries
        return pa.array([i for i in unique.to_pylist() if i not in known], pa.string())


def check_pair_texts(
    pairs: Sequence[tuple[str, str]], query_text: Mapping[str, str], doc_text: Mapping[str, Any]
) -> None:
    """Raise ``ValueError`` counting the (query_id, doc_id) tuples whose query or document has no text."""
    PairTexts(query_text, doc_text).check(pair_table(pairs))


class DocTexts(Mapping[str, str]):
    """Document id → ``title text`` of a corpus, joined on access (the corpus stays one copy).

    Args:
        corpus: document id → a record with ``joined()`` (a collection's corpus).
    """

    def __init__(self, corpus: Mapping[str, Any]) -> None:
        self._corpus = corpus

    def __getitem__(self, doc_id: str) -> str:
        return str(self._corpus[doc_id].joined())

    def __iter__(self) -> Iterator[str]:
        return iter(self._corpus)

    def __len__(self) -> int:
        return len(self._corpus)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._corpus
