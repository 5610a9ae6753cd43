"""The ``embed-teacher`` stage: a bi-encoder teacher's vectors of the training queries and documents.

Recipe: load the collection split; choose what to embed (with a candidates artifact, its queries
of the split and the documents their examples can draw: positives and negatives of rank at most
``negative_pool``, as ``train-student`` draws them; without one, the split's queries and the
whole corpus); encode the documents through the shared corpus-embedding cache
(:mod:`retrodistill.data.embeddings`), shard by shard, only the shards that hold a chosen document
and that the cache lacks; encode the queries; write a teacher-embedding store
(:mod:`retrodistill.data.teacher_embeddings`).

The cache is keyed exactly as ``retrodistill evaluate`` keys it (the model's identity and revision,
its encoder settings, the corpus fingerprint, the dtype), so an evaluation of the same model reads
the shards this stage encoded, and this stage reads the shards an evaluation encoded. Cached
vectors are the model's raw ``encode_document`` output (its own ``Normalize`` module, if any,
applied); the store holds the vectors the teacher scores with, so for ``similarity: cosine`` they
are L2-normalised here as :class:`~retrodistill.teachers.bi_encoder.BiEncoderTeacher` normalises
them. Batching differs from the teacher's own (length-sorted shards), so vectors agree with
``CachedTeacherEncoder(teacher)`` to float rounding (~1e-7), not bit for bit.

Memory: one cache shard and one chunk of queries at a time; the store's matrices are written
through memory maps.

Example::

    store = run(EmbedTeacherConfig(model="sentence-transformers/all-MiniLM-L6-v2", out="runs/emb"))
    store.vectors("documents", ["4983"])  # (1, 384) float32, unit norm
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrodistill.config import EmbedTeacherConfig, to_dict
from retrodistill.data.embeddings import DEFAULT_SHARD_SIZE, DTYPES, default_embedding_dir
from retrodistill.data.teacher_embeddings import TeacherEmbeddings, side_writer, write_store_manifest

if TYPE_CHECKING:
    from retrodistill.data.candidates import CandidateSet
    from retrodistill.data.collections import Collection
    from retrodistill.teachers.bi_encoder import BiEncoderTeacher

STAGE = "embed-teacher"
#: Queries encoded (and written) at a time.
QUERY_CHUNK = 16_384


def load_teacher(model: str, similarity: str = "cosine", batch_size: int = 64, max_length: int | None = None) -> Any:
    """The :class:`~retrodistill.teachers.bi_encoder.BiEncoderTeacher` whose vectors a store holds."""
    from retrodistill.teachers.bi_encoder import BiEncoderTeacher

    return BiEncoderTeacher(model, similarity=similarity, batch_size=batch_size, max_length=max_length)


def _normalised(vectors: np.ndarray, similarity: str) -> np.ndarray:
    """What the teacher scores with: L2-normalised rows for cosine (as sentence-transformers does), else as is."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if similarity != "cosine":
        return vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))  # torch.nn.functional.normalize's eps


