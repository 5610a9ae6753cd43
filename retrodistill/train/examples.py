"""Training examples for distillation: a query, 1 + N documents and the teacher's data for them.

For every judged positive of a query and every epoch, N negatives are drawn (without replacement,
seeded) from the query's negatives ranked within ``negative_pool`` (or unranked: judged non-relevant
documents and triples-file negatives); column 0 is the positive. Drawing afresh each epoch shows
the student more of the teacher's judgments. How they are drawn is ``negative_sampling`` (uniformly
by default; the best-ranked, rank-weighted, …) or, for TAS-balanced batches, balanced over bins of
the teacher's margin: see :mod:`retrodistill.train.sampling`.

At MS MARCO size (500k queries, 40M candidate rows) nothing here is a Python object per candidate
or per example: :func:`build_examples` reads the candidates column-wise and returns
:class:`Examples`, integer arrays of candidate rows ``(n, 1 + N)`` (and the teacher's scores as a
float array of the same shape); :meth:`Examples.dataset` wraps them in a ``datasets.Dataset`` whose
transform looks the texts up when the trainer collates a batch (queries from a list, documents from
the collection's memory-mapped corpus), so no epoch is ever unrolled into text columns. The seeded
draw is the one the earlier, row-object implementation made (the same ``random.Random`` calls in the
same order), so a seed gives the same batches as before.

A dataset's ``label`` takes one of two layouts (see :mod:`retrodistill.train.st_loss`):

* **scores**: the teacher's ``1 + N`` float scores per row: all a score loss needs.
* **ids**: ``2 + N`` integer row numbers per row, the query's and each document's, into a
  :class:`~retrodistill.train.teacher_table.TeacherTable` that the adapter holds. The ids travel in
  the label because sentence-transformers' collator tokenizes every other column as text.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from retrodistill.data.candidates import CandidateSet
from retrodistill.data.collections import Collection
from retrodistill.data.teacher_embeddings import (  # noqa: F401  (re-exported: their old home)
    EMBEDDINGS_STAGE,
    TeacherEmbeddings,
    TextEncoder,
    precompute_teacher_embeddings,
)
from retrodistill.train.sampling import draw_margin_balanced, negative_sampler, ranked_order
from retrodistill.train.teacher_table import TeacherTable, build_teacher_table  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import datasets


def _candidate_columns(candidates: CandidateSet) -> Any:
    """The candidates as a pyarrow Table, checked to be grouped by query (sorted by query id).

    Raises:
        ValueError: If the rows are not sorted by query id.
    """
    import pyarrow.compute as pc

    table = candidates.table
    queries = table.column("query_id")
    n = len(queries)
    if n > 1 and not pc.all(pc.less_equal(queries.slice(0, n - 1), queries.slice(1))).as_py():
        raise ValueError(f"candidates {candidates.path}: rows are not sorted by query id")
    return table


def query_groups(query_column: Any) -> tuple[list[str], np.ndarray]:
    """The distinct query ids of a query-sorted column and their boundaries.

    Returns:
        ``(query_ids, bounds)``: rows ``bounds[g]:bounds[g + 1]`` belong to ``query_ids[g]``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    column = query_column.combine_chunks() if isinstance(query_column, pa.ChunkedArray) else query_column
    n = len(column)
    if n == 0:
        return [], np.zeros(1, dtype=np.int64)
    changes = pc.not_equal(column.slice(1), column.slice(0, n - 1))
    starts = np.concatenate([[0], np.flatnonzero(changes.to_numpy(zero_copy_only=False)) + 1]).astype(np.int64)
    query_ids = column.take(pa.array(starts)).to_pylist()
    return query_ids, np.append(starts, n)


def aligned_scores(
    candidates: CandidateSet, teacher_scores: Mapping[tuple[str, str], float] | np.ndarray
) -> np.ndarray:
    """The teacher's score of every candidate row, float32, NaN where it has none.

    ``teacher_scores`` is already such an array (``TeacherStore.scores_for``), or a small mapping.
    """
    table = _candidate_columns(candidates)
    if isinstance(teacher_scores, np.ndarray):
        if len(teacher_scores) != table.num_rows:
            raise ValueError(f"{len(teacher_scores)} teacher scores for {table.num_rows} candidate rows")
        return teacher_scores.astype(np.float32, copy=False)
    pairs = zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), strict=True)
    return np.array([teacher_scores.get(pair, np.nan) for pair in pairs], dtype=np.float32)


