"""Exact inner-product search with ``faiss.IndexFlatIP``, on every GPU when there is one.

Scores are ``⟨q, d⟩``; with unit-length embeddings that is cosine similarity. The search is
brute force and exact, so results equal a NumPy ``queries @ docs.T`` top-k up to float32
rounding and the order of tied scores.

GPU: with ``use_gpu=None`` (the default) the index is sharded over all GPUs FAISS sees
(``faiss.index_cpu_to_all_gpus``) when ``faiss.get_num_gpus() > 0``; ``use_gpu=False`` stays on
the CPU; ``use_gpu=True`` fails when FAISS sees no GPU (e.g. faiss-cpu is installed). FAISS' GPU
k-selection handles at most ``k = 2048``.

``k`` larger than the number of documents: FAISS pads such rows with id ``-1`` and score
``-3.4e38``; this backend clamps ``k`` to ``len(index)`` instead, so no padding ever reaches the
caller and every returned id is a real document.

Memory on CPU: a single ``IndexFlatIP`` grows its storage by reallocation, so adding a corpus
shard by shard briefly holds the old and the new copy (measured: peak 1.5× the embeddings). This
backend therefore keeps a list of flat indexes, each filled once (``part_bytes`` or more per part;
small adds go into the last part), searches each and merges the top ``k`` with FAISS' result
heap: peak memory stays near the embeddings' size, and a single part (any corpus added in one
call) is searched exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from retrodistill.index.base import INDEXES, DenseIndex, check_embeddings

GPU_MAX_K = 2048
#: Parts under this size take the next ``add`` into themselves (bounded reallocation) instead of a new part.
PART_BYTES = 256 << 20


def import_faiss() -> Any:
    """Import faiss, or raise an ``ImportError`` that says which extra installs it."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "dense retrieval needs FAISS: pip install 'retrodistill[cpu]' (faiss-cpu) or "
            "'retrodistill[gpu]' (faiss-gpu); install exactly one of the two"
        ) from err
    return faiss


def wants_gpus(faiss: Any, use_gpu: bool | None) -> bool:
    """Whether to put an index on the GPUs: ``None`` when FAISS sees any, ``True`` requires one, ``False`` never."""
    gpus = faiss.get_num_gpus()
    if use_gpu and gpus == 0:
        raise RuntimeError(
            "use_gpu=True but FAISS sees no GPU; install faiss-gpu ('retrodistill[gpu]') on a CUDA "
            "machine or pass use_gpu=False"
        )
    return bool(gpus > 0 and use_gpu is not False)


def search_in_batches(
    queries: np.ndarray, k: int, batch_size: int, search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """``search`` over ``batch_size`` queries at a time, which bounds the score matrix FAISS holds at once."""
    scores = np.empty((len(queries), k), np.float32)
    ids = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), batch_size):
        stop = start + batch_size
        scores[start:stop], ids[start:stop] = search(queries[start:stop], k)
    return scores, ids


@INDEXES.register("faiss-flat-ip")
class FaissFlatIP(DenseIndex):
    """Exact maximum-inner-product search.

    Args:
        use_gpu: ``None`` uses all GPUs when FAISS sees any, ``True`` requires one, ``False`` never.
        query_batch_size: queries searched per FAISS call, which bounds the ``(batch, n)`` score
            matrix FAISS holds at once.
        part_bytes: on CPU, an ``add`` starts a new part once the last one holds this many bytes
            (see the module docstring); smaller values mean less reallocation, more parts to merge.

    Example:
        >>> import numpy as np
        >>> index = FaissFlatIP(use_gpu=False)
        >>> index.add(np.eye(3, dtype=np.float32))
        >>> scores, ids = index.search(np.array([[0.0, 2.0, 1.0]], dtype=np.float32), k=2)
        >>> scores.tolist(), ids.tolist()
        ([[2.0, 1.0]], [[1, 2]])
    """

    def __init__(self, use_gpu: bool | None = None, query_batch_size: int = 1024, part_bytes: int = PART_BYTES) -> None:
        if query_batch_size < 1:
            raise ValueError(f"query_batch_size must be at least 1, got {query_batch_size}")
        self.use_gpu = use_gpu
        self.query_batch_size = query_batch_size
        self._faiss = import_faiss()
        self.on_gpu = wants_gpus(self._faiss, use_gpu)
        self.part_bytes = part_bytes
        # CPU: flat indexes in add order, ids offset by the sizes before them; GPU: one sharded index.
        self._parts: list[Any] = []
        self.dim: int | None = None

    def add(self, embeddings: np.ndarray) -> None:
        matrix = check_embeddings(embeddings, "embeddings", self.dim)
        if self.dim is None:
            self.dim = int(matrix.shape[1])
        last = self._parts[-1] if self._parts else None
        if last is None or (not self.on_gpu and last.ntotal * self.dim * 4 >= self.part_bytes):
            part = self._faiss.IndexFlatIP(self.dim)
            self._parts.append(self._faiss.index_cpu_to_all_gpus(part) if self.on_gpu else part)
        self._parts[-1].add(matrix)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        matrix = check_embeddings(queries, "queries", self.dim)
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(matrix), 0), np.float32), np.zeros((len(matrix), 0), np.int64)
        if self.on_gpu and k > GPU_MAX_K:
            raise ValueError(f"FAISS on GPU returns at most k={GPU_MAX_K}; got k={k} (pass use_gpu=False)")
        return search_in_batches(matrix, k, self.query_batch_size, self._search_parts)

    def _search_parts(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` over every part: each part's own top ``k``, merged by a min-heap of the best."""
        if len(self._parts) == 1:
            scores, ids = self._parts[0].search(queries, k)
            return scores, ids
        heap = self._faiss.ResultHeap(len(queries), k, keep_max=True)
        offset = 0
        for part in self._parts:
            part_scores, part_ids = part.search(queries, min(k, int(part.ntotal)))  # (m, k_part)
            heap.add_result(part_scores, part_ids + offset)
            offset += int(part.ntotal)
        heap.finalize()  # sorts each row best first
        return heap.D, heap.I

    def __len__(self) -> int:
        return sum(int(part.ntotal) for part in self._parts)
