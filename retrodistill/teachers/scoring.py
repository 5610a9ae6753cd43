"""The offline teacher-scoring stage: score every candidate pair once, in resumable parts.

Recipe (:func:`run`, the ``retrodistill score-teacher`` command):

1. load the collection and the candidates (or an MS MARCO id-triples file);
2. check that the candidates were made from this collection (corpus and queries fingerprints);
3. build the teacher named in the config;
4. :func:`score_pairs_to_store`: cut the sorted distinct pairs into parts of ``part_size``, score
   each part and write it (``data/store.py`` documents the format), updating ``manifest.json``
   atomically after every part.

Resuming: run the same command again. The run continues only if the teacher (apart from
:data:`~retrodistill.teachers.base.RUNTIME_FIELDS` such as the device), the inputs, ``part_size`` and
the pairs are the same as recorded; complete parts whose file still has its recorded sha256 are
kept, every other part is (re)scored, so the finished store has exactly the rows of an
uninterrupted run.

Manifest fields written here, beyond those of :func:`~retrodistill.artifacts.write_manifest`::

    stage             "score-teacher"
    teacher           Teacher.describe() of the run that created the store
    inputs            {"corpus": ..., "queries": ..., "candidates": ...} fingerprints
    part_size, num_parts, num_pairs
    pairs_fingerprint sha256 over the sorted "query_id<TAB>doc_id" strings
    parts             {"part-00000.parquet": {"rows": n, "sha256": ...}, ...}  complete parts only
    complete          true once every part is
    fingerprint       (complete only) sha256 over all rows "query_id<TAB>doc_id<TAB>float.hex(score)"
    sessions          [{"started", "device", "parts_scored", "wall_time_s"}, ...] one per invocation
    counts            {"pairs", "queries", "documents", "parts"}
    wall_time_s       total over sessions
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.artifacts import (
    MANIFEST,
    ArtifactMismatchError,
    check_inputs,
    now_iso,
    read_manifest,
    sha256_file,
    sha256_strings,
    write_manifest,
)
from retrodistill.config import ScoreTeacherConfig, to_dict
from retrodistill.data.store import STAGE, TeacherStore, part_name, write_part
from retrodistill.teachers.base import RUNTIME_FIELDS, TEACHERS, Teacher

logger = logging.getLogger(__name__)


def pairs_fingerprint(pairs: Iterable[tuple[str, str]]) -> str:
    """Fingerprint of the ordered (query_id, doc_id) pairs a store covers."""
    return sha256_strings(f"{q}\t{d}" for q, d in pairs)


def rows_fingerprint(query_ids: Iterable[str], doc_ids: Iterable[str], scores: Iterable[float]) -> str:
    """Fingerprint of a store's rows in order: ``query_id<TAB>doc_id<TAB>float.hex(score)`` each."""
    return sha256_strings(
        f"{q}\t{d}\t{float(s).hex()}" for q, d, s in zip(query_ids, doc_ids, scores, strict=True)
    )


