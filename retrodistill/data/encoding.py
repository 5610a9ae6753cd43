"""Encoding a corpus with a sentence-transformers model: length-sorted, shard by shard, into the cache.

:func:`iter_corpus_embeddings` (evaluation) and :func:`encode_corpus` (the cache alone, any launcher
rank) walk a corpus in the shards of an :class:`~retrodistill.data.embeddings.EmbeddingCache`:
shards already done are read memory-mapped, the others encoded (:func:`encode_length_sorted`) and
written. One progress bar counts the documents to encode (:mod:`retrodistill.progress`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from retrodistill.data.embeddings import DEFAULT_SHARD_SIZE, EmbeddingCache, encoder_runtime
from retrodistill.progress import progress_bar

if TYPE_CHECKING:
    import numpy as np

    from retrodistill.data.collections import Document

logger = logging.getLogger(__name__)


def encode_texts(
    model: Any,
    texts: Sequence[str],
    kind: str,
    batch_size: int,
    show_progress: bool = False,
    pool: Any = None,
) -> np.ndarray:
    """Encode with ``encode_query`` / ``encode_document`` when the model has them, else ``encode``.

    Nothing is normalised here: the model decides (a ``Normalize`` module makes inner product cosine).
    ``pool`` is a sentence-transformers multi-process pool (``start_multi_process_pool``).
    """
    method = getattr(model, f"encode_{kind}", None) or model.encode
    extra = {} if pool is None else {"pool": pool}
    embeddings: np.ndarray = method(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=False,
        show_progress_bar=show_progress,
        **extra,
    )
    return embeddings


#: With a progress callback, texts are encoded this many batches at a time (the bar moves per slice).
PROGRESS_BATCHES = 32


def encode_length_sorted(
    model: Any,
    texts: Sequence[str],
    batch_size: int,
    show_progress: bool = False,
    pool: Any = None,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Document embeddings ``(len(texts), d)`` float32 in ``texts`` order, encoded longest first.

    Sorting here (not only inside sentence-transformers) keeps the chunks a multi-process pool
    hands each device similar in length, and helps encoders that do not sort. ``advance(n)``
    (from :func:`retrodistill.progress.progress_bar`) is told of every :data:`PROGRESS_BATCHES`
    batches encoded: the sorted texts go to the model in slices of that many batches, so the bars
    of sentence-transformers stay off; a pool gets all texts at once and reports when done.
    """
    import numpy as np

    order = np.argsort(-np.fromiter((len(t) for t in texts), np.int64, len(texts)), kind="stable")
    ordered = [texts[i] for i in order]
    if advance is None or pool is not None:
        encoded = encode_texts(model, ordered, "document", batch_size, show_progress and advance is None, pool)
        if advance is not None:
            advance(len(ordered))
    else:
        step = batch_size * PROGRESS_BATCHES
        parts = []
        for start in range(0, len(ordered), step):
            parts.append(encode_texts(model, ordered[start : start + step], "document", batch_size))
            advance(len(parts[-1]))
        encoded = np.concatenate(parts) if parts else encode_texts(model, ordered, "document", batch_size)
    out = np.empty((len(texts), encoded.shape[1]), np.float32)
    out[order] = encoded
    return out


def _texts(corpus: Mapping[str, Document], ids: list[str] | None, start: int, stop: int) -> list[str]:
    """Documents ``[start, stop)`` as ``title + " " + text``, from an Arrow corpus's ``texts`` if it has one."""
    texts = getattr(corpus, "texts", None)
    if callable(texts):
        import numpy as np

        return list(texts(np.arange(start, stop, dtype=np.int64)))
    assert ids is not None  # the caller lists ids of corpora without ``texts``
    return [corpus[doc_id].joined() for doc_id in ids[start:stop]]


@contextlib.contextmanager
def encoding_pool(model: Any, devices: Sequence[str] | None = None) -> Iterator[Any]:
    """A sentence-transformers multi-process pool over several devices, or ``None`` for one device.

    Args:
        model: the encoder; a pool needs ``start_multi_process_pool``.
        devices: e.g. ``["cuda:0", "cuda:1"]``; ``None`` uses every CUDA device when the model sits
            on CUDA and more than one is visible. One device (or none) means no pool.
    """
    if devices is None and getattr(getattr(model, "device", None), "type", None) == "cuda":
        import torch

        if torch.cuda.device_count() > 1:
            devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if not devices or len(devices) < 2 or not hasattr(model, "start_multi_process_pool"):
        yield None
        return
    pool = model.start_multi_process_pool(list(devices))
    logger.info("encoding on %d devices: %s", len(devices), ", ".join(devices))
    try:
        yield pool
    finally:
        model.stop_multi_process_pool(pool)


