"""The ``score-pairwise`` stage (PairDistill): the top-m comparisons of each query → a pair store.

Recipe (:func:`run`, the ``retrodistill score-pairwise`` command):

1. load the collection; read the teacher-score store and/or the candidates, checking that they were
   made from this collection (and the store from these candidates);
2. rank each query's candidates by the pointwise teacher's scores (else by mining rank) and take the
   comparisons among the top-m (:func:`~retrodistill.data.pair_store.select_comparisons`);
3. :func:`score_comparisons_to_store`: score them with a pairwise teacher
   (:mod:`retrodistill.teachers.pairwise`, ``p_ij = P(d_i ≻ d_j | q)``) into a pair store
   (:mod:`retrodistill.data.pair_store`) in resumable parts, as ``score-teacher`` does.

Both orders of a pair are scored and averaged by default, ``p_ij = (P(i≻j) + 1 − P(j≻i)) / 2``
(``orders: symmetrised``), against position bias; ``orders: ranked`` scores only the higher-ranked
document first (PairDistill's released code), ``orders: both`` keeps both orders raw.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.artifacts import (
    MANIFEST,
    ArtifactMismatchError,
    check_inputs,
    now_iso,
    read_manifest,
    write_manifest,
)
from retrodistill.config import DataConfig, to_dict
from retrodistill.data.pair_store import (
    STAGE,
    Comparison,
    PairStore,
    check_orders,
    comparison_rows,
    comparisons_fingerprint,
    pair_rows_fingerprint,
    ranking_by_candidates,
    ranking_by_scores,
    select_comparisons,
    write_pair_part,
)
from retrodistill.data.pairs import DocTexts, check_pair_texts
from retrodistill.data.part_store import part_is_complete
from retrodistill.data.store import part_name
from retrodistill.teachers.base import RUNTIME_FIELDS
from retrodistill.teachers.pairwise import PAIRWISE_TEACHERS, PairwiseTeacher, symmetrise

logger = logging.getLogger(__name__)


@dataclass
class PairwiseTeacherConfig:
    name: str = "pairwise-cross-encoder"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScorePairwiseConfig:
    """``retrodistill score-pairwise``: the top-m comparisons of each query → a pair store."""

    data: DataConfig = field(default_factory=DataConfig)
    candidates: str | None = field(default=None, metadata={"help": "candidates artifact (ranked by mining rank)"})
    teacher_scores: str | None = field(
        default=None, metadata={"help": "teacher-score store: rank each query's candidates by its scores"}
    )
    teacher: PairwiseTeacherConfig = field(default_factory=PairwiseTeacherConfig)
    m: int = field(default=10, metadata={"help": "compare the top-m documents of each query"})
    max_rank_gap: int | None = field(default=None, metadata={"help": "only pairs at most this many ranks apart"})
    orders: str = field(default="symmetrised", metadata={"help": "symmetrised, both or ranked"})
    out: str = "runs/pair-scores"
    part_size: int = field(default=20_000, metadata={"help": "comparisons per part file (the unit of resumption)"})


def score_comparisons_to_store(
    teacher: PairwiseTeacher,
    comparisons: list[Comparison],
    query_text: Mapping[str, str],
    doc_text: Mapping[str, str],
    out_dir: str | os.PathLike[str],
    *,
    orders: str,
    part_size: int,
    inputs: dict[str, str],
    selection: dict[str, Any],
    config: dict[str, Any],
    show_progress: bool = True,
    stop_after_parts: int | None = None,
) -> PairStore:
    """Score ``comparisons`` into the pair store ``out_dir``, resuming it if it exists.

    Args:
        teacher: the pairwise scorer.
        comparisons: ``(query_id, doc_a, doc_b)``, ``doc_a`` ranked higher, from ``select_comparisons``.
        query_text: query id → text.
        doc_text: document id → text.
        out_dir: store directory (created if missing; resumed if it holds a manifest).
        orders: ``symmetrised``, ``both`` or ``ranked`` (see :mod:`retrodistill.data.pair_store`).
        part_size: comparisons per part file.
        inputs: fingerprints of what the comparisons and texts came from.
        selection: how the comparisons were chosen (``m``, ``ranked_by``, ``max_rank_gap``), recorded.
        config: the resolved stage config, recorded in the manifest.
        show_progress: show the teacher's progress bar.
        stop_after_parts: stop after scoring this many parts in this call (to test resumption).

    Raises:
        ValueError: no or repeated comparisons, an unknown text, a bad ``part_size`` or ``orders``.
        ArtifactMismatchError: ``out_dir`` holds a store made with another teacher, inputs, selection or parts.
    """
    check_orders(orders)
    if part_size < 1:
        raise ValueError(f"part_size must be positive, got {part_size}")
    if not comparisons:
        raise ValueError("no comparisons to score (does any query have two candidates?)")
    if len({(q, *sorted((a, b))) for q, a, b in comparisons}) != len(comparisons):
        raise ValueError("comparisons must be distinct: each unordered pair of a query once")
    check_pair_texts([(q, d) for q, a, b in comparisons for d in (a, b)], query_text, doc_text)
    out = Path(out_dir)
    description = teacher.describe()
    num_parts = math.ceil(len(comparisons) / part_size)
    symmetrisation = "p_ij = (P(i>j) + 1 - P(j>i)) / 2; p_ji = 1 - p_ij" if orders == "symmetrised" else "none"
    fresh: dict[str, Any] = {
        "stage": STAGE,
        "config": config,
        "teacher": description,
        "inputs": dict(inputs),
        **selection,
        "orders": orders,
        "symmetrisation": symmetrisation,
        "part_size": part_size,
        "num_parts": num_parts,
        "num_comparisons": len(comparisons),
        "num_rows": len(comparison_rows(comparisons, orders)),
        "comparisons_fingerprint": comparisons_fingerprint(comparisons),
    }
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        _check_resumable(manifest, fresh, out)
        if manifest.get("complete") and all(part_is_complete(out, i, manifest) for i in range(num_parts)):
            return PairStore.open(out)
        manifest["complete"] = False
        manifest.pop("fingerprint", None)
    else:
        manifest = {**fresh, "created": now_iso(), "parts": {}, "complete": False, "sessions": []}
    manifest["counts"] = {
        "comparisons": len(comparisons),
        "rows": fresh["num_rows"],
        "queries": len({q for q, _, _ in comparisons}),
        "parts": num_parts,
    }
    session: dict[str, Any] = {"started": now_iso(), "device": description.get("device"), "parts_scored": 0}
    manifest["sessions"].append(session)
    earlier = float(manifest.get("wall_time_s", 0.0))
    started = time.perf_counter()

    def save() -> None:
        session["wall_time_s"] = round(time.perf_counter() - started, 3)
        manifest["wall_time_s"] = round(earlier + session["wall_time_s"], 3)
        write_manifest(out, manifest)

    out.mkdir(parents=True, exist_ok=True)
    save()
    for index in range(num_parts):
        if part_is_complete(out, index, manifest):
            continue
        if stop_after_parts is not None and session["parts_scored"] >= stop_after_parts:
            return PairStore(out, manifest)
        manifest["parts"].pop(part_name(index), None)
        chunk = comparisons[index * part_size : (index + 1) * part_size]
        t0 = time.perf_counter()
        probs = _score_chunk(teacher, chunk, orders, query_text, doc_text, show_progress)
        manifest["parts"][part_name(index)] = write_pair_part(out, index, comparison_rows(chunk, orders), probs)
        session["parts_scored"] += 1
        save()
        rate = len(probs) / max(time.perf_counter() - t0, 1e-9)
        logger.info("%s: part %d/%d scored (%d rows, %.1f rows/s)", out, index + 1, num_parts, len(probs), rate)
    store = PairStore(out, manifest)
    table = store.table()
    manifest["fingerprint"] = pair_rows_fingerprint(*(table.column(c).to_pylist() for c in table.column_names))
    manifest["complete"] = True
    save()
    return PairStore.open(out)


def _score_chunk(
    teacher: PairwiseTeacher,
    chunk: list[Comparison],
    orders: str,
    query_text: Mapping[str, str],
    doc_text: Mapping[str, str],
    show_progress: bool,
) -> np.ndarray:
    """Probabilities of the rows ``comparison_rows(chunk, orders)``, in that order."""
    queries = [query_text[q] for q, _, _ in chunk]
    first = [doc_text[a] for _, a, _ in chunk]
    second = [doc_text[b] for _, _, b in chunk]
    if orders == "ranked":
        probs = np.asarray(teacher.score(queries, first, second, show_progress=show_progress), dtype=np.float32)
        _check_probabilities(probs, len(chunk))
        return probs
    # One call for both orders, so the two inputs of a pair share length-sorted batches.
    both = np.asarray(
        teacher.score(queries + queries, first + second, second + first, show_progress=show_progress),
        dtype=np.float32,
    )
    _check_probabilities(both, 2 * len(chunk))
    p_ab, p_ba = both[: len(chunk)], both[len(chunk) :]
    if orders == "symmetrised":
        p_ab, p_ba = symmetrise(p_ab, p_ba)
    return np.stack([p_ab, p_ba], axis=1).ravel()  # rows (a, b), (b, a) per comparison


def _check_probabilities(probs: np.ndarray, expected: int) -> None:
    if probs.shape != (expected,):
        raise ValueError(f"pairwise teacher returned shape {probs.shape} for {expected} triples")
    if not np.all((probs >= 0) & (probs <= 1)):
        raise ValueError("pairwise teacher returned values outside [0, 1] (or NaN); expected probabilities")


def _check_resumable(manifest: Mapping[str, Any], fresh: Mapping[str, Any], out: Path) -> None:
    """Raise :class:`ArtifactMismatchError` naming every difference that forbids resuming ``out``."""
    if manifest.get("stage") != STAGE:
        raise ArtifactMismatchError(f"{out} holds a {manifest.get('stage')!r} artifact, not a pairwise store")
    differences = []
    for section in ("teacher", "inputs"):
        old, new = manifest.get(section, {}), fresh[section]
        for key in sorted((set(old) | set(new)) - (RUNTIME_FIELDS if section == "teacher" else set())):
            if old.get(key) != new.get(key):
                differences.append(f"{section}.{key}: store has {old.get(key)!r}, given {new.get(key)!r}")
    for key in sorted(set(fresh) - {"teacher", "inputs", "config"}):
        if manifest.get(key) != fresh[key]:
            differences.append(f"{key}: store has {manifest.get(key)!r}, given {fresh[key]!r}")
    if differences:
        raise ArtifactMismatchError(
            f"{out} is a pairwise store made differently, so it cannot be resumed:\n  "
            + "\n  ".join(differences)
            + "\nChoose a new --out to score afresh (or delete the directory)."
        )


def run(
    config: ScorePairwiseConfig, *, show_progress: bool = True, teacher: PairwiseTeacher | None = None
) -> PairStore:
    """The ``score-pairwise`` stage: the top-m comparisons of each query of a collection → a pair store.

    Recipe: load the collection; read the teacher-score store and/or the candidates, checking that they
    were made from this collection (and the store from these candidates); rank each query's documents
    by teacher score (else by mining rank); select the comparisons; score them in resumable parts.
    """
    from retrodistill.data.candidates import read_candidates
    from retrodistill.data.download import load_dataset
    from retrodistill.data.store import TeacherStore

    check_orders(config.orders)
    if config.teacher_scores is None and config.candidates is None:
        raise ValueError("score-pairwise needs a ranking: set `teacher_scores` (a teacher-score store) or `candidates`")
    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    given = f"collection {config.data.dataset} ({config.data.split})"
    inputs = {"corpus": collection.fingerprints["corpus"], "queries": collection.fingerprints["queries"]}
    if config.candidates is not None:
        candidates = read_candidates(config.candidates)
        check_inputs(
            candidates.manifest.get("inputs", {}),
            collection.fingerprints,
            artifact=f"candidates {config.candidates}",
            given=given,
        )
        inputs["candidates"] = candidates.fingerprint
        ranking, ranked_by = ranking_by_candidates(candidates.rows), "candidates-rank"
    if config.teacher_scores is not None:
        store = TeacherStore.open(config.teacher_scores)
        artifact = f"teacher-score store {config.teacher_scores}"
        check_inputs(store.inputs, collection.fingerprints, artifact=artifact, given=given)
        if "candidates" in inputs:
            check_inputs(
                store.inputs,
                {"candidates": inputs["candidates"]},
                artifact=artifact,
                given=f"candidates {config.candidates}",
            )
        inputs["candidates"] = store.inputs.get("candidates", "unknown")
        inputs["teacher_scores"] = store.fingerprint
        ranking, ranked_by = ranking_by_scores(store.scores()), "teacher-scores"
    comparisons = select_comparisons(ranking, config.m, config.max_rank_gap)
    if teacher is None:
        teacher = PAIRWISE_TEACHERS.build(config.teacher.name, config.teacher.params)
    return score_comparisons_to_store(
        teacher,
        comparisons,
        collection.queries,
        DocTexts(collection.corpus),
        config.out,
        orders=config.orders,
        part_size=config.part_size,
        inputs=inputs,
        selection={"m": config.m, "ranked_by": ranked_by, "max_rank_gap": config.max_rank_gap},
        config=to_dict(config),
        show_progress=show_progress,
    )
