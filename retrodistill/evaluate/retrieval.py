"""Dense retrieval over a collection: encode the corpus, index it, search every query.

The recipe, the one BEIR and MTEB follow for a bi-encoder:

1. documents are ``title + " " + text`` (:meth:`Document.joined`), encoded with the model's
   ``encode_document`` (its ``document``/``passage``/``corpus`` prompt, if it defines one);
2. queries are encoded with ``encode_query`` (its ``query`` prompt, if any);
3. the model decides its own normalisation (a ``Normalize`` module makes inner product cosine;
   nothing is normalised here), and the index returns the top ``k`` by inner product.

The result is a run: query id → document id → score, each query's documents best first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from retrodistill.evaluate.metrics import Run
from retrodistill.index import faiss_flat  # noqa: F401  (registers the FAISS backends; faiss loads lazily)
from retrodistill.index.base import INDEXES, DenseIndex

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from retrodistill.data.collections import Collection


def load_model(
    name_or_path: str | os.PathLike[str], device: str | None = None, cache_folder: str | None = None
) -> SentenceTransformer:
    """Load a sentence-transformers model by hub id or local path; remote code is never run.

    On CPU in fp32, its linear layers run through oneDNN (:mod:`retrodistill.onednn_linear`), which
    leaves the embeddings unchanged to float rounding and is about twice as fast on AMD CPUs.

    Args:
        name_or_path: a Hugging Face hub id (resolved from the local cache when
            ``HF_HUB_OFFLINE=1``) or a model directory.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` …; ``None`` lets sentence-transformers pick.
        cache_folder: the Hugging Face hub cache to use (``$HF_HOME/hub``); ``None`` for the default.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from retrodistill.onednn_linear import use_onednn_linear

    model = SentenceTransformer(str(name_or_path), device=device, cache_folder=cache_folder, trust_remote_code=False)
    dtype = "fp32" if all(p.dtype == torch.float32 for p in model.parameters()) else "other"
    use_onednn_linear(model, "auto", model.device.type, dtype)
    return model


def _encode(model: Any, texts: Sequence[str], kind: str, batch_size: int, show_progress: bool) -> np.ndarray:
    """Encode with ``encode_query`` / ``encode_document`` when the model has them, else ``encode``."""
    method = getattr(model, f"encode_{kind}", None) or model.encode
    return method(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=False,
        show_progress_bar=show_progress,
    )


def encode_and_search(
    model: SentenceTransformer,
    collection: Collection,
    k: int = 1000,
    batch_size: int = 64,
    index: str = "faiss-flat-ip",
    show_progress: bool = True,
    *,
    index_params: Mapping[str, Any] | None = None,
    ignore_identical_ids: bool = False,
    corpus_chunk_size: int = 100_000,
) -> Run:
    """Retrieve the top ``k`` documents of ``collection.corpus`` for each of ``collection.queries``.

    Args:
        model: a sentence-transformers model (anything with ``encode``; ``encode_query`` and
            ``encode_document`` are used when present).
        collection: the corpus and the queries to answer.
        k: documents per query (fewer only when the corpus is smaller).
        batch_size: texts per forward pass.
        index: an :data:`~retrodistill.index.base.INDEXES` name.
        show_progress: show sentence-transformers' progress bars.
        index_params: keyword arguments for the index backend (e.g. ``{"use_gpu": False}``).
        ignore_identical_ids: BEIR's rule for corpora where queries are also documents
            (ArguAna, Quora): drop a retrieved document whose id equals the query id. The top
            ``k + 1`` are searched so that ``k`` remain.
        corpus_chunk_size: documents encoded and added to the index at a time, which bounds the
            memory held besides the index (one embedding matrix per chunk).

    Returns:
        query id → document id → score (a Python float), best first.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not collection.queries:
        raise ValueError(f"{collection.name} ({collection.split}) has no queries to search")
    if not collection.corpus:
        raise ValueError(f"{collection.name} has an empty corpus")
    dense: DenseIndex = INDEXES.build(index, dict(index_params or {}))

    doc_ids = list(collection.corpus)
    for start in range(0, len(doc_ids), corpus_chunk_size):
        chunk = doc_ids[start : start + corpus_chunk_size]
        texts = [collection.corpus[doc_id].joined() for doc_id in chunk]
        dense.add(_encode(model, texts, "document", batch_size, show_progress))  # (chunk, d)

    query_ids = list(collection.queries)
    query_embeddings = _encode(
        model, [collection.queries[qid] for qid in query_ids], "query", batch_size, show_progress
    )  # (m, d)
    scores, positions = dense.search(query_embeddings, k + 1 if ignore_identical_ids else k)  # (m, k')

    run: Run = {}
    for qid, row_scores, row_positions in zip(query_ids, scores, positions, strict=True):
        docs: dict[str, float] = {}
        for score, position in zip(row_scores.tolist(), row_positions.tolist(), strict=True):
            doc_id = doc_ids[position]
            if ignore_identical_ids and doc_id == qid:
                continue
            docs[doc_id] = score
            if len(docs) == k:
                break
        run[qid] = docs
    return run