def iter_corpus_embeddings(
    model: Any,
    corpus: Mapping[str, Document],
    cache: EmbeddingCache | None = None,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = 64,
    show_progress: bool = False,
    pool: Any = None,
) -> Iterator[np.ndarray]:
    """The corpus's document embeddings, shard by shard in corpus order, float32 ``(rows, d)``.

    With a ``cache``, shards already done are read memory-mapped and the others are encoded and
    written as they come; without one, each shard is encoded and only held until the caller moves on.

    Args:
        model: the encoder (see :func:`encode_texts`).
        corpus: the documents, in order; an Arrow corpus's ``texts(rows)`` is used when present, so
            no list of every text is ever built.
        cache: where shards are read from and written to; its ``shard_size`` wins.
        shard_size: documents per shard without a cache.
        batch_size: texts per forward pass.
        show_progress: one progress bar over the documents to encode (:mod:`retrodistill.progress`).
        pool: a multi-process pool (:func:`encoding_pool`).
    """
    import numpy as np

    documents = len(corpus)
    if cache is not None and cache.documents != documents:
        raise ValueError(f"the corpus has {documents:,} documents; {cache.path} was made for {cache.documents:,}")
    size = cache.shard_size if cache is not None else shard_size
    if size < 1:
        raise ValueError(f"shard_size must be at least 1, got {size}")
    ids = None if callable(getattr(corpus, "texts", None)) else list(corpus)
    shards = -(-documents // size)
    to_encode = sum(
        min(size, documents - shard * size) for shard in range(shards) if cache is None or not cache.is_done(shard)
    )
    with progress_bar(to_encode, f"encoding {to_encode:,} documents", "documents", show_progress) as advance:
        for shard in range(shards):
            start, stop = shard * size, min((shard + 1) * size, documents)
            if cache is not None and cache.is_done(shard):
                stored = cache.read_shard(shard)
                yield stored if stored.dtype == np.float32 else stored.astype(np.float32)
                del stored  # unmap it before the next shard: only one shard is held at a time
                continue
            embeddings, seconds = _encode_shard(model, corpus, ids, start, stop, batch_size, advance, pool)
            logger.info("shard %d/%d: %d documents encoded in %.1f s", shard + 1, shards, stop - start, seconds)
            if cache is not None:
                cache.write_shard(shard, embeddings, seconds, encoder_runtime(model))
                if cache.dtype != "float32":  # hand out what a later read will give, so runs do not depend on it
                    embeddings = embeddings.astype(cache.dtype).astype(np.float32)
            yield embeddings
            del embeddings


def _encode_shard(
    model: Any,
    corpus: Mapping[str, Document],
    ids: list[str] | None,
    start: int,
    stop: int,
    batch_size: int,
    advance: Callable[[int], None],
    pool: Any,
) -> tuple[np.ndarray, float]:
    """Documents ``[start, stop)`` encoded (float32, corpus order) and the seconds it took."""
    began = time.perf_counter()
    texts = _texts(corpus, ids, start, stop)
    embeddings = encode_length_sorted(model, texts, batch_size, pool=pool, advance=advance)
    return embeddings, time.perf_counter() - began


def encode_corpus(
    model: Any,
    corpus: Mapping[str, Document],
    cache: EmbeddingCache,
    *,
    batch_size: int = 64,
    show_progress: bool = False,
    pool: Any = None,
    rank: int = 0,
    world_size: int = 1,
) -> EmbeddingCache:
    """Encode every shard ``cache`` lacks (the shards ``i`` with ``i % world_size == rank``) and return it.

    Under a launcher, each rank passes its ``rank`` and ``world_size`` and encodes its own shards;
    once all ranks are done the cache is complete and any of them reads it.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
    if len(corpus) != cache.documents:
        raise ValueError(f"the corpus has {len(corpus):,} documents; {cache.path} was made for {cache.documents:,}")
    ids = None if callable(getattr(corpus, "texts", None)) else list(corpus)
    mine = [shard for shard in cache.missing_shards() if shard % world_size == rank]
    total = sum(cache.bounds(shard)[1] - cache.bounds(shard)[0] for shard in mine)
    with progress_bar(total, f"encoding {total:,} documents", "documents", show_progress) as advance:
        for shard in mine:
            start, stop = cache.bounds(shard)
            embeddings, seconds = _encode_shard(model, corpus, ids, start, stop, batch_size, advance, pool)
            cache.write_shard(shard, embeddings, seconds, encoder_runtime(model))
            logger.info(
                "shard %d/%d: %d documents encoded in %.1f s", shard + 1, cache.num_shards, stop - start, seconds
            )
    return cache
