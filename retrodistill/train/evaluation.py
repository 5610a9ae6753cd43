"""Evaluation while training: retrieval metrics of the student and its agreement with the teacher.

:class:`TrainingEvaluator` is a sentence-transformers ``SentenceEvaluator``, so the trainer runs it
every ``eval_steps``, logs what it returns (as ``eval_<name>_<key>``, beside the losses, to
``train_log.json`` and every ``report_to`` logger) and can keep the best checkpoint
(``load_best_model_at_end``). It scores with our metrics harness
(:func:`retrodistill.evaluate.metrics.compute_metrics`, trec_eval's semantics and graded gains), not
sentence-transformers' binary nDCG.

Two sources of evaluation queries (:func:`build_evaluator`):

* ``eval_dataset: null``: ``eval_holdout`` training queries, drawn with the seed and left out of
  the training examples: a dev split carved from the training data. Each is ranked among its own
  candidates (``eval_corpus: candidates``) or against the whole corpus (``full``); its judgments are
  the training qrels.
* ``eval_dataset: NAME|FOLDER`` with ``eval_split`` (``dev`` by default): at most ``eval_queries``
  of its judged queries, against the whole corpus, or each among its candidates from
  ``eval_candidates`` (a ``mine-negatives`` artifact over that split).

The distillation diagnostic needs the teacher's scores, so it runs on held-out training queries
(whenever ``eval_holdout > 0`` and the loss reads a teacher-score store): for each query, Kendall's
τ-b and Spearman's ρ between the student's and the teacher's scores of the query's scored
candidates, averaged over the queries. A τ near 1 means the student orders the candidates as the
teacher does; it measures the distillation itself, where nDCG measures the retrieval.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.config import TrainConfig
from retrodistill.data.candidates import CandidateSet, read_candidates
from retrodistill.data.collections import Collection
from retrodistill.data.encoding import encode_texts
from retrodistill.evaluate.metrics import compute_metrics, parse_measures

logger = logging.getLogger(__name__)

CORPUS_MODES = ("candidates", "full")
DIAGNOSTICS = ("kendall_tau", "spearman")


@dataclass(frozen=True)
class TeacherRanking:
    """One held-out query's scored candidates: document ids and the teacher's scores, aligned."""

    doc_ids: tuple[str, ...]
    scores: np.ndarray


def holdout_queries(query_ids: Sequence[str], count: int, seed: int) -> frozenset[str]:
    """``count`` of ``query_ids`` drawn with ``seed`` (the same on every rank and every resume).

    Raises:
        ValueError: ``count`` would leave no training query.
    """
    eligible = sorted(set(query_ids))
    if count >= len(eligible):
        raise ValueError(
            f"eval_holdout {count} would hold out every one of the {len(eligible)} training queries "
            "with candidates: hold out fewer"
        )
    return frozenset(random.Random(seed).sample(eligible, count))


def teacher_rankings(
    candidates: CandidateSet, scores: np.ndarray | None, queries: frozenset[str]
) -> dict[str, TeacherRanking]:
    """The teacher's scores of each of ``queries``'s candidates (NaN-scored rows left out)."""
    if scores is None or not queries:
        return {}
    import pyarrow as pa
    import pyarrow.compute as pc

    table = candidates.table
    keep = pc.is_in(table.column("query_id"), value_set=pa.array(sorted(queries), type=pa.string()))
    rows = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
    qids = table.column("query_id").take(pa.array(rows)).to_pylist()
    dids = table.column("doc_id").take(pa.array(rows)).to_pylist()
    by_query: dict[str, tuple[list[str], list[float]]] = {}
    for qid, did, score in zip(qids, dids, scores[rows].tolist(), strict=True):
        if score == score:  # not NaN
            docs, values = by_query.setdefault(qid, ([], []))
            docs.append(did)
            values.append(score)
    return {
        qid: TeacherRanking(tuple(docs), np.asarray(values, dtype=np.float64))
        for qid, (docs, values) in by_query.items()
    }


def rank_correlations(student: np.ndarray, teacher: np.ndarray) -> tuple[float, float] | None:
    """Kendall's τ-b and Spearman's ρ of two score vectors; ``None`` when either is undefined."""
    from scipy.stats import kendalltau, spearmanr

    if len(student) < 2:
        return None
    tau = float(kendalltau(student, teacher).statistic)
    rho = float(spearmanr(student, teacher).statistic)
    if tau != tau or rho != rho:  # a constant vector: no ordering to compare
        return None
    return tau, rho


def _evaluator_base() -> type:
    from sentence_transformers.evaluation import SentenceEvaluator

    return SentenceEvaluator


class TrainingEvaluator(_evaluator_base()):  # type: ignore[misc]
    """Retrieval metrics (and the teacher–student rank correlation) of the model being trained.

    Args:
        name: prefix of the logged keys (``eval_<name>_nDCG@10``).
        collection: the corpus, and the evaluated queries (``queries``) with their judgments.
        queries: query id → text, the queries evaluated.
        measures: ir-measures strings; the first is the primary metric (``load_best_model_at_end``).
        rel_threshold: minimum grade counted relevant by binary measures.
        candidates: query id → its candidate documents (``eval_corpus: candidates``); ``None``
            searches the whole corpus.
        teacher: held-out query → :class:`TeacherRanking`, for the rank correlations.
        batch_size: texts per forward pass.
        max_seq_length: the model's text length while it is evaluated (the published student's, when
            training truncates shorter: ``train_max_seq_length``); ``None`` keeps the model's.
    """

    greater_is_better = True

    def __init__(
        self,
        name: str,
        collection: Collection,
        queries: Mapping[str, str],
        measures: Sequence[str],
        *,
        rel_threshold: int = 1,
        candidates: Mapping[str, Sequence[str]] | None = None,
        teacher: Mapping[str, TeacherRanking] | None = None,
        batch_size: int = 64,
        max_seq_length: int | None = None,
    ) -> None:
        super().__init__()
        if not queries:
            raise ValueError(f"evaluation {name!r} has no queries")
        parse_measures(measures, rel_threshold)  # a bad measure fails before training starts
        self.name = name
        self.collection = collection
        self.queries = dict(queries)
        self.measures = list(measures)
        self.rel_threshold = rel_threshold
        self.candidates = None if candidates is None else {q: list(candidates[q]) for q in self.queries}
        self.teacher = dict(teacher or {})
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.primary_metric = f"{name}_{self.measures[0]}"

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1
    ) -> dict[str, float]:
        """Evaluate ``model``; returns ``{f"{name}_{key}": value}`` (the trainer adds ``eval_``).

        Each document and query is encoded once per evaluation: the candidates' scores serve both
        the retrieval run and the rank correlations.
        """
        training_length = model.max_seq_length
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        try:
            values = self._evaluate(model)
        finally:
            model.max_seq_length = training_length
        logger.info("step %s: %s", steps, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        return {f"{self.name}_{key}": value for key, value in values.items()}

    def _evaluate(self, model: Any) -> dict[str, float]:
        lists = {q: r.doc_ids for q, r in self.teacher.items()}
        if self.candidates is not None:
            lists = {q: (*self.candidates[q], *lists.get(q, ())) for q in {*self.candidates, *lists}}
        scores = self._score(model, lists)
        run = self._search(model) if self.candidates is None else {q: scores[q] for q in self.candidates}
        judged = {q: self.collection.qrels[q] for q in self.queries if self.collection.qrels.get(q)}
        values = dict(compute_metrics(judged, run, self.measures, rel_threshold=self.rel_threshold).aggregate)
        values.update(self._correlations(scores))
        return values

    def _search(self, model: Any) -> dict[str, dict[str, float]]:
        """The queries' top 100 over the whole corpus, as ``evaluate`` retrieves."""
        from retrodistill.evaluate.retrieval import encode_and_search

        subset = Collection(
            name=self.collection.name,
            corpus=self.collection.corpus,
            queries=self.queries,
            qrels=self.collection.qrels,
            split=self.collection.split,
        )
        return encode_and_search(model, subset, k=100, batch_size=self.batch_size, show_progress=False)

    def _score(self, model: Any, lists: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
        """Each query's score for each of its documents (inner product, as ``evaluate`` searches)."""
        if not lists:
            return {}
        doc_ids = sorted({d for docs in lists.values() for d in docs})
        corpus = self.collection.corpus
        documents = encode_texts(model, corpus.texts(corpus.rows(doc_ids)), "document", self.batch_size)
        position = {d: i for i, d in enumerate(doc_ids)}
        qids = list(lists)
        queries = encode_texts(model, [self.queries[q] for q in qids], "query", self.batch_size)
        scores: dict[str, dict[str, float]] = {}
        for qid, vector in zip(qids, queries, strict=True):
            docs = list(dict.fromkeys(lists[qid]))
            values = documents[[position[d] for d in docs]] @ vector
            scores[qid] = dict(zip(docs, values.astype(float).tolist(), strict=True))
        return scores

    def _correlations(self, scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        pairs = [
            rank_correlations(np.array([scores[q][d] for d in ranking.doc_ids]), ranking.scores)
            for q, ranking in self.teacher.items()
        ]
        kept = [p for p in pairs if p is not None]
        if not kept:
            return {}
        return {"kendall_tau": float(np.mean([p[0] for p in kept])), "spearman": float(np.mean([p[1] for p in kept]))}


def check_eval_settings(config: TrainConfig) -> None:
    """Refuse inconsistent evaluation settings before anything is loaded (one line each)."""
    if config.eval_steps is not None and (isinstance(config.eval_steps, bool) or config.eval_steps < 1):
        raise ValueError(f"eval_steps must be a whole number of at least 1 (or null), got {config.eval_steps!r}")
    if config.eval_holdout < 0:
        raise ValueError(f"eval_holdout must be 0 or more, got {config.eval_holdout}")
    if config.eval_queries is not None and config.eval_queries < 1:
        raise ValueError(f"eval_queries must be at least 1 (or null: all), got {config.eval_queries}")
    if config.eval_corpus not in CORPUS_MODES:
        raise ValueError(f"eval_corpus must be one of {', '.join(CORPUS_MODES)}, got {config.eval_corpus!r}")
    if not config.eval_measures:
        raise ValueError("eval_measures is empty: name at least one measure (e.g. nDCG@10)")
    parse_measures(config.eval_measures)  # a misspelt measure fails before the data is prepared
    if config.eval_candidates is not None and not (Path(config.eval_candidates) / "manifest.json").is_file():
        raise ValueError(
            f"eval_candidates {config.eval_candidates}: no candidates artifact there (manifest.json is missing)"
        )
    if config.stage == "corpus" and config.eval_holdout:
        raise ValueError("the corpus stage has no training queries to hold out: use eval_dataset there")
    if config.eval_steps is None:
        if config.load_best_model_at_end:
            raise ValueError("load_best_model_at_end needs eval_steps (and save_steps, a multiple of it)")
        return
    if config.eval_dataset is None and config.eval_holdout == 0:
        raise ValueError(
            "eval_steps needs something to evaluate: eval_holdout N (training queries held out as a dev "
            "split) or eval_dataset NAME|FOLDER"
        )
    if config.eval_dataset is not None and config.eval_corpus == "candidates" and config.eval_candidates is None:
        raise ValueError(
            f"eval_corpus: candidates on eval_dataset {config.eval_dataset} needs eval_candidates (a "
            f"mine-negatives artifact over its {config.eval_split} split), or eval_corpus: full"
        )
    if config.load_best_model_at_end:
        if config.save_steps is None or config.save_steps % config.eval_steps:
            raise ValueError(
                f"load_best_model_at_end keeps the best checkpoint: set save_steps to a multiple of eval_steps "
                f"({config.eval_steps}), got {config.save_steps}"
            )
        if config.eval_dataset is not None and config.eval_split == "test":
            raise ValueError(
                "load_best_model_at_end would choose the student on a test split: evaluate on a dev split "
                "(eval_split) or on held-out training queries (eval_holdout)"
            )
        if config.metric_for_best_model not in (*config.eval_measures, *DIAGNOSTICS):
            raise ValueError(
                f"metric_for_best_model {config.metric_for_best_model!r} is not evaluated: choose one of "
                f"{', '.join((*config.eval_measures, *DIAGNOSTICS))}"
            )


def build_evaluator(
    config: TrainConfig,
    collection: Collection,
    candidates: CandidateSet | None,
    holdout: frozenset[str],
    teacher: Mapping[str, TeacherRanking],
    *,
    max_seq_length: int | None = None,
) -> TrainingEvaluator | None:
    """The evaluator ``config`` asks for (``None`` without ``eval_steps``); see the module docstring."""
    if config.eval_steps is None:
        return None
    rng = random.Random(config.seed)
    if config.eval_dataset is None:
        qids = sorted(holdout)
        if config.eval_queries is not None and config.eval_queries < len(qids):
            qids = sorted(rng.sample(qids, config.eval_queries))
        queries = {q: collection.queries[q] for q in qids}
        pool = None
        if config.eval_corpus == "candidates":
            assert candidates is not None  # the queries stage always has candidates
            pool = _candidate_lists(candidates, frozenset(qids))
        return TrainingEvaluator(
            "dev",
            collection,
            queries,
            config.eval_measures,
            candidates=pool,
            teacher={q: teacher[q] for q in qids if q in teacher},
            batch_size=config.batch_size * 4,
            max_seq_length=max_seq_length,
        )
    from retrodistill.data.download import load_dataset

    dataset = load_dataset(config.eval_dataset, config.eval_split, config.data.data_dir).for_evaluation()
    judged = sorted(q for q in dataset.queries if dataset.qrels.get(q))
    if not judged:
        raise ValueError(f"eval_dataset {config.eval_dataset} ({config.eval_split}) has no judged query")
    if config.eval_queries is not None and config.eval_queries < len(judged):
        judged = sorted(rng.sample(judged, config.eval_queries))
    pool = None
    if config.eval_corpus == "candidates":
        assert config.eval_candidates is not None  # check_eval_settings
        pool = _candidate_lists(read_candidates(config.eval_candidates), frozenset(judged))
        missing = [q for q in judged if q not in pool]
        if missing:
            raise ValueError(
                f"eval_candidates {config.eval_candidates} has no candidates for {len(missing)} of the "
                f"{len(judged)} evaluated queries (such as {missing[0]!r}): mine them over "
                f"{config.eval_dataset} {config.eval_split}"
            )
    return TrainingEvaluator(
        _slug(config.eval_dataset),
        dataset,
        {q: dataset.queries[q] for q in judged},
        config.eval_measures,
        rel_threshold=_rel_threshold(config.eval_dataset, config.eval_split),
        candidates=pool,
        batch_size=config.batch_size * 4,
        max_seq_length=max_seq_length,
    )


def _candidate_lists(candidates: CandidateSet, queries: frozenset[str]) -> dict[str, list[str]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = candidates.table
    table = table.filter(pc.is_in(table.column("query_id"), value_set=pa.array(sorted(queries), type=pa.string())))
    lists: dict[str, list[str]] = {}
    for qid, did in zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), strict=True):
        lists.setdefault(qid, []).append(did)
    return lists


def _slug(name: str) -> str:
    """A log-key-friendly name: the folder's or dataset's last part."""
    return name.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1] or "eval"


def _rel_threshold(name: str, split: str) -> int:
    """The registry's relevance threshold for ``name``'s ``split`` (1 for unregistered folders)."""
    from retrodistill.data.registry import spec_for

    try:
        spec = spec_for(name)
    except (KeyError, ValueError):
        return 1
    return dict(spec.split_rel_thresholds).get(split, spec.rel_threshold)
