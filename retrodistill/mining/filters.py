"""False-negative control: the rules that drop mined negatives suspected of being unjudged positives.

Dense mining finds documents so close to the query that many are relevant but unjudged ("false
negatives"); training the student to push them away hurts it (RocketQA, NV-Retriever). The rules,
applied in this order to negatives only (judged documents, whatever their grade, are never dropped),
each counted in the manifest by how many negatives it removed:

``rank_range``         keep negatives ranked ``rank_min`` … ``rank_max`` by their source (skip the top
                       ``rank_min - 1``, as "hard negatives from rank 30–100" recipes do)
``absolute_margin``    drop a negative scoring above ``P - absolute_margin``, where ``P`` is its query's
                       positive score in the same source (sentence-transformers' ``mine_hard_negatives``)
``relative_margin``    drop a negative scoring above ``P - relative_margin·|P|`` (NV-Retriever's
                       TopK-PercPos: ``relative_margin = 0.05`` keeps negatives below 95% of ``P``)
``teacher_max_score``  drop a negative the teacher scores above this (RocketQA's denoising)
``teacher_margin``     drop a negative the teacher scores above ``T - teacher_margin``, ``T`` its query's
                       positive's teacher score

``P`` (``T``) is the *lowest* score among the query's judged positives that the source (teacher)
scores: training pairs each positive with negatives drawn from the query's pool, so a negative kept
must be below the margin of every positive. A query none of whose positives has a score keeps its
negatives (counted as ``queries_without_positive_score``). Negatives the source did not rank (rank 0:
judged non-relevant documents, triples-file negatives) are not subject to the rank range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RETRIEVAL_RULES = ("rank_range", "absolute_margin", "relative_margin")
TEACHER_RULES = ("teacher_max_score", "teacher_margin")


@dataclass(frozen=True)
class Rules:
    """The thresholds of every rule; ``None`` switches a rule off."""

    rank_min: int = 1
    rank_max: int | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    teacher_max_score: float | None = None
    teacher_margin: float | None = None

    def __post_init__(self) -> None:
        if self.rank_min < 1:
            raise ValueError(f"rank_min must be at least 1, got {self.rank_min}")
        if self.rank_max is not None and self.rank_max < self.rank_min:
            raise ValueError(f"rank_max ({self.rank_max}) is below rank_min ({self.rank_min})")
        for name in ("absolute_margin", "relative_margin", "teacher_margin"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be at least 0, got {value}")
        if self.relative_margin is not None and self.relative_margin >= 1:
            raise ValueError(
                f"relative_margin is a fraction of the positive's score below 1, got {self.relative_margin}"
            )

    @property
    def active(self) -> dict[str, Any]:
        """The rules switched on, with their thresholds."""
        return {
            name: value
            for name, value in asdict(self).items()
            if value is not None and not (name == "rank_min" and value == 1)
        }

    @property
    def needs_teacher(self) -> bool:
        return self.teacher_max_score is not None or self.teacher_margin is not None

    @property
    def needs_positive_score(self) -> bool:
        return self.absolute_margin is not None or self.relative_margin is not None


def lowest_positive(query: np.ndarray, score: np.ndarray, positive: np.ndarray, n_queries: int) -> np.ndarray:
    """Per query (``0 … n_queries - 1``), the lowest finite ``score`` among rows where ``positive``; NaN if none."""
    lowest = np.full(n_queries, np.inf, dtype=np.float64)
    rows = positive & np.isfinite(score)
    np.minimum.at(lowest, query[rows], score[rows].astype(np.float64))
    lowest[np.isinf(lowest)] = np.nan
    return lowest


def _above_margin(
    query: np.ndarray, score: np.ndarray, reference: np.ndarray, margin: float, relative: bool
) -> np.ndarray:
    """Rows scoring above their query's ``reference`` minus the margin (absolute, or relative to ``|reference|``)."""
    ref = reference[query]
    limit = ref - margin * np.abs(ref) if relative else ref - margin
    with np.errstate(invalid="ignore"):
        return np.isfinite(ref) & (score.astype(np.float64) > limit)


