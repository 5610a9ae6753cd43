"""The offline teacher-scoring stage: score every candidate pair once, in resumable parts.

Recipe (:func:`run`, the ``retrodistill score-teacher`` command):

1. load the collection and the candidates (or an MS MARCO id-triples file);
2. check that the candidates were made from this collection (corpus and queries fingerprints);
3. build the teacher named in the config;
4. :func:`score_pairs_to_store`: cut the sorted distinct pairs into parts of ``part_size``, score
   each part and write it (``data/store.py`` documents the format), updating ``manifest.json``
   atomically after every part.

Memory stays that of one part: the pairs are an Arrow table (``CandidateSet.pair_table()``) walked
in zero-copy slices, each part's texts are fetched from the memory-mapped corpus when it is scored
(:class:`~retrodistill.data.pairs.PairTexts`), and the finished parts are checked and fingerprinted
one at a time (:mod:`retrodistill.data.part_store`). With a teacher that returns a constant, this
data path alone measured 178,000 pairs/s and 0.56 GB peak RSS on this project's 2-core machine at
load 4 (1M pairs, 1M-passage memory-mapped corpus).

Resuming: run the same command again. The run continues only if the teacher (apart from
:data:`~retrodistill.teachers.base.RUNTIME_FIELDS` such as the device), the inputs, ``part_size`` and
the pairs are the same as recorded; complete parts whose file still has its recorded sha256 are
kept, every other part is (re)scored, so the finished store has exactly the rows of an
uninterrupted run. Temporary files a killed process left behind are deleted. One run (of one or
many processes) may write a store at a time.

Many processes (``torchrun --nproc_per_node N -m retrodistill score-teacher ...`` or
``accelerate launch --multi_gpu --num_processes N -m retrodistill score-teacher ...``, which runs
torchrun, on CPU too): :func:`scoring_rank` reads the rank and world size (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, or an initialised ``torch.distributed`` group; accelerate's mpirun CPU launcher is
not supported). Parts are the shards: rank 0 checks or creates the manifest and tells every rank which
parts are still to score (``todo``, in index order); rank ``r`` scores ``todo[r::world_size]`` (for a
fresh run: the parts ``i`` with ``i % world_size == r``). A rank never writes the manifest: it lists
its finished parts in ``ranks/rank-RRRRR.json`` (written atomically after each part), so a crash
loses at most the parts being scored. After a barrier rank 0 checks every listed part (rows,
sha256, then the ids of every row against the pairs), merges the lists into ``manifest["parts"]``,
computes the fingerprint, marks the store complete and deletes ``ranks/``. A resumed run, with
any number of processes, first merges the ``ranks/`` files a crashed run left. The barrier and
the messages go over a gloo group (CPU, whatever the teacher's device): the default process group,
created from the ``env://`` variables when none is initialised (and destroyed at the end), or a
gloo sub-group of an existing one. A GPU run binds rank ``r`` to ``cuda:LOCAL_RANK``. Every rank
loads the collection and the pairs; the out directory must be on a filesystem all ranks share.
Only rank 0 shows progress bars; every rank logs its parts at INFO.

The parts' scores do not depend on which rank scored them: a part is always scored in one
:meth:`~retrodistill.teachers.base.Teacher.score` call on the same pairs, so a cross-encoder forms
the same batches (keep ``batch_size``: the tiny test cross-encoder's scores move by up to 6e-7 when
its batches change). :meth:`~retrodistill.teachers.base.Teacher.prepare` is where ranks may differ;
``prepare`` chooses:

=========  =====================================================================================
prepare    what each process passes to ``Teacher.prepare``
=========  =====================================================================================
``all``    (default) the texts of every pair of the run, as one process does: the stores are
           bit-identical whatever the number of processes or interruptions, but a teacher that
           encodes texts up front (bi-encoder, ColBERT) repeats that work on every rank
``shard``  the texts of the parts it scores in this call only: N ranks share the encoding, but
           an embedding depends on its batch at the 1e-7 level, so bi-encoder or ColBERT scores
           may differ from a single-process (or uninterrupted) run's in the last bit
           (all-MiniLM-L6-v2: up to 1.2e-7 on 5 to 8% of pairs); teachers without a ``prepare``
           (cross-encoder) are unaffected
=========  =====================================================================================

Manifest fields written here, beyond those of :func:`~retrodistill.artifacts.write_manifest`::

    stage             "score-teacher"
    teacher           Teacher.describe() of the run that created the store
    inputs            {"corpus": ..., "queries": ..., "candidates": ...} fingerprints
    part_size, num_parts, num_pairs
    pairs_fingerprint sha256 over the sorted "query_id<TAB>doc_id" strings
    parts             {"part-00000.parquet": {"rows": n, "sha256": ...}, ...}  complete parts only
    complete          true once every part is
    fingerprint       (complete only) sha256 over all rows "query_id<TAB>doc_id<TAB>float.hex(score)"
    sessions          [{"id", "started", "device", "world_size", "prepare", "parts_scored",
                        "parts_by_rank", "wall_time_s"}, ...] one per invocation (of all its ranks)
    counts            {"pairs", "queries", "documents", "parts"}
    wall_time_s       total over sessions
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
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
    write_json_atomic,
    write_manifest,
)
from retrodistill.config import ScoreTeacherConfig, to_dict
from retrodistill.data.pairs import PairTexts, check_sorted_pairs, pair_table
from retrodistill.data.pairs import count_distinct as _count_distinct
from retrodistill.data.part_store import (
    PartWriter,
    StringsHasher,
    delete_temporary_files,
    iter_part_tables,
    pairs_fingerprint,
    part_is_complete,
    write_table_part,
)
from retrodistill.data.store import STAGE, TeacherStore, part_name, score_table
from retrodistill.stages.score_ranks import (
    RANKS_DIR,
    Group,
    ScoringRank,
    absorb_rank_files,
    bind_gpu,
    delete_rank_files,
    rank_file,
    scoring_rank,
)
from retrodistill.teachers.base import RUNTIME_FIELDS, TEACHERS, Teacher

logger = logging.getLogger(__name__)

PREPARE_MODES = ("all", "shard")


@dataclass
class _Plan:
    """What rank 0 tells every rank before scoring."""

    complete: bool
    todo: list[int] = field(default_factory=list)
    session: str = ""


def score_pairs_to_store(
    teacher: Teacher,
    pairs: Any,
    query_text: Mapping[str, str],
    doc_text: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    part_size: int,
    inputs: dict[str, str],
    config: dict[str, Any],
    show_progress: bool = True,
    stop_after_parts: int | None = None,
    prepare: str = "all",
) -> TeacherStore:
    """Score ``pairs`` with ``teacher`` into the store ``out_dir``, resuming it if it exists.

    Run by one process, or by every rank of a ``torchrun`` / ``accelerate launch`` job with the same
    arguments (see the module docstring): each rank scores its share of the parts, rank 0 merges.

    Args:
        teacher: the scorer.
        pairs: distinct (query_id, doc_id) pairs in sorted order: a pyarrow Table with those two
            columns (``CandidateSet.pair_table()``), or a list of tuples (small runs).
        query_text: query id → text.
        doc_text: the collection's :class:`~retrodistill.data.corpus.Corpus` (texts are fetched a part
            at a time, column-wise), or any mapping document id → text.
        out_dir: store directory (created if missing; resumed if it holds a manifest).
        part_size: pairs per part file.
        inputs: fingerprints of what the pairs and texts came from (corpus, queries, candidates).
        config: the resolved stage config, recorded in the manifest.
        show_progress: show the teacher's progress bar (rank 0 only; a log line at INFO follows each part).
        stop_after_parts: stop after scoring this many parts in this call, per rank (to test resumption).
        prepare: ``"all"`` or ``"shard"``: which texts each process gives ``Teacher.prepare`` (module
            docstring).

    Returns:
        The store, on every rank; ``store.manifest["complete"]`` is false when stopped early.

    Raises:
        ValueError: ``pairs`` not sorted and distinct, a text missing, ``part_size`` not positive or
            ``prepare`` unknown.
        ArtifactMismatchError: ``out_dir`` holds a store made with another teacher, inputs,
            part size or pairs.
        RuntimeError: (many processes) a part a rank reported is missing or differs on rank 0.
    """
    if part_size < 1:
        raise ValueError(f"part_size must be positive, got {part_size}")
    if prepare not in PREPARE_MODES:
        raise ValueError(f"prepare must be one of {', '.join(PREPARE_MODES)}, got {prepare!r}")
    pairs = pair_table(pairs)
    if pairs.num_rows == 0:
        raise ValueError("no pairs to score")
    check_sorted_pairs(pairs)
    texts = PairTexts(query_text, doc_text)
    texts.check(pairs)
    out = Path(out_dir)
    description = teacher.describe()
    num_parts = math.ceil(pairs.num_rows / part_size)
    fresh: dict[str, Any] = {
        "stage": STAGE,
        "config": config,
        "teacher": description,
        "inputs": dict(inputs),
        "part_size": part_size,
        "num_parts": num_parts,
        "num_pairs": pairs.num_rows,
        "pairs_fingerprint": pairs_fingerprint(pairs),
    }
    me = scoring_rank()
    group = Group(me)
    try:
        started = time.perf_counter()
        manifest: dict[str, Any] = {}
        plan = _Plan(complete=False)
        if me.rank == 0:
            with group.failing_together():
                manifest, plan = _begin(out, fresh, pairs, me.world_size, prepare)
        plan = group.broadcast(plan)
        if plan.complete:
            return TeacherStore.open(out)
        mine = me.share(plan.todo)
        if me.world_size > 1 and me.rank == 0 and prepare == "all" and type(teacher).prepare is not Teacher.prepare:
            logger.warning(
                "every rank prepares the texts of all %d pairs (prepare='all', bit-identical stores); "
                "prepare='shard' splits that work at the cost of last-bit differences",
                pairs.num_rows,
            )
        if mine and type(teacher).prepare is not Teacher.prepare:  # the base prepare does nothing: no texts
            # Same texts in the same order whether the run is fresh or resumed (see Teacher.prepare).
            import pyarrow as pa

            chosen = pairs if prepare == "all" else pa.concat_tables([_part_pairs(pairs, i, part_size) for i in mine])
            teacher.prepare(
                texts.queries(chosen.column("query_id")),
                texts.docs(chosen.column("doc_id")),
                show_progress=show_progress and me.rank == 0,
            )
        record = _Recorder(out, me, plan.session, manifest, started)
        for index in mine:
            if stop_after_parts is not None and record.scored >= stop_after_parts:
                break
            chunk = _part_pairs(pairs, index, part_size)
            t0 = time.perf_counter()
            scores = teacher.score(
                texts.queries(chunk.column("query_id")),
                texts.docs(chunk.column("doc_id")),
                show_progress=show_progress and me.rank == 0,
            )
            scores = np.asarray(scores, dtype=np.float32)
            if scores.shape != (len(chunk),):
                raise ValueError(f"teacher returned scores of shape {scores.shape} for {len(chunk)} pairs")
            record.part(index, score_table(chunk, scores))
            rate = len(chunk) / max(time.perf_counter() - t0, 1e-9)
            logger.info(
                "%s: %spart %d/%d scored (%d pairs, %.1f pairs/s)",
                out,
                f"rank {me.rank}: " if me.world_size > 1 else "",
                index + 1,
                num_parts,
                len(chunk),
                rate,
            )
        group.barrier()
        if me.rank == 0:
            with group.failing_together():
                _finish(out, manifest, pairs, plan.session, started)
        group.broadcast(None)
        manifest = read_manifest(out)
        return TeacherStore.open(out) if manifest.get("complete") else TeacherStore(out, manifest)
    finally:
        group.close()


def _part_pairs(pairs: Any, index: int, part_size: int) -> Any:
    """The pairs of part ``index``: a zero-copy slice of the pairs table."""
    return pairs.slice(index * part_size, part_size)


def _begin(out: Path, fresh: dict[str, Any], pairs: Any, world_size: int, prepare: str) -> tuple[dict[str, Any], _Plan]:
    """Rank 0: check or create the manifest, absorb a crashed run's leftovers, open a session."""
    num_parts = int(fresh["num_parts"])
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        _check_resumable(manifest, fresh, out)
        _delete_temporary_files(out)
        absorb_rank_files(out, manifest, strict_session=None)
        done = {i for i in range(num_parts) if part_is_complete(out, i, manifest)}
        if manifest.get("complete") and len(done) == num_parts:
            delete_rank_files(out)
            return manifest, _Plan(complete=True)
        # A part file not listed as complete (or whose bytes changed) is never trusted: score it again.
        manifest["parts"] = {part_name(i): manifest["parts"][part_name(i)] for i in sorted(done)}
        manifest["complete"] = False
        manifest.pop("fingerprint", None)
    else:
        manifest = {**fresh, "created": now_iso(), "parts": {}, "complete": False, "sessions": []}
        done = set()
    manifest["counts"] = {
        "pairs": pairs.num_rows,
        "queries": _count_distinct(pairs.column("query_id")),
        "documents": _count_distinct(pairs.column("doc_id")),
        "parts": num_parts,
    }
    session = {
        "id": uuid.uuid4().hex,
        "started": now_iso(),
        "device": fresh["teacher"].get("device"),
        "world_size": world_size,
        "prepare": prepare,
        "parts_scored": 0,
        "parts_by_rank": [0] * world_size,
        "wall_time_s": 0.0,
    }
    manifest["sessions"].append(session)
    out.mkdir(parents=True, exist_ok=True)
    _save(out, manifest)
    delete_rank_files(out)  # after the save: the manifest now lists their parts
    return manifest, _Plan(complete=False, todo=[i for i in range(num_parts) if i not in done], session=session["id"])