@dataclass
class Examples:
    """Sampled training examples as arrays: row ``i`` is a query and ``1 + N`` candidate rows.

    ``candidate_rows[i, 0]`` is the positive. ``query_ids`` names the query of each group of rows by
    ``query_rows``; ``doc_column`` is the candidates' ``doc_id`` column that ``candidate_rows``
    index. ``scores`` is ``None`` for a teacher-free loss.
    """

    query_ids: list[str]  # distinct queries with examples, in candidates order
    query_rows: np.ndarray  # (n,) int64 into query_ids
    candidate_rows: np.ndarray  # (n, 1 + N) int64 into the candidates table
    doc_column: Any  # pyarrow string array: the candidates' doc_id column
    scores: np.ndarray | None = None  # (n, 1 + N) float32
    skipped_queries: dict[str, int] = field(default_factory=dict)  # reason -> count

    def __len__(self) -> int:
        return len(self.query_rows)

    @property
    def width(self) -> int:
        """``1 + N``."""
        return int(self.candidate_rows.shape[1])

    def example_query_ids(self) -> list[str]:
        """The query id of every example (a Python list: small sets and manifests only)."""
        return [self.query_ids[r] for r in self.query_rows.tolist()]

    def example_doc_ids(self) -> list[list[str]]:
        """The ``1 + N`` document ids of every example (a Python list: small sets only)."""
        flat = self.doc_column.take(self.candidate_rows.ravel()).to_pylist()
        return [flat[i : i + self.width] for i in range(0, len(flat), self.width)]

    def distinct_doc_ids(self) -> list[str]:
        """The document ids the examples use, sorted."""
        import pyarrow.compute as pc

        taken = self.doc_column.take(np.unique(self.candidate_rows.ravel()))
        return sorted(pc.unique(taken).to_pylist())

    def dataset(self, collection: Collection, label: np.ndarray | None = None) -> datasets.Dataset:
        """A ``datasets.Dataset`` whose rows read ``query``, ``doc_0`` … ``doc_N`` (and ``label``).

        Stored are integer rows only (query row, ``1 + N`` corpus rows, the label); the transform
        looks the texts up when a batch is built.

        Args:
            collection: the collection the candidates were drawn from (texts come from it).
            label: per-example labels ``(n, K)``: :attr:`scores` by default (the ``scores`` layout),
                or table rows for the ``ids`` layout; ``None`` and no scores: no ``label`` column.
        """
        import datasets

        label = self.scores if label is None else label
        columns: dict[str, Any] = {
            "query_row": self.query_rows,
            "doc_rows": corpus_rows(collection, self.doc_column.take(self.candidate_rows.ravel())).reshape(
                self.candidate_rows.shape
            ),
        }
        if label is not None:
            columns["label"] = label
        dataset = datasets.Dataset.from_dict(columns)
        dataset.set_transform(
            _TextTransform([collection.queries[q] for q in self.query_ids], corpus_texts(collection), self.width)
        )
        return dataset


class _TextTransform:
    """Row numbers → texts, applied by ``datasets`` to each batch the trainer asks for."""

    def __init__(self, query_texts: list[str], doc_texts: Callable[[np.ndarray], list[str]], width: int) -> None:
        self.query_texts = query_texts
        self.doc_texts = doc_texts
        self.width = width

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        if "query_row" in batch:
            out["query"] = [self.query_texts[r] for r in batch["query_row"]]
        if "doc_rows" in batch:
            texts = self.doc_texts(np.asarray(batch["doc_rows"], dtype=np.int64).reshape(-1))
            for j in range(self.width):
                out[f"doc_{j}"] = texts[j :: self.width]
        if "label" in batch:
            out["label"] = batch["label"]
        return out


