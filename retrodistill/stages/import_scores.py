"""Import teacher scores others published, instead of rescoring: score files → store + candidates.

:func:`import_scores` (the ``retrodistill import-scores`` command) reads one score file, checks every
id against a collection, and writes the two artifacts ``train-student`` needs: a teacher-score store
(:mod:`retrodistill.data.store`) and a candidates artifact (:mod:`retrodistill.data.candidates`) whose
fingerprint the store records, so ``train-student --store STORE`` finds and accepts both.

Formats (:data:`IMPORT_FORMATS`; text files may be gzipped, ``*.gz``), with the documents each
names as positives (the others get labels from qrels only):

* ``hofstaetter-tsv``: ``pos_score<TAB>neg_score<TAB>qid<TAB>pid+<TAB>pid-``, the teacher files of
  sebastian-hofstaetter/neural-ranking-kd (e.g. ``bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv``).
  Positive: ``pid+``.
* ``st-mse``: rows ``query_id, passage_id, score`` in Parquet (the hub's ``*.parquet``) or JSONL: the
  ``bert-ensemble-mse`` subset of sentence-transformers/msmarco. Positives: none.
* ``st-scores-pickle``: ``scores[qid][pid] = score``, the (gzipped) pickle of sentence-transformers'
  msmarco-hard-negatives (``cross-encoder-ms-marco-MiniLM-L-6-v2-scores.pkl.gz``). Loading a pickle can
  run code, so it needs ``allow_pickle`` and is read with an unpickler that builds only dicts,
  numbers, strings and numpy scalars. Positives: none.
* ``tevatron``: ``{"query_id", "positive_passages": [{"docid", "score", ...}], "negative_passages": [...]}``
  per line; a passage without ``score`` is an error (the file has no teacher scores). Positives:
  ``positive_passages``.
* ``colbert``: ``[qid, [pid, score], [pid, score], ...]`` per line, ColBERT's n-way distillation
  examples. Positive: the first pid of each line (ColBERT trains with it as the target).
* ``flagembedding``: ``{"query", "pos", "neg", "pos_scores", "neg_scores"}`` per line, with texts, not
  ids (mapped through the collection, below). Positives: ``pos``.
* ``trec-run``: ``qid Q0 docid rank score tag`` (e.g. a cross-encoder re-ranking run). Positives: none.
* ``st-margin-mse`` (``query_id, positive_id, negative_id, score`` with ``score`` a margin): refused.

Decisions (what they counted is in both manifests' ``import`` section):

* **Margins are refused** (``st-margin-mse``): a margin ``s(q, d+) - s(q, d-)`` fixes the scores only
  up to an unknown constant per query, so it is not a (query, document) score; storing it on one
  side of a triple would give a negative in several triples several scores. Import the absolute
  scores the margins were computed from (``st-mse`` or ``hofstaetter-tsv``).
* **Repeated pairs**: the same (query, document) with the same float32 score is merged; with another
  score it is a *conflict*: ``on_conflict="first"`` keeps the first and counts the conflicts (with
  examples naming both lines), ``"error"`` stops at the first one. A document that is a positive in
  one record and a negative in another for the same query is always an error.
* **Texts → ids** (``flagembedding``): a query text must equal (after stripping) the text of a query
  of the split; a passage text must equal a document's ``title text`` or its ``text``. A text shared
  by several documents maps to the smallest id (counted as ``ambiguous_texts``). Hashing texts into
  new ids was rejected: ``train-student`` needs the texts in a collection anyway.
* **Unknown ids** (not among the split's queries or the corpus) are an error naming the first line
  and a few ids, unless ``skip_unknown`` drops and counts them.
* **Labels**: the qrels grade where the qrels (``qrels`` file, else the collection's split) judge the
  pair, else 1 for a positive the format names, else 0. **Ranks** (``rank``): ``"file"`` = the run's
  rank column for ``trec-run`` and the order in which the file first lists a query's documents
  otherwise; ``"score"`` = by imported score, best first; ``"none"`` = 0 for all, which puts every
  negative inside ``train-student``'s ``negative_pool``. ``retrieval_score`` is NaN (no retriever).
* **Scale**: the file is read in blocks (:mod:`retrodistill.data.import_readers`); ids become
  integer codes as they arrive (MS MARCO's numeric ids are their own codes, nothing is hashed;
  other ids index a growing dictionary), 13 bytes per record. A stable sort of the records'
  (query, document) codes, a bucket of queries at a time, merges repeated pairs, finds conflicts
  and gives the store its (query_id, doc_id) order; store parts and the candidates file are then
  written a slice at a time. No Python object per record is made.
* **Store manifest**: ``stage`` is ``"import-scores"`` (one of the store stages
  :meth:`TeacherStore.open` accepts); ``teacher`` is
  ``{"name": "imported", "format", "source", "source_sha256", "model"}``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.artifacts import publish_dir, sha256_file
from retrodistill.data.candidates import CandidateSet, CandidatesWriter, read_candidates
from retrodistill.data.collections import Collection, DataFormatError, read_qrels
from retrodistill.data.import_merge import EXAMPLES, Merger, Pairs, on_line, return_freed_memory
from retrodistill.data.import_readers import (
    IMPORT_FORMATS,
    ImportFormat,
    ReadContext,
    ScoredPair,
)
from retrodistill.data.part_store import PartWriter, StringsHasher
from retrodistill.data.store import TeacherStore, store_schema
from retrodistill.outputs import staging_dir

__all__ = [
    "CONFLICT_POLICIES",
    "IMPORT_FORMATS",
    "RANK_POLICIES",
    "STAGE",
    "ImportFormat",
    "ImportResult",
    "ReadContext",
    "ScoredPair",
    "import_scores",
]

STAGE = "import-scores"
RANK_POLICIES = ("file", "score", "none")
CONFLICT_POLICIES = ("first", "error")
_SLICE = 1 << 20  # candidate rows written per step


@dataclass
class ImportResult:
    store: TeacherStore
    candidates: CandidateSet
    report: dict[str, Any]  # the manifests' "import" section


# ---------------------------------------------------------------- checks and labels


def _drop_unknown(pairs: Pairs, merger: Merger, context: ReadContext, skip_unknown: bool) -> dict[str, int]:
    """Refuse (or drop and count) pairs whose query is not in the split or document not in the corpus."""
    collection = context.collection
    known_q = np.fromiter(
        (q in collection.queries for q in _iter_strings(pairs.queries)), dtype=bool, count=len(pairs.queries)
    )
    corpus = collection.corpus
    if hasattr(corpus, "rows"):
        known_d = np.asarray(corpus.rows(pairs.docs, missing=-1)) >= 0
    else:
        known_d = np.fromiter((d in corpus for d in _iter_strings(pairs.docs)), dtype=bool, count=len(pairs.docs))
    bad_q, bad_d = ~known_q[pairs.q], ~known_d[pairs.d]
    bad = bad_q | bad_d
    unknown_queries = np.unique(pairs.q[bad_q])
    unknown_docs = np.unique(pairs.d[bad_d])
    count = int(bad.sum())
    if count and not skip_unknown:

        def named(codes: np.ndarray, column: np.ndarray, flags: np.ndarray, ids: Any) -> str:
            # Each id with the line of the first pair naming it, in order of first appearance.
            firsts = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(firsts, column[flags], pairs.first[flags])
            chosen = codes[np.argsort(firsts[codes], kind="stable")[:EXAMPLES]]
            lines = merger.lines(firsts[chosen])
            return ", ".join(
                f"{context.labels.get(str(ids[int(c)].as_py()), repr(str(ids[int(c)].as_py())))} "
                f"({on_line(lines[int(firsts[c])])})"
                for c in chosen
            )

        problems = []
        if len(unknown_queries):
            problems.append(
                f"{len(unknown_queries):,} query ids are not among the {len(collection.queries):,} queries of split "
                f"{collection.split!r} of {collection.name} "
                f"(e.g. {named(unknown_queries, pairs.q, bad_q, pairs.queries)})"
            )
        if len(unknown_docs):
            problems.append(
                f"{len(unknown_docs):,} document ids are not in its corpus "
                f"(e.g. {named(unknown_docs, pairs.d, bad_d, pairs.docs)})"
            )
        first_bad = int(pairs.first[bad].min())
        raise DataFormatError(
            merger.path,
            merger.lines([first_bad])[first_bad],
            f"{count:,} pairs name unknown ids: "
            + "; ".join(problems)
            + ". Was the file made for this dataset and split? --skip-unknown drops such pairs.",
        )
    if count:
        pairs.keep(~bad)
    return {"pairs": count, "query_ids": len(unknown_queries), "doc_ids": len(unknown_docs)}


def _distinct(codes: np.ndarray, size: int) -> int:
    """How many distinct values ``codes`` (integers in ``[0, size)``) holds."""
    return int(np.count_nonzero(np.bincount(codes, minlength=size))) if len(codes) else 0


def _iter_strings(array: Any) -> Iterator[str]:
    """The values of an Arrow string array, a slice at a time (bounded Python memory)."""
    for start in range(0, len(array), _SLICE):
        yield from array.slice(start, _SLICE).to_pylist()


def _judged(pairs: Pairs, qrels: dict[str, dict[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """For each pair: whether the qrels judge it, and the grade (0 where not)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    jq = [q for q, docs in qrels.items() for _ in docs]
    jd = [d for docs in qrels.values() for d in docs]
    grades = np.array([int(g) for docs in qrels.values() for g in docs.values()], dtype=np.int64)
    judged = np.zeros(len(pairs), dtype=bool)
    grade = np.zeros(len(pairs), dtype=np.int32)
    if not jq or not len(pairs):
        return judged, grade
    qi = pc.index_in(pa.array(jq, pa.string()), value_set=pairs.queries)
    di = pc.index_in(pa.array(jd, pa.string()), value_set=pairs.docs)
    present = pc.and_(qi.is_valid(), di.is_valid()).to_numpy(zero_copy_only=False)
    q = qi.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    d = di.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    keys = (q[present] << 32) | d[present]
    order = np.argsort(keys)
    keys, values = keys[order], grades[present][order]
    if len(keys):
        for begin in range(0, len(pairs), 4 * _SLICE):  # a slice at a time: the temporaries stay small
            rows = slice(begin, begin + 4 * _SLICE)
            wanted = (pairs.q[rows].astype(np.int64) << 32) | pairs.d[rows]
            position = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
            hit = keys[position] == wanted
            judged[rows] = hit
            grade[rows] = np.where(hit, values[position], 0)
    return judged, grade