class _Recorder:
    """Records a rank's finished parts: in the manifest when it runs alone, else in its rank file."""

    def __init__(self, out: Path, me: ScoringRank, session: str, manifest: dict[str, Any], started: float) -> None:
        self.out, self.me, self.manifest, self.started = out, me, manifest, started
        self.writer = PartWriter(out, manifest) if me.world_size == 1 else None
        self.scored = 0
        self.progress: dict[str, Any] = {
            "rank": me.rank,
            "world_size": me.world_size,
            "session": session,
            "parts": {},
            "parts_scored": 0,
            "wall_time_s": 0.0,
        }

    def part(self, index: int, table: Any) -> None:
        """Write part ``index`` (its rows ``table``) and record it."""
        self.scored += 1
        elapsed = round(time.perf_counter() - self.started, 3)
        if self.writer is not None:  # alone: the part-store writer lists the part and saves the manifest
            session = self.manifest["sessions"][-1]
            session["parts_scored"] = session["parts_by_rank"][0] = self.scored
            session["wall_time_s"] = elapsed
            _sum_wall_time(self.manifest)
            self.writer.write(index, table)
        else:
            entry = write_table_part(self.out, index, table)
            self.progress["parts"][part_name(index)] = entry
            self.progress["parts_scored"] = self.scored
            self.progress["wall_time_s"] = elapsed
            write_json_atomic(rank_file(self.out, self.me.rank), self.progress)


