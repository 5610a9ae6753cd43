"""Query groups, temperature calibration and judgments for teacher ensembles.

:mod:`retrodistill.stages.ensemble` combines member stores as ``Σ_k w_k · norm_q(s_k / T_k)``; this
module groups the rows by query and fits ``T_k`` (``norm_q`` is re-exported from its owner). Rows
are grouped by query (:class:`QueryGroups`: the rows of a query are contiguous, as in a store) and
everything is vectorised over all rows.

**Normalisation** ``norm_q`` acts on one query's candidates at a time: ``none``, ``zscore``,
``minmax`` or ``rank``, defined once for the whole project in :mod:`retrodistill.losses.normalization`
(the losses normalise with the same definitions), including the value a query gets when its
candidates all score the same: 0 for ``zscore``, 0.5 for ``minmax`` and ``rank``. The three are
invariant to a positive scale, so temperatures change the ensemble only with ``none``; they are
still fitted and recorded.

**Calibration** (``calibrate_on`` = training qrels): for each member, the temperature ``T`` that
minimises the mean negative log-likelihood of each judged positive ``p`` (grade ≥ ``rel_threshold``)
under a softmax over its query's candidates ``C_q``::

    NLL(T) = mean_(q, p)  [ log Σ_{d ∈ C_q} exp(s_d / T)  −  s_p / T ]

over the queries with at least one positive and one other candidate among the pairs. NLL is convex
in ``1/T``, so a bounded 1-D search on ``log T`` (``scipy.optimize.minimize_scalar``) finds the
global minimum; a fit that ends at a bound (e.g. every positive already on top) is flagged.

**Judgments**: qrels with their source and a fingerprint (:class:`Judgments`, :func:`load_judgments`),
and the grade of each stored (query, document) row (:func:`grades_of`), which ``inspect-teacher``
uses too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrodistill.artifacts import check_inputs, sha256_file, sha256_strings
from retrodistill.data.collections import Qrels, read_qrels
from retrodistill.losses.normalization import NORMALIZATIONS, normalize_per_query

__all__ = [
    "NORMALIZATIONS",
    "TEMPERATURE_BOUNDS",
    "Judgments",
    "QueryGroups",
    "TemperatureFit",
    "fit_temperature",
    "grades_of",
    "load_judgments",
    "normalize_per_query",
    "qrels_fingerprint",
]

TEMPERATURE_BOUNDS = (1e-4, 1e4)


# --- per-query groups -------------------------------------------------------


@dataclass(frozen=True)
class QueryGroups:
    """Rows grouped by query, the rows of each query contiguous (as in a store, sorted by query).

    Attributes:
        index: ``(n_rows,)`` int64, the group of each row (0, 1, ... in row order).
        starts: ``(n_groups,)`` int64, the first row of each group.
        sizes: ``(n_groups,)`` int64, rows per group.
    """

    index: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_query_ids(cls, query_ids: Any) -> QueryGroups:
        """Groups of a pyarrow string array (or chunked array) whose equal values are contiguous."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(query_ids, pa.ChunkedArray):
            query_ids = query_ids.combine_chunks()
        n = len(query_ids)
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty, empty)
        changes = pc.not_equal(query_ids[1:], query_ids[:-1]).to_numpy(zero_copy_only=False)
        first = np.concatenate([[True], changes])
        return cls.from_first_flags(first)

    @classmethod
    def from_first_flags(cls, first: np.ndarray) -> QueryGroups:
        """Groups from a boolean ``(n_rows,)`` array that is true on the first row of each group."""
        starts = np.flatnonzero(first).astype(np.int64)
        index = np.cumsum(first, dtype=np.int64) - 1
        sizes = np.diff(np.append(starts, len(first)))
        return cls(index, starts, sizes)

    def __len__(self) -> int:
        return len(self.starts)

    def max(self, values: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(values, self.starts)

    def min(self, values: np.ndarray) -> np.ndarray:
        return np.minimum.reduceat(values, self.starts)

    def sum(self, values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, self.starts)


# --- calibration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemperatureFit:
    """A member's fitted temperature and the listwise NLL (module docstring) at it and at T = 1."""

    temperature: float
    objective: float
    objective_at_1: float
    queries: int
    positives: int
    at_bound: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "objective": self.objective,
            "objective_at_1": self.objective_at_1,
            "queries": self.queries,
            "positives": self.positives,
            "at_bound": self.at_bound,
        }