def open_teacher_cache(
    teacher: BiEncoderTeacher,
    collection: Collection,
    root: str | os.PathLike[str] | None = None,
    *,
    dtype: str = "float32",
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> Any:
    """The corpus-embedding cache of the teacher's model, under the key ``evaluate`` gives that model.

    ``None`` when the collection has no corpus fingerprint (nothing to key a cache by).
    """
    from retrodistill.evaluate.retrieval import open_embedding_cache
    from retrodistill.evaluate.runs import model_identity

    identity = {**model_identity(teacher.model_name), "revision": teacher.revision}
    return open_embedding_cache(
        teacher.model,
        collection,
        Path(root) if root is not None else default_embedding_dir(),
        identity,
        dtype=dtype,
        shard_size=shard_size,
    )


def _document_vectors(
    teacher: BiEncoderTeacher,
    collection: Collection,
    rows: np.ndarray,
    cache: Any,
    out: np.ndarray,
    show_progress: bool,
) -> tuple[int, int]:
    """Fill ``out[i]`` with the teacher's vector of corpus row ``rows[i]``; return (shards needed, encoded).

    With a cache, each shard holding a wanted row is read from it, or encoded and written to it
    first; without one, the wanted rows are encoded ``DEFAULT_SHARD_SIZE`` at a time.
    """
    from retrodistill.data.embeddings import encoder_runtime
    from retrodistill.data.encoding import encode_length_sorted, encoding_pool
    from retrodistill.progress import progress_bar

    corpus = collection.corpus
    order = np.argsort(rows, kind="stable")  # store position of each wanted row, in corpus order
    sorted_rows = rows[order]
    if cache is None:
        with progress_bar(len(order), "encoding documents", "documents", show_progress) as advance:
            for start in range(0, len(order), DEFAULT_SHARD_SIZE):
                chunk = order[start : start + DEFAULT_SHARD_SIZE]
                texts = corpus.texts(rows[chunk])
                vectors = encode_length_sorted(teacher.model, texts, teacher.batch_size, advance=advance)
                out[chunk] = _normalised(vectors, teacher.similarity)
        chunks = -(-len(order) // DEFAULT_SHARD_SIZE)
        return chunks, chunks
    shards = np.unique(sorted_rows // cache.shard_size).tolist()
    missing = {s for s in shards if not cache.is_done(s)}
    encoded = 0
    total = sum(cache.bounds(s)[1] - cache.bounds(s)[0] for s in missing)
    # Worker processes only when something is encoded (and several GPUs are visible).
    with (
        encoding_pool(teacher.model) if missing else contextlib.nullcontext() as pool,
        progress_bar(total, f"encoding {total:,} documents", "documents", show_progress) as advance,
    ):
        for shard in shards:
            start, stop = cache.bounds(shard)
            if shard in missing:
                began = time.perf_counter()
                texts = corpus.texts(np.arange(start, stop, dtype=np.int64))
                vectors = encode_length_sorted(teacher.model, texts, teacher.batch_size, pool=pool, advance=advance)
                cache.write_shard(shard, vectors, time.perf_counter() - began, encoder_runtime(teacher))
                encoded += 1
                del vectors
            stored = cache.read_shard(shard)  # memory-mapped; what evaluation would read
            lo, hi = np.searchsorted(sorted_rows, [start, stop])
            out[order[lo:hi]] = _normalised(stored[sorted_rows[lo:hi] - start], teacher.similarity)
            del stored
    return len(shards), encoded


def embed_teacher(
    out: str | os.PathLike[str],
    teacher: BiEncoderTeacher,
    collection: Collection,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_dtype: str = "float32",
    extra: Mapping[str, Any] | None = None,
    started: float | None = None,
    show_progress: bool = False,
) -> TeacherEmbeddings:
    """Write the store of ``teacher``'s vectors of ``query_ids`` and ``doc_ids`` to ``out``.

    The stage's core, shared by :func:`run` and ``train-student`` (which computes a missing store
    for exactly the ids its examples use).

    Args:
        out: The store directory (created; an existing store there is replaced, manifest last).
        teacher: The bi-encoder teacher.
        collection: Where the texts come from; its corpus and queries fingerprints are the store's inputs.
        query_ids: Queries of ``collection`` to embed (may be empty).
        doc_ids: Documents of ``collection.corpus`` to embed (at least one).
        cache_dir: The corpus-embedding cache root (default ``$RETRODISTILL_CACHE/embeddings``).
        cache_dtype: The cache's dtype (``float16`` halves its disk and rounds the vectors).
        extra: More manifest fields (e.g. the stage's config).
        started: ``time.perf_counter()`` when the stage began, for ``wall_time_s`` (default: now).
        show_progress: sentence-transformers' progress bars.

    Returns:
        The store, read back.

    Raises:
        ValueError: No documents, or an id the collection does not hold.
    """
    started = time.perf_counter() if started is None else started
    if cache_dtype not in DTYPES:
        raise ValueError(f"embedding_dtype must be one of {', '.join(DTYPES)}; got {cache_dtype!r}")
    docs = sorted(set(doc_ids))
    queries = sorted(set(query_ids))
    if not docs:
        raise ValueError("embed-teacher: no documents to embed")
    unknown = [q for q in queries if q not in collection.queries]
    if unknown:
        raise ValueError(f"embed-teacher: {len(unknown)} query ids are not in {collection.name} (e.g. {unknown[0]})")
    try:
        rows = np.asarray(collection.corpus.rows(docs), dtype=np.int64)
    except KeyError as err:
        raise ValueError(
            f"embed-teacher: document id {err.args[0]!r} is not in the corpus of {collection.name}"
        ) from None
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    cache = open_teacher_cache(teacher, collection, cache_dir, dtype=cache_dtype)
    dimension = teacher.model.get_embedding_dimension()
    if dimension is None:
        raise ValueError(f"{teacher.model_name} does not report its embedding dimension")
    dim = int(dimension)
    with side_writer(directory, "documents", docs, dim) as matrix:
        needed, encoded = _document_vectors(teacher, collection, rows, cache, matrix, show_progress)
    with side_writer(directory, "queries", queries, dim) as matrix:
        for start in range(0, len(queries), QUERY_CHUNK):
            chunk = queries[start : start + QUERY_CHUNK]
            vectors = teacher.model.encode_query(
                [collection.queries[q] for q in chunk],
                batch_size=teacher.batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=teacher.similarity == "cosine",
            )
            matrix[start : start + len(chunk)] = np.asarray(vectors, dtype=np.float32)
    fingerprints = {k: v for k, v in collection.fingerprints.items() if k in ("corpus", "queries")}
    source = {"shards_needed": needed, "shards_encoded": encoded, "dtype": cache_dtype}
    if cache is not None:
        source |= {"key": cache.path.name, "shards": cache.num_shards}
    return write_store_manifest(
        directory,
        teacher=teacher.describe(),
        inputs=fingerprints,
        dim=dim,
        extra={
            "corpus_embeddings": source,
            **dict(extra or {}),
            "wall_time_s": round(time.perf_counter() - started, 3),
        },
    )


def select_ids(
    collection: Collection, candidates: CandidateSet | None, negative_pool: int
) -> tuple[list[str], list[str]]:
    """The (query ids, document ids) to embed, both sorted.

    With ``candidates``: the split's queries that have candidates, and every positive (label > 0)
    or negative of rank at most ``negative_pool`` of theirs, the documents ``train-student`` can
    draw. Without: the split's queries and every document.
    """
    if candidates is None:
        return sorted(collection.queries), sorted(collection.corpus)
    if negative_pool < 1:
        raise ValueError(f"negative_pool must be at least 1, got {negative_pool}")
    import pyarrow as pa
    import pyarrow.compute as pc

    table = candidates.table
    in_split = pc.is_in(table.column("query_id"), value_set=pa.array(sorted(collection.queries), type=pa.string()))
    queries = sorted(pc.unique(table.column("query_id").filter(in_split)).to_pylist())
    if not queries:
        raise ValueError(
            f"candidates {candidates.path} hold no query of {collection.name} split {collection.split!r}: "
            "mine them for this split, or pass --split"
        )
    keep = pc.and_(
        in_split,
        pc.or_(pc.greater(table.column("label"), 0), pc.less_equal(table.column("rank"), negative_pool)),
    )
    return queries, sorted(pc.unique(table.column("doc_id").filter(keep)).to_pylist())


def run(config: EmbedTeacherConfig, *, show_progress: bool = True) -> TeacherEmbeddings:
    """Embed the teacher's queries and documents (see the module docstring) into ``config.out``.

    Candidates made for another corpus or other queries are refused. The caller guards
    ``config.out`` (``retrodistill.outputs.guarded_output``).
    """
    from retrodistill.artifacts import check_inputs
    from retrodistill.data.candidates import read_candidates
    from retrodistill.data.download import load_dataset

    start = time.perf_counter()
    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    candidates = None
    if config.candidates:
        candidates = read_candidates(config.candidates)
        check_inputs(
            {k: v for k, v in candidates.manifest.get("inputs", {}).items() if k in ("corpus", "queries")},
            collection.fingerprints,
            artifact=f"candidates {candidates.path}",
            given=f"collection {config.data.dataset}",
        )
    query_ids, doc_ids = select_ids(collection, candidates, config.negative_pool)
    teacher = load_teacher(config.model, config.similarity, config.batch_size, config.max_length)
    extra: dict[str, Any] = {"config": to_dict(config), "dataset": collection.name, "split": collection.split}
    if candidates is not None:
        extra["candidates"] = candidates.fingerprint
    return embed_teacher(
        config.out,
        teacher,
        collection,
        query_ids,
        doc_ids,
        cache_dir=config.embedding_cache_dir,
        cache_dtype=config.embedding_dtype,
        extra=extra,
        started=start,
        show_progress=show_progress,
    )