def _finish(out: Path, manifest: dict[str, Any], pairs: Any, session: str, started: float) -> None:
    """Rank 0, after the barrier: merge the ranks' parts, check them, and complete the store if all are.

    The parts are read back one at a time: their ids are compared with the pairs' and their rows
    hashed into the fingerprint, so memory stays that of one part.
    """
    import pyarrow.compute as pc

    absorb_rank_files(out, manifest, strict_session=session)
    current = manifest["sessions"][-1]
    current["wall_time_s"] = round(time.perf_counter() - started, 3)
    num_parts = int(manifest["num_parts"])
    if len(manifest["parts"]) == num_parts:
        hasher = StringsHasher()
        at = 0
        for table in iter_part_tables(out, manifest):
            expected = pairs.slice(at, table.num_rows)
            if table.num_rows != len(expected):
                raise RuntimeError(f"{out}: the parts hold more rows than the {pairs.num_rows:,} pairs")
            same = pc.and_(
                pc.equal(table.column("query_id"), expected.column("query_id")),
                pc.equal(table.column("doc_id"), expected.column("doc_id")),
            )
            if not pc.all(same).as_py():
                wrong = pc.indices_nonzero(pc.invert(same))[0].as_py()
                row = (table.column("query_id")[wrong].as_py(), table.column("doc_id")[wrong].as_py())
                pair = (expected.column("query_id")[wrong].as_py(), expected.column("doc_id")[wrong].as_py())
                raise RuntimeError(f"{out}: row {at + wrong} of the parts is {row}, not pair {pair}")
            hasher.update(table.column("query_id"), table.column("doc_id"), table.column("score"))
            at += table.num_rows
        if at != pairs.num_rows:
            raise RuntimeError(f"{out}: the parts hold {at:,} rows for {pairs.num_rows:,} pairs")
        manifest["fingerprint"] = hasher.hexdigest()
        manifest["complete"] = True
    _save(out, manifest)
    delete_rank_files(out)