def corpus_rows(collection: Collection, doc_ids: Any) -> np.ndarray:
    """Row numbers of ``doc_ids`` (a pyarrow string array or a sequence) in ``collection.corpus``."""
    corpus = collection.corpus
    if hasattr(corpus, "rows"):
        return np.asarray(corpus.rows(doc_ids), dtype=np.int64)
    index = {d: i for i, d in enumerate(corpus)}  # a plain dict corpus: small by construction
    ids = doc_ids.to_pylist() if hasattr(doc_ids, "to_pylist") else list(doc_ids)
    return np.array([index[d] for d in ids], dtype=np.int64)


def corpus_texts(collection: Collection) -> Callable[[np.ndarray], list[str]]:
    """A function from corpus row numbers to document texts (``title text``)."""
    corpus = collection.corpus
    if hasattr(corpus, "texts"):
        return corpus.texts  # type: ignore[no-any-return]
    ids = list(corpus)
    return lambda rows: [collection.doc_text(ids[r]) for r in rows.tolist()]


def build_examples(
    collection: Collection,
    candidates: CandidateSet,
    teacher_scores: Mapping[tuple[str, str], float] | np.ndarray | None,
    *,
    negatives: int,
    negative_pool: int,
    epochs: int,
    seed: int,
    exclude: frozenset[str] = frozenset(),
    negative_sampling: str = "random",
    margin_bins: int | None = None,
    margin_scores: Mapping[tuple[str, str], float] | np.ndarray | None = None,
) -> Examples:
    """Sample the examples; ``teacher_scores=None`` (a teacher-free loss) leaves ``scores`` empty.

    Args:
        teacher_scores: the teacher's score per candidate row (``TeacherStore.scores_for``), or a
            ``{(query_id, doc_id): score}`` mapping for small sets, or ``None``.
        exclude: queries held out of training (counted in ``skipped_queries`` as "held out").
        negative_sampling: how the N negatives are drawn from the pool, a name in
            :data:`retrodistill.train.sampling.NEGATIVE_SAMPLING`; ``random`` is the earlier draw.
        margin_bins: instead, draw the negatives balanced over this many equal-width bins of the
            teacher's margin (positive's score minus the negative's; TAS-balanced), among the scored ones.
        margin_scores: the scores those margins come from (as ``teacher_scores``); default ``teacher_scores``.

    Raises:
        ValueError: If ``negatives < 1``, ``negative_sampling`` is unknown, the teacher has no score
            for a sampled pair or (``margin_bins``) scores fewer than N negatives of a positive.
    """
    if negatives < 1:
        raise ValueError(f"negatives must be at least 1, got {negatives}")
    sampler = negative_sampler(negative_sampling)
    margins_from = None
    if margin_bins is not None:
        if isinstance(margin_bins, bool) or not isinstance(margin_bins, int) or margin_bins < 1:
            raise ValueError(f"margin_bins must be a whole number of at least 1, got {margin_bins!r}")
        source = teacher_scores if margin_scores is None else margin_scores
        if source is None:
            raise ValueError("margin-balanced negatives need the teacher's scores (margin_scores or teacher_scores)")
        margins_from = aligned_scores(candidates, source)  # (rows,) float32, NaN where unscored
    table = _candidate_columns(candidates)
    group_ids, bounds = query_groups(table.column("query_id"))
    label = table.column("label").to_numpy()
    rank = table.column("rank").to_numpy()
    # Row numbers of each query's positives and of its negative pool, in candidates order.
    positive_rows = np.flatnonzero(label > 0)
    # rank 0: a judged non-relevant or triples-file negative, which no miner ranked
    pool_rows = np.flatnonzero((label <= 0) & (rank <= negative_pool))
    pool_ranks = rank[pool_rows] if sampler.ranked and margins_from is None else None
    del label, rank
    positive_bounds = np.searchsorted(positive_rows, bounds)
    pool_bounds = np.searchsorted(pool_rows, bounds)

    rng = random.Random(seed)
    skipped: dict[str, int] = {}
    query_ids: list[str] = []
    query_row_of: dict[int, int] = {}
    # Filled in place: at most one example per positive and epoch, no Python list per example.
    rows = np.empty((epochs * len(positive_rows), 1 + negatives), dtype=np.int64)
    example_queries = np.empty(len(rows), dtype=np.int64)
    n = 0
    for epoch in range(epochs):
        for group, qid in enumerate(group_ids):
            reason = None
            if qid not in collection.queries:
                reason = "not in this split"
            elif qid in exclude:
                reason = "held out for evaluation"
            elif positive_bounds[group] == positive_bounds[group + 1]:
                reason = "no positive"
            elif pool_bounds[group + 1] - pool_bounds[group] < negatives:
                reason = f"fewer than {negatives} negatives"
            if reason is not None:
                if epoch == 0:
                    skipped[reason] = skipped.get(reason, 0) + 1
                continue
            if group not in query_row_of:
                query_row_of[group] = len(query_ids)
                query_ids.append(qid)
            start, stop = pool_bounds[group], pool_bounds[group + 1]
            if pool_ranks is not None:  # best-ranked first, the unranked last
                pool = pool_rows[start:stop][ranked_order(pool_ranks[start:stop])].tolist()
            else:
                pool = pool_rows[start:stop].tolist()
            for positive in positive_rows[positive_bounds[group] : positive_bounds[group + 1]].tolist():
                rows[n, 0] = positive
                if margins_from is None:
                    rows[n, 1:] = sampler.draw(pool, negatives, rng)
                else:
                    rows[n, 1:] = _balanced_negatives(
                        qid, positive, pool_rows[start:stop], margins_from, negatives, margin_bins, rng, table
                    )
                example_queries[n] = query_row_of[group]
                n += 1

    rows = rows[:n].copy()
    examples = Examples(
        query_ids=query_ids,
        query_rows=example_queries[:n].copy(),
        candidate_rows=rows,
        doc_column=table.column("doc_id").combine_chunks(),
        skipped_queries=skipped,
    )
    if teacher_scores is not None:
        scores = aligned_scores(candidates, teacher_scores)[rows]  # (n, 1 + N)
        missing = np.isnan(scores)
        if missing.any():
            first = int(np.flatnonzero(missing.any(axis=1))[0])
            docs = examples.doc_column.take(rows[first][missing[first]]).to_pylist()
            raise ValueError(
                f"the teacher-score store has no score for query {query_ids[examples.query_rows[first]]!r} and "
                f"document(s) {', '.join(docs[:5])}: it was not scored from these candidates"
            )
        examples.scores = scores
    return examples