def _query_slices(q: np.ndarray, size: int) -> Iterator[slice]:
    """Consecutive slices of about ``size`` pairs that never split a query (``q`` is sorted)."""
    start, n = 0, len(q)
    while start < n:
        stop = min(start + size, n)
        if stop < n:
            stop = int(np.searchsorted(q, q[stop - 1], side="right"))
        yield slice(start, stop)
        start = stop


def _ranks(pairs: Pairs, rows: slice, policy: str) -> np.ndarray:
    """The candidate rank (module docstring) of each pair in ``rows``, a slice of whole queries."""
    q = pairs.q[rows]
    n = len(q)
    if policy == "none":
        return np.zeros(n, dtype=np.int32)
    if policy == "score":
        order = np.lexsort((pairs.d[rows], -pairs.score[rows].astype(np.float64), q))
    else:
        order = np.lexsort((pairs.first[rows], q))
    # The pairs are sorted by query, so sorted position i lies in the query that pair i lies in.
    new = np.ones(n, dtype=bool)
    new[1:] = q[1:] != q[:-1]
    starts = np.flatnonzero(new)
    group_start = np.repeat(starts, np.diff(np.append(starts, n)))
    position = np.empty(n, dtype=np.int32)
    position[order] = np.arange(n) - group_start + 1
    if policy == "file" and pairs.rank is not None:
        stated = pairs.rank[rows]
        position = np.where(stated > 0, stated, position).astype(np.int32)
    return position