def fit_temperature(
    scores: np.ndarray,
    groups: QueryGroups,
    positive: np.ndarray,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> TemperatureFit:
    """Fit ``T`` minimising the listwise NLL of the positives under ``softmax(scores / T)`` per query.

    Args:
        scores: ``(n_rows,)`` raw scores, rows grouped by query as ``groups`` says.
        groups: the query of each row.
        positive: ``(n_rows,)`` bool, true for judged positives.
        bounds: the search interval for ``T`` (searched on ``log T``).

    Raises:
        ValueError: no query has both a positive and another candidate, or the bounds are invalid.
    """
    from scipy.optimize import minimize_scalar

    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
    x = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = groups.sum(positive.astype(np.int64))
    usable = (n_pos > 0) & (n_pos < groups.sizes)
    if not usable.any():
        raise ValueError(
            "calibration: no query has both a judged positive and another candidate among the store's "
            "pairs; were these qrels made for the store's queries (and split)?"
        )
    rows = usable[groups.index]
    x, positive = x[rows], positive[rows]
    sub = QueryGroups.from_first_flags(np.r_[True, groups.index[rows][1:] != groups.index[rows][:-1]])
    shifted = x - sub.max(x)[sub.index]  # ≤ 0, so exp never overflows
    pos_per_query = sub.sum(positive.astype(np.float64))
    pos_shift_sum = float(shifted[positive].sum())
    n_positives = int(positive.sum())

    def nll(log_t: float) -> float:
        beta = math.exp(-log_t)
        lse = np.log(sub.sum(np.exp(beta * shifted)))
        return float((pos_per_query @ lse - beta * pos_shift_sum) / n_positives)

    a, b = math.log(lo), math.log(hi)
    result = minimize_scalar(nll, bounds=(a, b), method="bounded", options={"xatol": 1e-7})
    log_t = float(result.x)
    return TemperatureFit(
        temperature=math.exp(log_t),
        objective=nll(log_t),
        objective_at_1=nll(0.0),
        queries=int(usable.sum()),
        positives=n_positives,
        at_bound=min(log_t - a, b - log_t) < 1e-3,
    )


# --- judgments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgments:
    """Qrels with where they came from and a fingerprint of their content."""

    qrels: Qrels
    source: str

    @property
    def fingerprint(self) -> str:
        return qrels_fingerprint(self.qrels)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "queries": len(self.qrels),
            "judgments": sum(len(docs) for docs in self.qrels.values()),
        }


def qrels_fingerprint(qrels: Mapping[str, Mapping[str, int]]) -> str:
    """sha256 over the sorted ``query_id<TAB>doc_id<TAB>grade`` lines: the same for any file form."""
    return sha256_strings(f"{q}\t{d}\t{int(g)}" for q in sorted(qrels) for d, g in sorted(qrels[q].items()))


def load_judgments(
    qrels: str | os.PathLike[str] | Mapping[str, Mapping[str, int]] | None = None,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "train",
    store_inputs: Mapping[str, str] | None = None,
) -> Judgments:
    """Qrels from a file, a mapping, or a dataset's ``qrels/{split}.tsv``.

    With ``dataset`` and ``store_inputs`` (a store's ``inputs``), the dataset's queries file must
    be the one the store was scored with (:class:`~retrodistill.artifacts.ArtifactMismatchError`).

    Raises:
        ValueError: both or neither of ``qrels`` and ``dataset`` given.
        FileNotFoundError: the qrels file or the split is missing.
    """
    if (qrels is None) == (dataset is None):
        raise ValueError("give qrels (a file) or a dataset (and split), not both or neither")
    if isinstance(qrels, Mapping):
        return Judgments({str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}, "qrels")
    if qrels is not None:
        return Judgments(read_qrels(qrels), str(qrels))
    from retrodistill.data.download import resolve_dataset

    root = resolve_dataset(str(dataset), data_dir)
    path = root / "qrels" / f"{split}.tsv"
    if not path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise FileNotFoundError(
            f"{path}: no qrels for split {split!r}; available splits: {', '.join(available) or 'none'}"
        )
    if store_inputs and "queries" in store_inputs and (root / "queries.jsonl").is_file():
        check_inputs(
            {"queries": store_inputs["queries"]},
            {"queries": sha256_file(root / "queries.jsonl")},
            artifact="the teacher-score store",
            given=f"dataset {dataset}",
        )
    return Judgments(read_qrels(path), str(path))


def grades_of(query_ids: Any, doc_ids: Any, qrels: Mapping[str, Mapping[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The qrels grade of each (query_id, doc_id) row, vectorised (hash lookup in Arrow).

    Returns:
        ``(grades, judged)``: ``(n_rows,)`` int64 grades (0 where unjudged) and bool judged flags.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = pc.binary_join_element_wise(query_ids, doc_ids, "\t")
    judged_keys = [f"{q}\t{d}" for q, docs in qrels.items() for d in docs]
    judged_grades = np.array([int(g) for docs in qrels.values() for g in docs.values()], dtype=np.int64)
    index = pc.index_in(keys, value_set=pa.array(judged_keys, type=pa.string()))
    if isinstance(index, pa.ChunkedArray):
        index = index.combine_chunks()
    judged = index.is_valid().to_numpy(zero_copy_only=False)
    positions = index.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    grades = np.where(judged, judged_grades[positions] if len(judged_grades) else 0, 0)
    return grades.astype(np.int64), judged