def _balanced_negatives(
    query_id: str,
    positive: int,
    pool: np.ndarray,
    scores: np.ndarray,
    negatives: int,
    bins: Any,
    rng: random.Random,
    table: Any,
) -> list[int]:
    """``negatives`` rows of ``pool`` balanced over ``bins`` bins of the teacher's margin to ``positive``."""
    margins = scores[positive] - scores[pool]  # (pool,), NaN where either is unscored
    scored = np.isfinite(margins)
    if int(scored.sum()) < negatives:
        doc = table.column("doc_id")[positive].as_py()
        unscored = ", itself unscored" if np.isnan(scores[positive]) else ""
        raise ValueError(
            f"the teacher-score store scores {int(scored.sum())} of the {len(pool)} pooled negatives of query "
            f"{query_id!r} (positive {doc!r}{unscored}), fewer than negatives={negatives}: margin-balanced "
            "negatives need scores for them; score the store from these candidates"
        )
    return draw_margin_balanced(pool[scored].tolist(), margins[scored], negatives, bins, rng)


def sample_corpus(collection: Collection, max_documents: int | None, seed: int) -> list[str]:
    """The document ids of the ``corpus`` stage: all of them sorted, or ``max_documents`` drawn (seeded)."""
    ids = sorted(collection.corpus)
    if max_documents is not None:
        if max_documents < 1:
            raise ValueError(f"corpus_documents must be at least 1, got {max_documents}")
        if max_documents < len(ids):
            ids = sorted(random.Random(seed).sample(ids, max_documents))
    return ids


def corpus_columns(
    collection: Collection, doc_ids: Sequence[str], table: TeacherTable, epochs: int
) -> dict[str, list[object]]:
    """The ``corpus`` stage's dataset: one text column ``document`` and ``label`` = ``[doc_row]``.

    Each document appears once per epoch; the trainer shuffles.
    """
    doc_row = table.doc_rows()
    texts: list[object] = [collection.doc_text(d) for d in doc_ids]
    labels: list[object] = [[doc_row[d]] for d in doc_ids]
    return {"document": texts * epochs, "label": labels * epochs}
