"""The teacher's data for a training set, addressed by row numbers (the ``ids`` label layout).

Losses that need the teacher beyond a row's own ``1 + N`` scores read it from a :class:`TeacherTable`
held by the loss adapter (:mod:`retrodistill.train.st_loss`): the teacher's scores of a query against
the other rows' documents (``in-batch-kl``), stored teacher embeddings (``embedding``) and pairwise
probabilities (``pairwise-kl``). A dataset row's label carries ``[query_row, doc_row_0, …, doc_row_N]``
into the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from retrodistill.data.pair_store import PairStore
    from retrodistill.data.teacher_embeddings import TeacherEmbeddings


@dataclass
class TeacherTable:
    """The teacher's data for a training set, addressed by row numbers (the ``ids`` label layout).

    ``query_ids[r]`` / ``doc_ids[r]`` name row ``r``. ``pair_keys`` holds, sorted,
    ``query_row * len(doc_ids) + doc_row`` for every (query, document) pair the teacher scored,
    ``pair_scores`` the matching raw scores. ``query_embeddings`` / ``doc_embeddings``
    (``(Q, D_t)`` / ``(len(doc_ids), D_t)`` float32, row-aligned) are the teacher's embeddings,
    when a loss needs them. ``pairs`` is the pairwise teacher store that :meth:`pairwise` reads,
    when a loss needs pairwise probabilities (``pairwise-kl``).
    """

    query_ids: list[str]
    doc_ids: list[str]
    pair_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pair_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    query_embeddings: np.ndarray | None = None
    doc_embeddings: np.ndarray | None = None
    pairs: PairStore | None = None

    def query_rows(self) -> dict[str, int]:
        return {qid: row for row, qid in enumerate(self.query_ids)}

    def doc_rows(self) -> dict[str, int]:
        return {did: row for row, did in enumerate(self.doc_ids)}

    @property
    def embedding_dim(self) -> int | None:
        """The teacher's embedding dimension, or ``None`` without embeddings."""
        return None if self.doc_embeddings is None else int(self.doc_embeddings.shape[1])

    def scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        """Teacher scores of ``(B,)`` queries against ``(B, K)`` documents: ``(B, K)``, NaN where unscored."""
        keys = query_rows.astype(np.int64)[:, None] * len(self.doc_ids) + doc_rows.astype(np.int64)  # (B, K)
        found = np.searchsorted(self.pair_keys, keys).clip(max=max(len(self.pair_keys) - 1, 0))
        out = np.full(keys.shape, np.nan, dtype=np.float32)
        if len(self.pair_keys):
            hit = self.pair_keys[found] == keys
            out[hit] = self.pair_scores[found[hit]]
        return out

    def pairwise(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        """Pairwise teacher probabilities among each row's documents: float32 ``(B, K, K)``.

        ``[b, i, j]`` is ``P(doc_rows[b, i] more relevant than doc_rows[b, j] | query_rows[b])`` from
        :attr:`pairs` (:meth:`~retrodistill.data.pair_store.PairStore.matrices`), columns in the row's
        order; NaN where the pair was not scored.

        Raises:
            ValueError: If the table holds no pair store.
        """
        if self.pairs is None:
            raise ValueError("this TeacherTable holds no pair store: build it with build_teacher_table(pairs=...)")
        query_ids = [self.query_ids[int(q)] for q in query_rows]
        doc_ids = [[self.doc_ids[int(d)] for d in row] for row in doc_rows]
        return self.pairs.matrices(query_ids, doc_ids)

    def pair_names(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> list[tuple[str, str]]:
        """The ``(query_id, doc_id)`` of paired rows, for error messages."""
        return [(self.query_ids[int(q)], self.doc_ids[int(d)]) for q, d in zip(query_rows, doc_rows, strict=True)]


def build_teacher_table(
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    teacher_scores: Mapping[tuple[str, str], float] | None = None,
    embeddings: TeacherEmbeddings | None = None,
    pairs: PairStore | None = None,
) -> TeacherTable:
    """A :class:`TeacherTable` over the distinct ids given (sorted), with every stored pair among them.

    ``pairs`` (a pairwise teacher store) is kept as is and read batch by batch by :meth:`TeacherTable.pairwise`.

    Raises:
        ValueError: If ``embeddings`` lacks one of the ids.
    """
    table = TeacherTable(sorted(set(query_ids)), sorted(set(doc_ids)), pairs=pairs)
    if teacher_scores is not None:
        query_row, doc_row, width = table.query_rows(), table.doc_rows(), len(table.doc_ids)
        keys, values = [], []
        for (qid, did), score in teacher_scores.items():
            q, d = query_row.get(qid), doc_row.get(did)
            if q is not None and d is not None:
                keys.append(q * width + d)
                values.append(score)
        order = np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")
        table.pair_keys = np.asarray(keys, dtype=np.int64)[order]
        table.pair_scores = np.asarray(values, dtype=np.float32)[order]
    if embeddings is not None:
        table.query_embeddings = embeddings.vectors("queries", table.query_ids)
        table.doc_embeddings = embeddings.vectors("documents", table.doc_ids)
    return table