def _delete_temporary_files(out: Path) -> None:
    """Delete the ``atomic_path`` temporaries (``.NAME.XXXX.tmp``) a killed process left."""
    delete_temporary_files(out, extra=(f"{RANKS_DIR}/.rank-*.json.*.tmp",))


def _sum_wall_time(manifest: dict[str, Any]) -> None:
    manifest["wall_time_s"] = round(sum(float(s.get("wall_time_s", 0.0)) for s in manifest["sessions"]), 3)


def _save(out: Path, manifest: dict[str, Any]) -> None:
    _sum_wall_time(manifest)
    write_manifest(out, manifest)


def _check_resumable(manifest: Mapping[str, Any], fresh: Mapping[str, Any], out: Path) -> None:
    """Raise :class:`ArtifactMismatchError` naming every difference that forbids resuming ``out``."""
    if manifest.get("stage") != STAGE:
        raise ArtifactMismatchError(f"{out} holds a {manifest.get('stage')!r} artifact, not a teacher-score store")
    differences = []
    old_teacher = {k: v for k, v in manifest.get("teacher", {}).items() if k not in RUNTIME_FIELDS}
    new_teacher = {k: v for k, v in fresh["teacher"].items() if k not in RUNTIME_FIELDS}
    for key in sorted(set(old_teacher) | set(new_teacher)):
        if old_teacher.get(key) != new_teacher.get(key):
            differences.append(f"teacher.{key}: store has {old_teacher.get(key)!r}, given {new_teacher.get(key)!r}")
    for key in ("part_size", "num_pairs", "pairs_fingerprint"):
        if manifest.get(key) != fresh[key]:
            differences.append(f"{key}: store has {manifest.get(key)!r}, given {fresh[key]!r}")
    old_inputs, new_inputs = manifest.get("inputs", {}), fresh["inputs"]
    for key in sorted(set(old_inputs) | set(new_inputs)):
        if old_inputs.get(key) != new_inputs.get(key):
            differences.append(f"inputs.{key}: store has {old_inputs.get(key)!r}, given {new_inputs.get(key)!r}")
    old_batch, new_batch = manifest.get("teacher", {}).get("batch_size"), fresh["teacher"].get("batch_size")
    if not differences and old_batch is not None and new_batch is not None and old_batch != new_batch:
        # Allowed (a resumed run may need smaller batches), but padding changes a cross-encoder's scores
        # in the last bits (the tiny test model's by up to 6e-7): the store will not be bit-identical.
        logger.warning(
            "resuming %s with batch_size %s, but it was started with %s: the new parts' scores may differ in "
            "the last bits from an uninterrupted run's; pass --batch-size %s for a bit-identical store",
            out, new_batch, old_batch, old_batch,
        )
    if differences:
        raise ArtifactMismatchError(
            f"{out} is a teacher-score store made differently, so it cannot be resumed:\n  "
            + "\n  ".join(differences)
            + "\nChoose a new --out to score afresh (or delete the directory)."
        )