# ---------------------------------------------------------------- the stage


def import_scores(
    source: str | os.PathLike[str],
    format: str,
    *,
    collection: Collection,
    out: str | os.PathLike[str],
    candidates_out: str | os.PathLike[str] | None = None,
    model: str = "unknown",
    qrels: str | os.PathLike[str] | None = None,
    rank: str = "file",
    on_conflict: str = "first",
    skip_unknown: bool = False,
    allow_pickle: bool = False,
    part_size: int = 50_000,
    overwrite: bool = False,
) -> ImportResult:
    """Import the score file ``source`` (in ``format``) as a teacher-score store and its candidates.

    Args:
        source: the score file.
        format: a name in :data:`IMPORT_FORMATS` (see the module docstring).
        collection: the collection split the scores belong to; every id is checked against it.
        out: the store directory to write.
        candidates_out: the candidates directory to write (default: ``OUT-candidates`` beside ``out``).
        model: what produced the scores (e.g. ``"bert-ensemble"``), recorded as ``teacher.model``.
        qrels: a qrels file for the labels (default: the collection's qrels of its split).
        rank: candidate ranks: ``"file"``, ``"score"`` or ``"none"``.
        on_conflict: a pair given two scores: ``"first"`` keeps the first, ``"error"`` raises.
        skip_unknown: drop pairs with ids the collection lacks instead of raising.
        allow_pickle: permit ``st-scores-pickle`` (read with a restricted unpickler).
        part_size: pairs per store part.
        overwrite: replace ``out`` / ``candidates_out`` if they exist.

    Raises:
        DataFormatError: a malformed record, a conflict under ``on_conflict="error"``, unknown ids.
        ValueError: bad arguments, existing outputs, a margin file, a pickle without ``allow_pickle``.
    """
    start = time.perf_counter()
    path = Path(source)
    importer = IMPORT_FORMATS.get(format)
    if rank not in RANK_POLICIES:
        raise ValueError(f"rank must be one of {', '.join(RANK_POLICIES)}, got {rank!r}")
    if on_conflict not in CONFLICT_POLICIES:
        raise ValueError(f"on_conflict must be one of {', '.join(CONFLICT_POLICIES)}, got {on_conflict!r}")
    if part_size < 1:
        raise ValueError(f"part_size must be positive, got {part_size}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    store_dir = Path(out)
    cand_dir = (
        Path(candidates_out) if candidates_out is not None else store_dir.with_name(f"{store_dir.name}-candidates")
    )
    _check_outputs(path, store_dir, cand_dir, overwrite)

    context = ReadContext(collection, allow_pickle=allow_pickle)
    merger = Merger(path, on_conflict)
    for batch in importer.read(path, context):
        merger.add(batch)
    pairs = merger.merge()
    return_freed_memory()
    if not len(pairs):
        raise DataFormatError(path, None, "empty file: no scores")
    skipped = _drop_unknown(pairs, merger, context, skip_unknown)
    if not len(pairs):
        raise ValueError(
            f"{path}: every pair names an id unknown to {collection.name} ({collection.split}); nothing to import"
        )
    judged_by = read_qrels(qrels) if qrels is not None else collection.qrels
    judged, grade = _judged(pairs, judged_by)
    return_freed_memory()
    labels = np.where(judged, grade, pairs.positive.astype(np.int32))
    changed = int((judged & ((grade > 0) != pairs.positive)).sum()) if importer.names_positives else 0
    queries_with_pairs = _distinct(pairs.q, len(pairs.queries))
    report: dict[str, Any] = {
        "records": merger.records,
        "pairs": len(pairs),
        "duplicates": merger.duplicates,
        "conflicts": merger.conflicts,
        "conflict_examples": merger.conflict_examples,
        "on_conflict": on_conflict,
        "skipped_unknown": skipped,
        "ambiguous_texts": context.ambiguous_texts,
        "labels": f"qrels file {qrels}" if qrels is not None else f"qrels/{collection.split} of {collection.name}",
        "labels_changed_by_qrels": changed,
        "queries_without_positive": queries_with_pairs - _distinct(pairs.q[labels > 0], len(pairs.queries)),
        "rank": rank,
    }
    teacher = {
        "name": "imported",
        "format": format,
        "source": str(path),
        "source_sha256": sha256_file(path),
        "model": model,
    }
    config = {
        "source": str(path),
        "format": format,
        "dataset": collection.name,
        "split": collection.split,
        "candidates": str(cand_dir),  # where train-student finds the candidates when not given them
        "model": model,
        "qrels": None if qrels is None else str(qrels),
        "rank": rank,
        "on_conflict": on_conflict,
        "skip_unknown": skip_unknown,
        "part_size": part_size,
    }
    cand_inputs = dict(collection.fingerprints)
    if qrels is not None:
        cand_inputs["qrels_file"] = sha256_file(qrels)

    staging = [_staging_dir(cand_dir), _staging_dir(store_dir)]
    try:
        cand_manifest = _write_candidates(
            staging[0],
            pairs,
            labels,
            rank,
            {
                "stage": STAGE,
                "config": config,
                "dataset": collection.name,
                "split": collection.split,
                "teacher": teacher,
                "inputs": cand_inputs,
                "import": report,
            },
        )
        inputs = {
            "corpus": collection.fingerprints["corpus"],
            "queries": collection.fingerprints["queries"],
            "candidates": cand_manifest["fingerprint"],
        }
        writer = _write_store(staging[1], pairs, part_size, teacher, inputs, config, report, start)
        publish_dir(staging[0], cand_dir)
        writer.publish(store_dir)
    finally:
        for directory in staging:
            shutil.rmtree(directory, ignore_errors=True)
    # Just written and hashed: opened without a second pass over the rows.
    return ImportResult(TeacherStore.open(store_dir), read_candidates(cand_dir, verify=False), report)


def _write_candidates(
    directory: Path, pairs: Pairs, labels: np.ndarray, rank: str, manifest: dict[str, Any]
) -> dict[str, Any]:
    """The candidates in their canonical order (query_id, rank == 0, rank, doc_id), whole queries at a time."""
    import pyarrow as pa

    writer = CandidatesWriter(directory)
    try:
        for rows in _query_slices(pairs.q, _SLICE):
            ranks = _ranks(pairs, rows, rank)
            # The pairs are sorted by (query, doc); a stable sort on (query, rank == 0, rank) keeps doc order in ties.
            take = np.lexsort((ranks, ranks == 0, pairs.q[rows]))
            chosen = take + rows.start
            writer.write(
                pa.table(
                    {
                        "query_id": pairs.queries.take(pa.array(pairs.q[chosen])),
                        "doc_id": pairs.docs.take(pa.array(pairs.d[chosen])),
                        "label": labels[chosen],
                        "rank": ranks[take],
                        "retrieval_score": np.full(len(chosen), np.nan, dtype=np.float32),
                    }
                )
            )
    except BaseException:
        writer.abort()
        raise
    return writer.close(manifest)


def _write_store(
    directory: Path,
    pairs: Pairs,
    part_size: int,
    teacher: dict[str, Any],
    inputs: dict[str, str],
    config: dict[str, Any],
    report: dict[str, Any],
    start: float,
) -> PartWriter:
    """Write the parts and the manifest of a complete store, as ``score_pairs_to_store`` would."""
    import pyarrow as pa

    num_parts = -(-len(pairs) // part_size)
    manifest: dict[str, Any] = {
        "stage": STAGE,
        "config": config,
        "teacher": teacher,
        "inputs": inputs,
        "part_size": part_size,
        "num_parts": num_parts,
        "num_pairs": len(pairs),
        "pairs_fingerprint": "",  # set below, once every part is hashed
        "parts": {},
        "complete": False,
        "counts": {
            "pairs": len(pairs),
            "queries": _distinct(pairs.q, len(pairs.queries)),
            "documents": _distinct(pairs.d, len(pairs.docs)),
            "parts": num_parts,
        },
        "import": report,
    }
    writer = PartWriter(directory, manifest)
    pair_hash, row_hash = StringsHasher(), StringsHasher()
    for index in range(num_parts):
        rows = slice(index * part_size, (index + 1) * part_size)
        table = pa.table(
            {
                "query_id": pairs.queries.take(pa.array(pairs.q[rows])),
                "doc_id": pairs.docs.take(pa.array(pairs.d[rows])),
                "score": pairs.score[rows],
            },
            schema=store_schema(),
        )
        writer.write(index, table, save=False)
        pair_hash.update(table.column("query_id"), table.column("doc_id"))
        row_hash.update(table.column("query_id"), table.column("doc_id"), table.column("score"))
    manifest["pairs_fingerprint"] = pair_hash.hexdigest()
    manifest["wall_time_s"] = round(time.perf_counter() - start, 3)
    writer.finish(row_hash.hexdigest())
    return writer


def _check_outputs(source: Path, store_dir: Path, cand_dir: Path, overwrite: bool) -> None:
    a, b = store_dir.resolve(), cand_dir.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise ValueError(f"the store ({store_dir}) and the candidates ({cand_dir}) need two separate directories")
    for target in (store_dir, cand_dir):
        if target.exists() and not overwrite:
            raise ValueError(f"{target} already exists; choose another output or pass --overwrite to replace it")
        if target.resolve() in source.resolve().parents:
            raise ValueError(f"{source} lies inside the output {target}, which the import would replace")


def _staging_dir(target: Path) -> Path:
    """A fresh folder beside ``target`` (same filesystem, so the final rename is atomic); stale ones go."""
    return staging_dir(target)
