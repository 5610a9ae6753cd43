"""The ``mine-negatives`` stage: BM25 top-k per query, judged documents kept apart from negatives.

Reads a collection, retrieves ``k`` documents per query of the split with BM25, and writes a
candidates artifact (see :mod:`retrodistill.data.candidates`): every judged document of the query
with its qrels grade as ``label``, and every retrieved, unjudged document as a negative (label 0).
Judged documents with grade 0 are kept as they are judged non-relevant, never mined as "unknown".

At MS MARCO's size (8.8M passages) the recipe streams: the corpus is tokenised a chunk at a time
into a bm25s index saved under the cache (``$RETRODISTILL_CACHE/bm25/KEY``, keyed by the corpus
fingerprint and the BM25 parameters, so a later run memory-maps it instead of rebuilding), queries are
retrieved a chunk at a time, and candidates are numpy arrays joined to the qrels with ``searchsorted``
and handed to :func:`~retrodistill.data.candidates.write_candidates` as one Arrow table.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.config import MineConfig, to_dict
from retrodistill.data.candidates import Candidate, CandidateSet, read_candidates, write_candidates
from retrodistill.data.collections import Collection
from retrodistill.data.download import load_dataset
from retrodistill.index.bm25 import TIES
from retrodistill.progress import progress_bar

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
    """Candidates of every query of the collection's split as a pyarrow Table (any row order).

    ``ties`` orders documents with equal BM25 scores (:class:`~retrodistill.index.bm25.BM25Retriever`):
    ``"bm25s"`` (the default) keeps the candidates, and so the fingerprints, of earlier versions;
    ``"row"`` is ~10× faster per query on large corpora.
    """
    import pyarrow as pa

    retriever = bm25_retriever(collection, k1, b, ties=ties, show_progress=show_progress)
    n_docs = len(collection.corpus)
    query_ids = list(collection.queries)
    texts = [collection.queries[q] for q in query_ids]

    # Judged (query, document) pairs as sorted integer keys query_index * n_docs + doc_row.
    judged_q, judged_docs, judged_grade = [], [], []
    for qi, qid in enumerate(query_ids):
        for doc_id, grade in collection.qrels.get(qid, {}).items():
            judged_q.append(qi)
            judged_docs.append(doc_id)
            judged_grade.append(grade)
    judged_key = np.asarray(judged_q, dtype=np.int64) * n_docs + _doc_rows(collection, judged_docs)
    order = np.argsort(judged_key, kind="stable")
    judged_key, grades = judged_key[order], np.asarray(judged_grade, dtype=np.int32)[order]

    found_q, found_rows, found_rank, found_score = [], [], [], []
    started = time.perf_counter()
    with progress_bar(len(query_ids), "BM25 retrieval", "queries", show_progress) as advance:
        for start in range(0, len(query_ids), QUERY_CHUNK):
            rows, scores = retriever.search_rows(texts[start : start + QUERY_CHUNK], k, advance=advance)
            hit = scores > 0  # bm25s pads a row with documents scoring 0: they were not retrieved
            q_index, column = np.nonzero(hit)
            found_q.append(q_index.astype(np.int64) + start)
            found_rows.append(rows[hit])
            found_rank.append(column.astype(np.int32) + 1)
            found_score.append(scores[hit])
    if show_progress:
        took = time.perf_counter() - started
        print(f"BM25 retrieval: {len(query_ids):,} of {len(query_ids):,} queries in {took:.1f} s", flush=True)
    q_all = np.concatenate(found_q) if found_q else np.zeros(0, dtype=np.int64)
    rows_all = np.concatenate(found_rows) if found_rows else np.zeros(0, dtype=np.int64)
    rank_all = np.concatenate(found_rank) if found_rank else np.zeros(0, dtype=np.int32)
    score_all = np.concatenate(found_score) if found_score else np.zeros(0, dtype=np.float32)

    found_key = q_all * n_docs + rows_all
    at = np.searchsorted(judged_key, found_key)
    is_judged = at < len(judged_key)
    is_judged[is_judged] = judged_key[at[is_judged]] == found_key[is_judged]
    labels = np.zeros(len(found_key), dtype=np.int32)
    labels[is_judged] = grades[at[is_judged]]
    missed = ~np.isin(judged_key, found_key)  # judged but not retrieved: rank 0, no score

    q_index = np.concatenate([q_all, judged_key[missed] // n_docs])
    doc_rows = np.concatenate([rows_all, judged_key[missed] % n_docs])
    return pa.table(
        {
            "query_id": pa.array(query_ids, pa.string()).take(pa.array(q_index)),
            "doc_id": _doc_id_array(collection).take(pa.array(doc_rows)),
            "label": pa.array(np.concatenate([labels, grades[missed]]), pa.int32()),
            "rank": pa.array(np.concatenate([rank_all, np.zeros(int(missed.sum()), dtype=np.int32)]), pa.int32()),
            "retrieval_score": pa.array(
                np.concatenate([score_all, np.full(int(missed.sum()), np.nan, dtype=np.float32)]), pa.float32()
            ),
        }
    )


def mine(collection: Collection, k: int, k1: float, b: float, show_progress: bool = False) -> list[Candidate]:
    """The candidates of :func:`mine_table` as Python objects (small collections only)."""
    table = mine_table(collection, k, k1, b, show_progress=show_progress)
    columns = [table.column(name).to_pylist() for name in ("query_id", "doc_id", "label", "rank", "retrieval_score")]
    return [Candidate(q, d, lab, r, float("nan") if s is None else s) for q, d, lab, r, s in zip(*columns, strict=True)]


def run(config: MineConfig, *, show_progress: bool = True) -> CandidateSet:
    start = time.perf_counter()
    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    if config.k < 1:
        raise ValueError(f"k must be at least 1, got {config.k}")
    if config.ties not in TIES:  # before the index is built: that takes minutes at MS MARCO size
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {config.ties!r}")
    table = mine_table(collection, config.k, config.k1, config.b, ties=config.ties, show_progress=show_progress)
    write_candidates(
        Path(config.out),
        table,
        {
            "stage": STAGE,
            "config": to_dict(config),
            "dataset": collection.name,
            "split": collection.split,
            "retriever": {"name": "bm25s", "k1": config.k1, "b": config.b, "k": config.k, "ties": config.ties},
            "inputs": dict(collection.fingerprints),
            "unknown_judgments": collection.unknown_judgments,
            "wall_time_s": round(time.perf_counter() - start, 3),
        },
    )
    return read_candidates(config.out)
