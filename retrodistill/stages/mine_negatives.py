"""The ``mine-negatives`` stage: top-k of each retriever per query, judged documents kept apart from negatives.

Reads a collection, retrieves ``k`` documents per query of the split with each source of
``retrievers`` (:mod:`retrodistill.mining.sources`: bm25s, Lucene BM25, a dense model, a TREC run),
drops the negatives the false-negative rules name (:mod:`retrodistill.mining.filters`: rank range,
margins to the positive's score in that source), merges the sources (one row per document: the
best rank of any source, and a ``source`` column naming every source that found it) and writes a
candidates artifact (see :mod:`retrodistill.data.candidates`): every judged document of the query
with its qrels grade as ``label``, and every retrieved, unjudged document as a negative (label 0).
Judged documents with grade 0 are kept as they are judged non-relevant, never mined as "unknown",
and no rule drops a judged document. The manifest records each source (model identity, index, run
file hash), each rule and how many negatives it removed.

``from_candidates`` filters an existing artifact instead (:func:`refilter`), with the teacher's
scores too once a store exists (RocketQA's denoising); the result records the fingerprints it was
filtered from, so a student trains on it with the parent's teacher-score store.

At MS MARCO's size (8.8M passages) the recipe streams: the corpus is tokenised a chunk at a time
into a bm25s index saved under the cache (``$RETRODISTILL_CACHE/bm25/KEY``, keyed by the corpus
fingerprint and the BM25 parameters, so a later run memory-maps it instead of rebuilding), dense
vectors come from the corpus-embedding cache shard by shard, queries are retrieved a chunk at a
time, and candidates are numpy arrays joined to the qrels with ``searchsorted`` and handed to
:func:`~retrodistill.data.candidates.write_candidates` as one Arrow table.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.config import MineConfig, to_dict
from retrodistill.data.candidates import Candidate, CandidateSet, read_candidates, write_candidates
from retrodistill.data.collections import Collection
from retrodistill.data.download import load_dataset
from retrodistill.index.bm25 import TIES
from retrodistill.mining.sources import Hits

STAGE = "mine-negatives"
#: Queries retrieved per call to bm25s.
QUERY_CHUNK = 1_000
#: Documents tokenised at a time while the index is built.
DOC_CHUNK = 50_000


def _doc_id_array(collection: Collection) -> Any:
    """The corpus ids in row order, as an Arrow array (the Arrow-backed corpus has it ready)."""
    import pyarrow as pa

    corpus = collection.corpus
    return corpus.ids if hasattr(corpus, "ids") else pa.array(list(corpus), pa.string())


def _doc_rows(collection: Collection, doc_ids: list[str]) -> np.ndarray:
    corpus = collection.corpus
    if hasattr(corpus, "rows"):
        return np.asarray(corpus.rows(doc_ids), dtype=np.int64)
    position = {d: i for i, d in enumerate(corpus)}
    return np.fromiter((position[d] for d in doc_ids), dtype=np.int64, count=len(doc_ids))


def _text_chunks(collection: Collection, size: int) -> Any:
    """The corpus texts (``Document.joined()``), ``size`` documents at a time, in row order."""
    corpus = collection.corpus
    n = len(corpus)
    if hasattr(corpus, "texts"):
        for start in range(0, n, size):
            yield corpus.texts(np.arange(start, min(n, start + size)))
        return
    ids = list(corpus)
    for start in range(0, n, size):
        yield [collection.doc_text(d) for d in ids[start : start + size]]


def index_directory(collection: Collection, params: dict[str, Any]) -> Path | None:
    """Where the BM25 index of this corpus and these parameters is cached; ``None`` without a fingerprint."""
    from retrodistill.data.corpus import cache_root

    fingerprint = collection.fingerprints.get("corpus")
    if not fingerprint:
        return None
    key = json.dumps({"corpus": fingerprint, **params}, sort_keys=True)
    return cache_root() / "bm25" / hashlib.sha256(key.encode()).hexdigest()[:24]


def bm25_retriever(
    collection: Collection, k1: float, b: float, ties: str = "bm25s", show_progress: bool = False
) -> Any:
    """A BM25 retriever over the collection's corpus: the cached index when there is one, else built
    (and cached when the corpus has a fingerprint)."""
    from retrodistill.index.bm25 import BM25Retriever, read_index_manifest

    retriever = BM25Retriever(k1=k1, b=b, chunk_size=DOC_CHUNK, ties=ties)
    directory = index_directory(collection, retriever.params())
    n_docs = len(collection.corpus)
    if directory is not None:
        manifest = read_index_manifest(directory)
        if manifest is not None and manifest.get("num_docs") == n_docs:
            loaded = BM25Retriever.load(directory)
            loaded.ties = ties
            return loaded
        if manifest is not None:  # a stale or foreign index under our key: rebuild it
            import shutil

            shutil.rmtree(directory)
    extra = {"corpus": collection.fingerprints.get("corpus")}
    chunks = _text_chunks(collection, DOC_CHUNK)
    retriever.build(chunks, directory, extra=extra, show_progress=show_progress, total=len(collection.corpus))
    return retriever


def mine_table(
    collection: Collection, k: int, k1: float, b: float, ties: str = "bm25s", show_progress: bool = False
) -> Any:
    """BM25 candidates of every query of the collection's split as a pyarrow Table (any row order).

    ``ties`` orders documents with equal BM25 scores (:class:`~retrodistill.index.bm25.BM25Retriever`):
    ``"bm25s"`` (the default) keeps the candidates, and so the fingerprints, of earlier versions;
    ``"row"`` is ~10× faster per query on large corpora.
    """
    from retrodistill.mining.sources import BM25sSource

    source = BM25sSource(k1, b, ties)
    hits = source.search(collection, k, show_progress)
    judged = Judged.of(collection)
    return judged.table(collection, hits, judged.labels(hits), None)


@dataclass
class Judged:
    """The split's judgments as sorted integer keys ``query_position * n_docs + corpus_row``."""

    key: np.ndarray  # int64, sorted
    grade: np.ndarray  # int32
    n_docs: int

    @classmethod
    def of(cls, collection: Collection) -> Judged:
        n_docs = len(collection.corpus)
        judged_q, judged_docs, judged_grade = [], [], []
        for qi, qid in enumerate(collection.queries):
            for doc_id, grade in collection.qrels.get(qid, {}).items():
                judged_q.append(qi)
                judged_docs.append(doc_id)
                judged_grade.append(grade)
        key = np.asarray(judged_q, dtype=np.int64) * n_docs + _doc_rows(collection, judged_docs)
        order = np.argsort(key, kind="stable")
        return cls(key[order], np.asarray(judged_grade, dtype=np.int32)[order], n_docs)

    def labels(self, hits: Hits) -> np.ndarray:
        """Each hit's qrels grade; -1 for an unjudged document (a negative)."""
        found = hits.query * self.n_docs + hits.doc
        at = np.searchsorted(self.key, found)
        is_judged = at < len(self.key)
        is_judged[is_judged] = self.key[at[is_judged]] == found[is_judged]
        labels = np.full(len(found), -1, dtype=np.int32)
        labels[is_judged] = self.grade[at[is_judged]]
        return labels

    def positives(self) -> tuple[np.ndarray, np.ndarray]:
        """(query position, corpus row) of every judged positive."""
        rows = self.grade > 0
        return self.key[rows] // self.n_docs, self.key[rows] % self.n_docs

    def table(
        self,
        collection: Collection,
        hits: Hits,
        labels: np.ndarray,
        source: np.ndarray | None,
        names: Sequence[str] = (),
    ) -> Any:
        """The candidates: every hit (label 0 when unjudged) and every judged document no source
        retrieved (rank 0, no score); ``source``: each hit's source mask over ``names``."""
        import pyarrow as pa

        found = hits.query * self.n_docs + hits.doc
        missed = ~np.isin(self.key, found)  # judged but not retrieved: rank 0, no score
        n_missed = int(missed.sum())
        q_index = np.concatenate([hits.query, self.key[missed] // self.n_docs])
        doc_rows = np.concatenate([hits.doc, self.key[missed] % self.n_docs])
        columns = {
            "query_id": pa.array(list(collection.queries), pa.string()).take(pa.array(q_index)),
            "doc_id": _doc_id_array(collection).take(pa.array(doc_rows)),
            "label": pa.array(np.concatenate([np.maximum(labels, 0), self.grade[missed]]), pa.int32()),
            "rank": pa.array(np.concatenate([hits.rank, np.zeros(n_missed, dtype=np.int32)]), pa.int32()),
            "retrieval_score": pa.array(
                np.concatenate([hits.score, np.full(n_missed, np.nan, dtype=np.float32)]), pa.float32()
            ),
        }
        if source is not None:
            columns["source"] = _source_labels(source, names, n_missed)
        return pa.table(columns)


def mine(collection: Collection, k: int, k1: float, b: float, show_progress: bool = False) -> list[Candidate]:
    """The candidates of :func:`mine_table` as Python objects (small collections only)."""
    table = mine_table(collection, k, k1, b, show_progress=show_progress)
    columns = [table.column(name).to_pylist() for name in ("query_id", "doc_id", "label", "rank", "retrieval_score")]
    return [Candidate(q, d, lab, r, float("nan") if s is None else s) for q, d, lab, r, s in zip(*columns, strict=True)]


def _merge(parts: list[Hits]) -> tuple[Hits, np.ndarray]:
    """The union of every source's hits: one row per (query, document), with the rank and score of the
    source that ranked it best (the first given, on a tie), and a bit mask of the sources that found it."""
    source = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)])
    hits = Hits.concat(parts)
    if len(parts) == 1:
        return hits, np.ones(len(hits), dtype=np.int64)
    key = hits.query * (int(hits.doc.max(initial=0)) + 1) + hits.doc
    order = np.lexsort((source, hits.rank, key))
    key, source = key[order], source[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, dtype=np.int64)
    mask = np.bitwise_or.reduceat(np.left_shift(1, source), starts) if len(key) else np.zeros(0, dtype=np.int64)
    return hits.take(order[starts]), mask