def score_pairs_to_store(
    teacher: Teacher,
    pairs: list[tuple[str, str]],
    query_text: Mapping[str, str],
    doc_text: Mapping[str, str],
    out_dir: str | os.PathLike[str],
    *,
    part_size: int,
    inputs: dict[str, str],
    config: dict[str, Any],
    show_progress: bool = True,
    stop_after_parts: int | None = None,
) -> TeacherStore:
    """Score ``pairs`` with ``teacher`` into the store ``out_dir``, resuming it if it exists.

    Args:
        teacher: the scorer.
        pairs: distinct (query_id, doc_id) pairs in sorted order.
        query_text: query id → text.
        doc_text: document id → text.
        out_dir: store directory (created if missing; resumed if it holds a manifest).
        part_size: pairs per part file.
        inputs: fingerprints of what the pairs and texts came from (corpus, queries, candidates).
        config: the resolved stage config, recorded in the manifest.
        show_progress: show the teacher's progress bar (a log line at INFO follows each part).
        stop_after_parts: stop after scoring this many parts in this call (to test resumption).

    Returns:
        The store; ``store.manifest["complete"]`` is false when stopped early.

    Raises:
        ValueError: ``pairs`` not sorted and distinct, a text missing, or ``part_size`` not positive.
        ArtifactMismatchError: ``out_dir`` holds a store made with another teacher, inputs,
            part size or pairs.
    """
    if part_size < 1:
        raise ValueError(f"part_size must be positive, got {part_size}")
    if not pairs:
        raise ValueError("no pairs to score")
    if any(a >= b for a, b in zip(pairs, pairs[1:], strict=False)):
        raise ValueError("pairs must be distinct and sorted by (query_id, doc_id)")
    _check_texts(pairs, query_text, doc_text)
    out = Path(out_dir)
    description = teacher.describe()
    num_parts = math.ceil(len(pairs) / part_size)
    fresh: dict[str, Any] = {
        "stage": STAGE,
        "config": config,
        "teacher": description,
        "inputs": dict(inputs),
        "part_size": part_size,
        "num_parts": num_parts,
        "num_pairs": len(pairs),
        "pairs_fingerprint": pairs_fingerprint(pairs),
    }
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        _check_resumable(manifest, fresh, out)
        if manifest.get("complete") and all(_part_is_complete(out, i, manifest) for i in range(num_parts)):
            return TeacherStore.open(out)
        manifest["complete"] = False
        manifest.pop("fingerprint", None)
    else:
        manifest = {**fresh, "created": now_iso(), "parts": {}, "complete": False, "sessions": []}
    manifest["counts"] = {
        "pairs": len(pairs),
        "queries": len({q for q, _ in pairs}),
        "documents": len({d for _, d in pairs}),
        "parts": num_parts,
    }
    session: dict[str, Any] = {
        "started": now_iso(),
        "device": description.get("device"),
        "parts_scored": 0,
        "wall_time_s": 0.0,
    }
    manifest["sessions"].append(session)
    earlier = float(manifest.get("wall_time_s", 0.0))
    started = time.perf_counter()

    def save() -> None:
        session["wall_time_s"] = round(time.perf_counter() - started, 3)
        manifest["wall_time_s"] = round(earlier + session["wall_time_s"], 3)
        write_manifest(out, manifest)

    out.mkdir(parents=True, exist_ok=True)
    save()
    if not all(_part_is_complete(out, i, manifest) for i in range(num_parts)):
        # Same texts in the same order whether the run is fresh or resumed (see Teacher.prepare).
        teacher.prepare(
            [query_text[q] for q, _ in pairs], [doc_text[d] for _, d in pairs], show_progress=show_progress
        )
    for index in range(num_parts):
        if _part_is_complete(out, index, manifest):
            continue
        if stop_after_parts is not None and session["parts_scored"] >= stop_after_parts:
            return TeacherStore(out, manifest)
        # A part file not listed as complete (or whose bytes changed) is never trusted: score it again.
        manifest["parts"].pop(part_name(index), None)
        chunk = pairs[index * part_size : (index + 1) * part_size]
        t0 = time.perf_counter()
        scores = teacher.score(
            [query_text[q] for q, _ in chunk], [doc_text[d] for _, d in chunk], show_progress=show_progress
        )
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (len(chunk),):
            raise ValueError(f"teacher returned scores of shape {scores.shape} for {len(chunk)} pairs")
        manifest["parts"][part_name(index)] = write_part(out, index, chunk, scores.tolist())
        session["parts_scored"] += 1
        save()
        rate = len(chunk) / max(time.perf_counter() - t0, 1e-9)
        logger.info(
            "%s: part %d/%d scored (%d pairs, %.1f pairs/s)",
            out,
            index + 1,
            num_parts,
            len(chunk),
            rate,
        )
    store = TeacherStore(out, manifest)
    table = store.table()
    manifest["fingerprint"] = rows_fingerprint(
        table.column("query_id").to_pylist(),
        table.column("doc_id").to_pylist(),
        table.column("score").to_pylist(),
    )
    manifest["complete"] = True
    save()
    return TeacherStore.open(out)


def _check_texts(
    pairs: list[tuple[str, str]], query_text: Mapping[str, str], doc_text: Mapping[str, str]
) -> None:
    """Raise ``ValueError`` counting the pairs whose query or document has no text."""
    problems = []
    for kind, position, known in (("query", 0, query_text), ("document", 1, doc_text)):
        unknown = [pair[position] for pair in pairs if pair[position] not in known]
        if unknown:
            ids = sorted(set(unknown))
            problems.append(f"{len(unknown):,} pairs name {len(ids):,} unknown {kind} ids (e.g. {ids[:3]})")
    if problems:
        raise ValueError(" and ".join(problems) + "; were the candidates made for this collection and split?")