def run(
    config: ScoreTeacherConfig,
    *,
    show_progress: bool = True,
    teacher: Teacher | None = None,
    prepare: str = "all",
) -> TeacherStore:
    """The ``score-teacher`` stage: score the candidates (or triples) of a collection into a store.

    ``teacher`` lets a caller pass an already-built teacher (e.g. to reuse its embedding cache
    afterwards); it must be the one ``config.teacher`` describes, which the manifest records.
    Under ``torchrun`` / ``accelerate launch`` every rank runs this with the same config (see the
    module docstring); ``prepare`` is :func:`score_pairs_to_store`'s.
    """
    from retrodistill.data.candidates import (
        candidates_fingerprint,
        read_candidates,
        read_triples_table,
        sort_candidates,
        sorted_pairs,
    )
    from retrodistill.data.download import load_dataset

    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    if config.triples:
        table = read_triples_table(config.triples)
        pairs = sorted_pairs(table)
        # The fingerprint write_candidates would give these rows, in its (query_id, rank, doc_id) order.
        candidates_fp = candidates_fingerprint(sort_candidates(table))
    elif config.candidates:
        candidates = read_candidates(config.candidates)
        check_inputs(
            candidates.manifest.get("inputs", {}),
            collection.fingerprints,
            artifact=f"candidates {config.candidates}",
            given=f"collection {config.data.dataset} ({config.data.split})",
        )
        pairs = candidates.pair_table()
        candidates_fp = candidates.fingerprint
    else:
        raise ValueError("score-teacher needs candidates or triples; set `candidates` or `triples`")
    if teacher is None:
        bind_gpu(scoring_rank())
        teacher = TEACHERS.build(config.teacher.name, config.teacher.params)
    inputs = {
        "corpus": collection.fingerprints["corpus"],
        "queries": collection.fingerprints["queries"],
        "candidates": candidates_fp,
    }
    return score_pairs_to_store(
        teacher,
        pairs,
        collection.queries,
        collection.corpus,
        config.out,
        part_size=config.part_size,
        inputs=inputs,
        config=to_dict(config),
        show_progress=show_progress,
        prepare=prepare,
    )