def _source_labels(mask: np.ndarray, names: Any, n_missed: int) -> Any:
    """The ``source`` column: each hit's mask as ``+``-joined names, then ``qrels`` for the unretrieved judged."""
    import pyarrow as pa

    values, at = np.unique(mask, return_inverse=True)
    labels = ["+".join(n for i, n in enumerate(names) if int(v) >> i & 1) for v in values.tolist()] + ["qrels"]
    indices = np.concatenate([at.astype(np.int64), np.full(n_missed, len(values), dtype=np.int64)])
    return pa.array(labels, pa.string()).take(pa.array(indices))


def _positive_scores(source: Any, collection: Collection, judged: Judged, hits: Hits, labels: np.ndarray) -> np.ndarray:
    """Per query, the lowest score the source gives one of its positives: retrieved ones as retrieved, the
    others scored by the source when it can (:meth:`~retrodistill.mining.sources.Source.score_pairs`)."""
    from retrodistill.mining.filters import lowest_positive

    q, rows = judged.positives()
    retrieved = np.isin(q * judged.n_docs + rows, hits.query * judged.n_docs + hits.doc)
    query, score = [hits.query], [hits.score]
    positive = [labels > 0]
    if (~retrieved).any():
        extra = source.score_pairs(collection, q[~retrieved], rows[~retrieved])
        if extra is not None:
            query.append(q[~retrieved])
            score.append(extra)
            positive.append(np.ones(len(extra), dtype=bool))
    return lowest_positive(
        np.concatenate(query), np.concatenate(score), np.concatenate(positive), len(collection.queries)
    )


