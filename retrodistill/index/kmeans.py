"""Seeded k-means through FAISS (``faiss.Kmeans``), for TAS's query clusters.

FAISS is the one k-means the project already depends on, and ``index/`` holds the modules that
import it (STYLE.md).
"""

from __future__ import annotations

import numpy as np


def kmeans(vectors: np.ndarray, k: int, seed: int, iterations: int = 20) -> np.ndarray:
    """Cluster the rows of ``vectors`` ``(n, d)`` into ``min(k, n)`` clusters; each row's cluster ``(n,)``.

    ``faiss.Kmeans`` with ``seed`` (its initial centroids are rows drawn with it) and no sub-sampling
    (``max_points_per_centroid`` is raised to ``n``), so every row takes part in training; the label
    of a row is its nearest centroid (L2).
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    clustering = faiss.Kmeans(dim, k, niter=iterations, seed=seed, verbose=False, max_points_per_centroid=n)
    clustering.train(vectors)
    _, labels = clustering.index.search(vectors, 1)
    return labels[:, 0].astype(np.int64)