def _check_resumable(manifest: Mapping[str, Any], fresh: Mapping[str, Any], out: Path) -> None:
    """Raise :class:`ArtifactMismatchError` naming every difference that forbids resuming ``out``."""
    if manifest.get("stage") != STAGE:
        raise ArtifactMismatchError(
            f"{out} holds a {manifest.get('stage')!r} artifact, not a teacher-score store"
        )
    differences = []
    old_teacher = {k: v for k, v in manifest.get("teacher", {}).items() if k not in RUNTIME_FIELDS}
    new_teacher = {k: v for k, v in fresh["teacher"].items() if k not in RUNTIME_FIELDS}
    for key in sorted(set(old_teacher) | set(new_teacher)):
        if old_teacher.get(key) != new_teacher.get(key):
            differences.append(
                f"teacher.{key}: store has {old_teacher.get(key)!r}, given {new_teacher.get(key)!r}"
            )
    for key in ("part_size", "num_pairs", "pairs_fingerprint"):
        if manifest.get(key) != fresh[key]:
            differences.append(f"{key}: store has {manifest.get(key)!r}, given {fresh[key]!r}")
    old_inputs, new_inputs = manifest.get("inputs", {}), fresh["inputs"]
    for key in sorted(set(old_inputs) | set(new_inputs)):
        if old_inputs.get(key) != new_inputs.get(key):
            differences.append(
                f"inputs.{key}: store has {old_inputs.get(key)!r}, given {new_inputs.get(key)!r}"
            )
    if differences:
        raise ArtifactMismatchError(
            f"{out} is a teacher-score store made differently, so it cannot be resumed:\n  "
            + "\n  ".join(differences)
            + "\nChoose a new --out to score afresh (or delete the directory)."
        )


def _part_is_complete(out: Path, index: int, manifest: Mapping[str, Any]) -> bool:
    """A part is complete when the manifest lists it and its file still has the recorded sha256."""
    entry = manifest["parts"].get(part_name(index))
    path = out / part_name(index)
    return entry is not None and path.is_file() and sha256_file(path) == entry.get("sha256")


def run(config: ScoreTeacherConfig, *, show_progress: bool = True, teacher: Teacher | None = None) -> TeacherStore:
    """The ``score-teacher`` stage: score the candidates (or triples) of a collection into a store.

    ``teacher`` lets a caller pass an already-built teacher (e.g. to reuse its embedding cache
    afterwards); it must be the one ``config.teacher`` describes, which the manifest records.
    """
    from retrodistill.data.candidates import candidate_order, candidates_fingerprint, read_candidates, read_triples
    from retrodistill.data.download import load_dataset

    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    if config.triples:
        rows = read_triples(config.triples)
        pairs = sorted({(c.query_id, c.doc_id) for c in rows})
        # The fingerprint write_candidates would give these rows, in its (query_id, rank, doc_id) order.
        candidates_fp = candidates_fingerprint(sorted(rows, key=candidate_order))
    elif config.candidates:
        candidates = read_candidates(config.candidates)
        check_inputs(
            candidates.manifest.get("inputs", {}),
            collection.fingerprints,
            artifact=f"candidates {config.candidates}",
            given=f"collection {config.data.dataset} ({config.data.split})",
        )
        pairs = candidates.pairs()
        candidates_fp = candidates.fingerprint
    else:
        raise ValueError("score-teacher needs candidates or triples; set `candidates` or `triples`")
    if teacher is None:
        teacher = TEACHERS.build(config.teacher.name, config.teacher.params)
    inputs = {
        "corpus": collection.fingerprints["corpus"],
        "queries": collection.fingerprints["queries"],
        "candidates": candidates_fp,
    }
    doc_text = _DocTexts(collection.corpus)
    return score_pairs_to_store(
        teacher,
        pairs,
        collection.queries,
        doc_text,
        config.out,
        part_size=config.part_size,
        inputs=inputs,
        config=to_dict(config),
        show_progress=show_progress,
    )


class _DocTexts(Mapping[str, str]):
    """Document id → ``title text``, joined on access (the corpus stays one copy)."""

    def __init__(self, corpus: Mapping[str, Any]) -> None:
        self._corpus = corpus

    def __getitem__(self, doc_id: str) -> str:
        return str(self._corpus[doc_id].joined())

    def __iter__(self) -> Any:
        return iter(self._corpus)

    def __len__(self) -> int:
        return len(self._corpus)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._corpus