def rules_of(config: MineConfig) -> Any:
    """The false-negative rules of ``config`` (:class:`~retrodistill.mining.filters.Rules`), checked."""
    from retrodistill.mining.filters import Rules

    return Rules(
        rank_min=config.rank_min,
        rank_max=config.rank_max,
        absolute_margin=config.absolute_margin,
        relative_margin=config.relative_margin,
        teacher_max_score=config.teacher_max_score,
        teacher_margin=config.teacher_margin,
    )


def run(config: MineConfig, *, show_progress: bool = True) -> CandidateSet:
    from retrodistill.mining import filters
    from retrodistill.mining.sources import build_source, check_specs

    start = time.perf_counter()
    rules = rules_of(config)
    if config.from_candidates:
        return refilter(config, rules, start)
    if config.teacher_scores or rules.needs_teacher:
        raise ValueError(
            "teacher_scores, teacher_max_score and teacher_margin filter mined candidates: give from_candidates "
            "(the candidates the store was scored from)"
        )
    if config.k < 1:
        raise ValueError(f"k must be at least 1, got {config.k}")
    if config.ties not in TIES:  # before the index is built: that takes minutes at MS MARCO size
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {config.ties!r}")
    specs = check_specs(config.retrievers)  # before the collection loads: a bad spec costs nothing
    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    sources = [build_source(spec, config) for spec in specs]
    judged = Judged.of(collection)
    kept, reports = [], {}
    for source in sources:
        hits = source.search(collection, config.k, show_progress)
        labels = judged.labels(hits)
        positive_score = None
        if rules.needs_positive_score:
            positive_score = _positive_scores(source, collection, judged, hits, labels)
        keep, reports[source.label] = filters.apply(
            rules,
            query=hits.query,
            rank=hits.rank,
            score=hits.score,
            negative=labels < 0,
            positive_score=positive_score,
        )
        kept.append(hits.take(keep))
    merged, mask = _merge(kept)
    table = judged.table(collection, merged, judged.labels(merged), mask, specs)
    manifest: dict[str, Any] = {
        "stage": STAGE,
        "config": to_dict(config),
        "dataset": collection.name,
        "split": collection.split,
        "retrievers": [source.describe() for source in sources],
        "false_negative_control": {"rules": rules.active, **filters.merge_reports(reports)},
        "inputs": dict(collection.fingerprints),
        "unknown_judgments": collection.unknown_judgments,
    }
    if specs == ["bm25s"]:  # the field earlier versions wrote
        manifest["retriever"] = {"name": "bm25s", "k1": config.k1, "b": config.b, "k": config.k, "ties": config.ties}
    manifest["wall_time_s"] = round(time.perf_counter() - start, 3)
    write_candidates(Path(config.out), table, manifest)
    return read_candidates(config.out)