def apply(
    rules: Rules,
    *,
    query: np.ndarray,
    rank: np.ndarray,
    score: np.ndarray,
    negative: np.ndarray,
    positive_score: np.ndarray | None = None,
    teacher: np.ndarray | None = None,
    teacher_positive: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Which rows to keep, and what each rule removed.

    Args:
        rules: the thresholds.
        query: each row's query number (``0 … Q - 1``).
        rank, score: the source's rank (0: not ranked) and score of each row.
        negative: rows the rules may drop (unjudged, or judged with grade 0 when so chosen by the caller).
        positive_score: per query, ``P`` (:func:`lowest_positive`); needed by the margin rules.
        teacher: each row's teacher score; needed by the teacher rules.
        teacher_positive: per query, ``T``; needed by ``teacher_margin``.

    Returns:
        ``(keep, report)``: a boolean mask over the rows, and ``{"removed": {rule: count},
        "queries_without_positive_score": n, "queries_without_teacher_positive": n}`` for the rules on.
    """
    keep = np.ones(len(query), dtype=bool)
    removed: dict[str, int] = {}
    report: dict[str, Any] = {"removed": removed}

    def drop(name: str, rows: np.ndarray) -> None:
        rows = rows & keep & negative
        removed[name] = int(rows.sum())
        keep[rows] = False

    if rules.rank_min > 1 or rules.rank_max is not None:
        ranked = rank > 0
        outside = rank < rules.rank_min
        if rules.rank_max is not None:
            outside |= rank > rules.rank_max
        drop("rank_range", ranked & outside)
    if rules.needs_positive_score:
        if positive_score is None:
            raise ValueError("the margin rules need the positives' scores")
        report["queries_without_positive_score"] = _queries_without(positive_score, query, negative)
        if rules.absolute_margin is not None:
            drop("absolute_margin", _above_margin(query, score, positive_score, rules.absolute_margin, False))
        if rules.relative_margin is not None:
            drop("relative_margin", _above_margin(query, score, positive_score, rules.relative_margin, True))
    if rules.needs_teacher:
        if teacher is None:
            raise ValueError("teacher_max_score and teacher_margin need a teacher-score store (teacher_scores)")
        missing = negative & keep & np.isnan(teacher)
        if missing.any():
            raise ValueError(f"the teacher-score store has no score for {int(missing.sum()):,} candidate rows")
        if rules.teacher_max_score is not None:
            drop("teacher_max_score", teacher > rules.teacher_max_score)
        if rules.teacher_margin is not None:
            assert teacher_positive is not None
            report["queries_without_teacher_positive"] = _queries_without(teacher_positive, query, negative)
            drop("teacher_margin", _above_margin(query, teacher, teacher_positive, rules.teacher_margin, False))
    return keep, report


def _queries_without(reference: np.ndarray, query: np.ndarray, negative: np.ndarray) -> int:
    """Queries with negatives but no reference score."""
    with_negatives = np.unique(query[negative])
    return int(np.isnan(reference[with_negatives]).sum())


def merge_reports(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-source reports summed into one (``removed`` per rule), the per-source ones kept under ``sources``."""
    if len(reports) == 1:
        return dict(next(iter(reports.values())))
    total: dict[str, int] = {}
    for report in reports.values():
        for name, count in report["removed"].items():
            total[name] = total.get(name, 0) + count
    return {"removed": total, "sources": reports}


def teacher_rule_report(store: Any, candidates: Any, rules: Rules) -> dict[str, Any]:
    """What the teacher rules would remove from ``candidates`` (scored into ``store``): ``inspect-teacher``.

    Returns the rules, the negatives (label 0 rows) they apply to, how many each removes (in order,
    as :func:`apply`), how many judged positives score above ``teacher_max_score`` (what the same
    threshold would cost were they unjudged), and the rules already applied when the candidates
    were mined (their manifest's ``false_negative_control``).
    """
    from retrodistill.train.examples import query_groups

    scored_from = [candidates.fingerprint, *candidates.manifest.get("derived_from", [])]
    if store.inputs.get("candidates") not in scored_from:
        raise ValueError(f"teacher-score store {store.path} was not scored from candidates {candidates.path}")
    table = candidates.table
    _, bounds = query_groups(table.column("query_id"))
    query = np.repeat(np.arange(len(bounds) - 1, dtype=np.int64), np.diff(bounds))
    label = table.column("label").to_numpy()
    teacher = store.scores_for(candidates)
    _, report = apply(
        rules,
        query=query,
        rank=table.column("rank").to_numpy(),
        score=np.zeros(len(query), dtype=np.float32),
        negative=label <= 0,
        teacher=teacher,
        teacher_positive=lowest_positive(query, teacher, label > 0, len(bounds) - 1),
    )
    positives = label > 0
    above = None
    if rules.teacher_max_score is not None:
        above = int((positives & (teacher > rules.teacher_max_score)).sum())
    return {
        "candidates": str(candidates.path),
        "recorded": candidates.manifest.get("false_negative_control"),
        "rules": {name: value for name, value in rules.active.items() if name in TEACHER_RULES},
        "negatives": int((label <= 0).sum()),
        "positives": int(positives.sum()),
        "positives_above_max_score": above,
        **report,
    }
