"""The ``mine-negatives`` stage: BM25 top-k per query, judged documents kept apart from negatives.

Reads a collection, retrieves ``k`` documents per query of the split with BM25, and writes a
candidates artifact (see :mod:`retrodistill.data.candidates`): every judged document of the query
with its qrels grade as ``label``, and every retrieved, unjudged document as a negative (label 0).
Judged documents with grade 0 are kept as they are judged non-relevant, never mined as "unknown".
"""

from __future__ import annotations

import time
from pathlib import Path

from retrodistill.config import MineConfig, to_dict
from retrodistill.data.candidates import Candidate, CandidateSet, read_candidates, write_candidates
from retrodistill.data.collections import Collection
from retrodistill.data.download import load_dataset

STAGE = "mine-negatives"


def mine(collection: Collection, k: int, k1: float, b: float, show_progress: bool = False) -> list[Candidate]:
    from retrodistill.index.bm25 import BM25Retriever

    retriever = BM25Retriever(k1=k1, b=b)
    doc_ids = list(collection.corpus)
    retriever.index(doc_ids, [collection.doc_text(d) for d in doc_ids], show_progress=show_progress)
    query_ids = list(collection.queries)
    hits = retriever.search([collection.queries[q] for q in query_ids], k, show_progress=show_progress)
    rows: list[Candidate] = []
    for qid, ranked in zip(query_ids, hits, strict=True):
        judged = collection.qrels.get(qid, {})
        retrieved = {}
        for rank, (doc_id, score) in enumerate(ranked, start=1):
            retrieved[doc_id] = (rank, score)
            rows.append(Candidate(qid, doc_id, judged.get(doc_id, 0), rank, score))
        for doc_id, grade in judged.items():
            if doc_id not in retrieved:
                rows.append(Candidate(qid, doc_id, grade, 0, float("nan")))
    return rows


def run(config: MineConfig, *, show_progress: bool = True) -> CandidateSet:
    start = time.perf_counter()
    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    if config.k < 1:
        raise ValueError(f"k must be at least 1, got {config.k}")
    rows = mine(collection, config.k, config.k1, config.b, show_progress=show_progress)
    write_candidates(
        Path(config.out),
        rows,
        {
            "stage": STAGE,
            "config": to_dict(config),
            "dataset": collection.name,
            "split": collection.split,
            "retriever": {"name": "bm25s", "k1": config.k1, "b": config.b, "k": config.k},
            "inputs": dict(collection.fingerprints),
            "unknown_judgments": collection.unknown_judgments,
            "wall_time_s": round(time.perf_counter() - start, 3),
        },
    )
    return read_candidates(config.out)
