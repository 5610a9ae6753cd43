"""Dense retrieval over a collection: encode the corpus, index it, search every query.

The recipe, the one BEIR and MTEB follow for a bi-encoder:

1. documents are ``title + " " + text`` (:meth:`Document.joined`), encoded with the model's
   ``encode_document`` (its ``document``/``passage``/``corpus`` prompt, if it defines one), shard by
   shard, longest first within a shard, optionally through the corpus-embedding cache
   (:mod:`retrodistill.data.embeddings`) so that a later run, or dense mining, reuses them;
2. queries are encoded with ``encode_query`` (its ``query`` prompt, if any);
3. the model decides its own normalisation (a ``Normalize`` module makes inner product cosine;
   nothing is normalised here), and the index returns the top ``k`` by inner product: exactly
   (``faiss-flat-ip``, the default) or approximately (``faiss-factory``: IVF, PQ, HNSW …).

With ``index_dir``, the index is kept on disk (:meth:`~retrodistill.index.faiss_factory.FaissFactory.save`)
with the model identity and corpus fingerprint it was built for: a later search with the same model,
corpus and index loads it and encodes only the queries; one built for another model or corpus is
refused.

The result is a run: query id → document id → score, each query's documents best first.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrodistill.data.embeddings import DEFAULT_SHARD_SIZE, EmbeddingCache, encoder_settings
from retrodistill.data.encoding import encode_texts, encoding_pool, iter_corpus_embeddings
from retrodistill.evaluate.metrics import Run
from retrodistill.index import faiss_factory, faiss_flat  # noqa: F401  (register the FAISS backends; faiss loads lazily)
from retrodistill.index.base import INDEXES, DenseIndex
from retrodistill.registry import parameters

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from retrodistill.data.collections import Collection

logger = logging.getLogger(__name__)


def load_model(
    name_or_path: str | os.PathLike[str], device: str | None = None, cache_folder: str | None = None
) -> SentenceTransformer:
    """Load a sentence-transformers model by hub id or local path; remote code is never run.

    On CPU in fp32, its linear layers run through oneDNN (:mod:`retrodistill.onednn_linear`), which
    leaves the embeddings unchanged to float rounding and is about twice as fast on AMD CPUs. The
    kernel in effect is kept as ``model.retrodistill_linear_backend`` (``"onednn"`` or ``"torch"``), so
    the artifacts made with the model can say what produced them
    (:func:`~retrodistill.data.embeddings.encoder_runtime`).

    Args:
        name_or_path: a Hugging Face hub id (resolved from the local cache when
            ``HF_HUB_OFFLINE=1``) or a model directory.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` …; ``None`` lets sentence-transformers pick.
        cache_folder: the Hugging Face hub cache to use (``$HF_HOME/hub``); ``None`` for the default.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from retrodistill.onednn_linear import use_onednn_linear
    from retrodistill.teachers.model_kind import model_load_error, require_bi_encoder

    require_bi_encoder(str(name_or_path))  # a cross-encoder would be silently mean-pooled
    try:
        model = SentenceTransformer(
            str(name_or_path),
            device=device,
            cache_folder=cache_folder,
            trust_remote_code=False,
            model_kwargs={"use_safetensors": True},
        )
    except OSError as err:
        raise model_load_error(str(name_or_path), err) from None
    dtype = "fp32" if all(p.dtype == torch.float32 for p in model.parameters()) else "other"
    # setattr: nn.Module's type stubs take only tensors and modules as attributes.
    setattr(model, "retrodistill_linear_backend", use_onednn_linear(model, "auto", model.device.type, dtype))  # noqa: B010
    return model


def _encode(model: Any, texts: Sequence[str], kind: str, batch_size: int, show_progress: bool) -> np.ndarray:
    """Encode with ``encode_query`` / ``encode_document`` when the model has them, else ``encode``."""
    return encode_texts(model, texts, kind, batch_size, show_progress)


def open_embedding_cache(
    model: Any,
    collection: Collection,
    root: str | os.PathLike[str],
    model_identity: Mapping[str, Any],
    *,
    dtype: str = "float32",
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> EmbeddingCache | None:
    """The corpus-embedding cache of ``model`` on ``collection.corpus`` under ``root``.

    The key joins ``model_identity`` (e.g. :func:`retrodistill.evaluate.runs.model_identity`: id and
    weights' revision) with the loaded model's :func:`~retrodistill.data.embeddings.encoder_settings`
    and the corpus fingerprint. ``None`` (with a warning) when the collection has no corpus fingerprint.
    """
    fingerprint = collection.fingerprints.get("corpus")
    if fingerprint is None:
        logger.warning("%s has no corpus fingerprint: its embeddings are not cached", collection.name)
        return None
    encoder = encoder_identity(model, model_identity)
    return EmbeddingCache.open(root, encoder, fingerprint, len(collection.corpus), dtype=dtype, shard_size=shard_size)


def encoder_identity(model: Any, model_identity: Mapping[str, Any]) -> dict[str, Any]:
    """What made a corpus's vectors: ``model_identity`` (id, revision) and the loaded model's settings.

    The corpus-embedding cache is keyed by it and a saved index records it.
    """
    return {**model_identity, "settings": encoder_settings(model)}


def _embedding_dim(model: Any) -> int | None:
    """The model's output dimension, when it says (sentence-transformers does)."""
    dimension = getattr(model, "get_embedding_dimension", None) or getattr(
        model, "get_sentence_embedding_dimension", None
    )
    value = dimension() if callable(dimension) else None
    return int(value) if isinstance(value, int) else None


def _new_index(name: str, params: Mapping[str, Any], model: Any) -> DenseIndex:
    """Build the backend; one that takes ``dim`` gets the model's, so a bad setting fails before any encoding."""
    params = dict(params)
    if "dim" not in params and "dim" in {p.name for p in parameters(INDEXES.get(name))}:
        dim = _embedding_dim(model)
        if dim is not None:
            params["dim"] = dim
    index: DenseIndex = INDEXES.build(name, params)
    return index


def savable_index(name: str) -> Any:
    """The index backend ``name`` if it can be saved and loaded (``save`` / ``load``), else a ``ValueError``."""
    backend = INDEXES.get(name)
    if not callable(getattr(backend, "load", None)) or not callable(getattr(backend, "save", None)):
        raise ValueError(
            f"--index-dir saves faiss-factory indexes; {name} cannot be saved (for exact search use "
            "--index faiss-factory:Flat)"
        )
    return backend


def _saved_index(
    name: str,
    params: Mapping[str, Any],
    index_dir: Path,
    model: Any,
    model_identity: Mapping[str, Any] | None,
    collection: Collection,
) -> tuple[DenseIndex | None, dict[str, Any]]:
    """The index saved in ``index_dir`` (or ``None`` when there is none yet) and what it must be built for.

    Raises:
        ValueError: the backend cannot be saved, the model or corpus cannot be identified, the
            folder holds something else, or the saved index was built for another model, corpus or
            factory (:meth:`~retrodistill.index.faiss_factory.FaissFactory.load`).
    """
    backend = savable_index(name)
    fingerprint = collection.fingerprints.get("corpus")
    if fingerprint is None or model_identity is None:
        missing = "a corpus fingerprint" if fingerprint is None else "the model's identity"
        raise ValueError(f"--index-dir {index_dir}: cannot tell which index fits {collection.name} without {missing}")
    built_for = {"encoder": encoder_identity(model, model_identity), "corpus": fingerprint}
    if not (index_dir / "manifest.json").is_file():
        if index_dir.exists() and (not index_dir.is_dir() or any(index_dir.iterdir())):
            raise ValueError(f"--index-dir {index_dir} exists and holds no saved index: remove it or choose another")
        return None, built_for
    loaded: DenseIndex = backend.load(index_dir, params, built_for)
    return loaded, built_for


def _doc_ids(corpus: Mapping[str, Any]) -> Callable[[np.ndarray], list[str]]:
    """positions (1-D int64) → document ids, through an Arrow corpus's ``id_at`` when it has one.

    That way no list of every id is built for a memory-mapped corpus; a dict corpus is listed once.
    """
    id_at = getattr(corpus, "id_at", None)
    if callable(id_at):
        return lambda positions: list(id_at(positions))
    listed = list(corpus)
    return lambda positions: [listed[p] for p in positions.tolist()]


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
    corpus_chunk_size: int = DEFAULT_SHARD_SIZE,
    embedding_cache: EmbeddingCache | None = None,
    query_chunk_size: int = 16_384,
    devices: Sequence[str] | None = None,
    index_dir: str | os.PathLike[str] | None = None,
    model_identity: Mapping[str, Any] | None = None,
) -> Run:
    """Retrieve the top ``k`` documents of ``collection.corpus`` for each of ``collection.queries``.

    The corpus is encoded (or read from ``embedding_cache``) shard by shard and each shard is added
    to the index as it comes, so besides the index only one shard's embeddings are held; queries
    are encoded and searched ``query_chunk_size`` at a time.

    Args:
        model: a sentence-transformers model (anything with ``encode``; ``encode_query`` and
            ``encode_document`` are used when present).
        collection: the corpus and the queries to answer.
        k: documents per query (fewer only when the corpus is smaller).
        batch_size: texts per forward pass.
        index: an :data:`~retrodistill.index.base.INDEXES` name.
        show_progress: one progress bar over the corpus documents encoded (:mod:`retrodistill.progress`).
        index_params: keyword arguments for the index backend (e.g. ``{"use_gpu": False}``,
            ``{"factory": "HNSW32,Flat", "efSearch": 128}``); a backend that takes ``dim`` gets the model's.
        ignore_identical_ids: BEIR's rule for corpora where queries are also documents
            (ArguAna, Quora): drop a retrieved document whose id equals the query id. The top
            ``k + 1`` are searched so that ``k`` remain.
        corpus_chunk_size: documents encoded and added to the index at a time (the shard size)
            when there is no cache; a cache uses its own.
        embedding_cache: where corpus embeddings are read from and written to
            (:func:`open_embedding_cache`); ``None`` encodes without keeping them.
        query_chunk_size: queries encoded and searched at a time.
        devices: encode the corpus on these devices with a multi-process pool (e.g.
            ``["cuda:0", "cuda:1"]``); ``None`` uses every GPU when the model is on CUDA and
            several are visible (:func:`~retrodistill.data.encoding.encoding_pool`).
        index_dir: a folder for the index (a backend with ``save`` / ``load``: ``faiss-factory``).
            Holding one saved for this model (``model_identity`` and its settings), corpus
            (fingerprint) and factory, it is loaded and the corpus is neither encoded nor read; absent,
            the index is built and saved there. Any other content is refused.
        model_identity: what identifies the model's weights (e.g.
            :func:`retrodistill.evaluate.runs.model_identity`); needed with ``index_dir``.

    Returns:
        query id → document id → score (a Python float), best first. An approximate index may find
        fewer than ``k`` documents for a query (its padding is dropped).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if query_chunk_size < 1:
        raise ValueError(f"query_chunk_size must be at least 1, got {query_chunk_size}")
    if not collection.queries:
        raise ValueError(f"{collection.name} ({collection.split}) has no queries to search")
    if not collection.corpus:
        raise ValueError(f"{collection.name} has an empty corpus")
    dense = corpus_index(
        model,
        collection,
        index,
        index_params,
        batch_size=batch_size,
        show_progress=show_progress,
        corpus_chunk_size=corpus_chunk_size,
        embedding_cache=embedding_cache,
        devices=devices,
        index_dir=index_dir,
        model_identity=model_identity,
    )
    doc_ids = _doc_ids(collection.corpus)
    query_ids = list(collection.queries)
    depth = k + 1 if ignore_identical_ids else k
    run: Run = {}
    for start in range(0, len(query_ids), query_chunk_size):
        chunk = query_ids[start : start + query_chunk_size]
        # No third-party bar for queries: a fraction of the corpus's work, and one bar per loop is ours.
        embeddings = _encode(model, [collection.queries[qid] for qid in chunk], "query", batch_size, False)
        scores, positions = dense.search(embeddings, depth)  # (m, k')
        found = positions >= 0  # an approximate index pads a row it cannot fill with id -1, at its end
        hits = doc_ids(np.where(found, positions, 0).ravel())
        width = positions.shape[1]
        for row, (qid, row_scores) in enumerate(zip(chunk, scores.tolist(), strict=True)):
            docs: dict[str, float] = {}
            row_hits = hits[row * width : (row + 1) * width]
            for score, doc_id, real in zip(row_scores, row_hits, found[row].tolist(), strict=True):
                if not real or (ignore_identical_ids and doc_id == qid):
                    continue
                docs[doc_id] = score
                if len(docs) == k:
                    break
            run[qid] = docs
    return run


def corpus_index(
    model: Any,
    collection: Collection,
    index: str = "faiss-flat-ip",
    index_params: Mapping[str, Any] | None = None,
    *,
    batch_size: int = 64,
    show_progress: bool = True,
    corpus_chunk_size: int = DEFAULT_SHARD_SIZE,
    embedding_cache: EmbeddingCache | None = None,
    devices: Sequence[str] | None = None,
    index_dir: str | os.PathLike[str] | None = None,
    model_identity: Mapping[str, Any] | None = None,
) -> DenseIndex:
    """The dense index of ``collection.corpus`` (row ``i`` = corpus row ``i``): loaded from ``index_dir``
    when one saved there fits, else built shard by shard (see :func:`encode_and_search`, whose
    arguments these are) and saved there when ``index_dir`` is given."""
    params = dict(index_params or {})
    saved, built_for = None, None
    if index_dir is not None:
        saved, built_for = _saved_index(index, params, Path(index_dir), model, model_identity, collection)
    if saved is not None:
        dense = saved
        if len(dense) != len(collection.corpus):  # the fingerprint matched: only a damaged folder gets here
            raise ValueError(
                f"--index-dir {index_dir} holds {len(dense):,} vectors for {len(collection.corpus):,} documents"
            )
        logger.info("%s: loaded the saved index (%d vectors); encoding queries only", index_dir, len(dense))
    else:
        dense = _new_index(index, params, model)  # before encoding: a bad index setting costs nothing
        if embedding_cache is not None and embedding_cache.is_complete():
            pool_context: Any = contextlib.nullcontext()  # nothing to encode: start no worker processes
        else:
            pool_context = encoding_pool(model, devices)
        with pool_context as pool:
            for shard in iter_corpus_embeddings(
                model,
                collection.corpus,
                embedding_cache,
                shard_size=corpus_chunk_size,
                batch_size=batch_size,
                show_progress=show_progress,
                pool=pool,
            ):
                dense.add(shard)  # (rows, d); the index copies it, the shard (or its memory map) is dropped
                del shard
        if index_dir is not None:
            # _saved_index checked that the backend has save().
            dense.save(index_dir, built_for)  # type: ignore[attr-defined]
            logger.info("%s: saved the index (%d vectors)", index_dir, len(dense))

    return dense