def lineage(candidates: CandidateSet) -> list[str]:
    """The fingerprints of ``candidates`` and of the candidates it was filtered from, nearest first."""
    return [candidates.fingerprint, *candidates.manifest.get("derived_from", [])]


def refilter(config: MineConfig, rules: Any, start: float) -> CandidateSet:
    """``from_candidates``: the rules applied to an existing candidates artifact, no retrieval.

    Its retrieval scores give the margins (a positive no source retrieved has none); the teacher
    rules read ``teacher_scores``, which must have been scored from these candidates (or from one
    they were filtered from). Every label-0 row is a negative here, judged non-relevant ones too.
    The manifest's ``derived_from`` lists the fingerprints of the candidates filtered, so a student
    trains on the result with the parent's teacher-score store.
    """
    from retrodistill.data.store import TeacherStore
    from retrodistill.mining import filters
    from retrodistill.mining.filters import lowest_positive
    from retrodistill.train.examples import query_groups

    assert config.from_candidates is not None
    parent = read_candidates(config.from_candidates)
    if config.teacher_scores and not rules.needs_teacher:
        raise ValueError("teacher_scores is read only by teacher_max_score and teacher_margin: set one of them")
    if not rules.active:
        raise ValueError("from_candidates: no rule is set (rank_min/rank_max, margins, teacher_*): nothing to filter")
    table = parent.table
    _, bounds = query_groups(table.column("query_id"))
    query = np.repeat(np.arange(len(bounds) - 1, dtype=np.int64), np.diff(bounds))
    label = table.column("label").to_numpy()
    score = table.column("retrieval_score").to_numpy(zero_copy_only=False).astype(np.float32)
    teacher = teacher_positive = None
    store_input: dict[str, str] = {}
    if rules.needs_teacher:
        if not config.teacher_scores:
            raise ValueError("teacher_max_score / teacher_margin need teacher_scores (the store of from_candidates)")
        store = TeacherStore.open(config.teacher_scores)
        if store.inputs.get("candidates") not in lineage(parent):
            raise ValueError(
                f"teacher-score store {config.teacher_scores} was not scored from candidates {config.from_candidates}"
            )
        teacher = store.scores_for(parent)
        teacher_positive = lowest_positive(query, teacher, label > 0, len(bounds) - 1)
        store_input = {"teacher_scores": store.fingerprint}
    positive_score = None
    if rules.needs_positive_score:
        positive_score = lowest_positive(query, score, label > 0, len(bounds) - 1)
    keep, report = filters.apply(
        rules,
        query=query,
        rank=table.column("rank").to_numpy(),
        score=score,
        negative=label <= 0,
        positive_score=positive_score,
        teacher=teacher,
        teacher_positive=teacher_positive,
    )
    manifest = {
        "stage": STAGE,
        "config": to_dict(config),
        "dataset": parent.manifest.get("dataset"),
        "split": parent.manifest.get("split"),
        "retrievers": parent.manifest.get("retrievers", [parent.manifest.get("retriever")]),
        "false_negative_control": {
            "rules": rules.active,
            **report,
            "before": parent.manifest.get("false_negative_control"),
        },
        "derived_from": lineage(parent),
        "inputs": {**parent.manifest.get("inputs", {}), "candidates": parent.fingerprint, **store_input},
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
    write_candidates(Path(config.out), table.filter(pa_mask(keep)), manifest)
    return read_candidates(config.out)


def pa_mask(keep: np.ndarray) -> Any:
    import pyarrow as pa

    return pa.array(keep, pa.bool_())
