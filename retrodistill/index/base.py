"""The dense-index contract and the registry of its backends.

A dense index holds ``n`` document embeddings and returns, for each query embedding, the ``k``
documents with the highest score (inner product for the exact backend)::

    index = INDEXES.build("faiss-flat-ip", {"use_gpu": None})
    index.add(doc_embeddings)                        # float32 (n, d); ids are 0 … n-1 in add order
    scores, ids = index.search(query_embeddings, k)  # (m, min(k, n)) float32, (m, min(k, n)) int64

Invariants every backend keeps: ids are positions in the order documents were added (a later
``add`` continues the numbering); each row of ``scores`` is sorted best first; ``k`` larger than
the number of documents is clamped to it, so an exact backend's rows never hold a padding id (an
approximate one's may: see :meth:`DenseIndex.search`).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from retrodistill.registry import Registry

if TYPE_CHECKING:
    import numpy as np

INDEXES: Registry[type[DenseIndex]] = Registry("index backend")


class DenseIndex(abc.ABC):
    """A searchable set of document embeddings (one backend per file, registered in :data:`INDEXES`)."""

    @abc.abstractmethod
    def add(self, embeddings: np.ndarray) -> None:
        """Append documents.

        Args:
            embeddings: float32 array of shape ``(n, d)``; ``d`` must match earlier calls.
        """

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top-``k`` documents for each query, best first.

        Args:
            queries: float32 array of shape ``(m, d)``.
            k: documents per query; clamped to ``len(self)``.

        Returns:
            ``(scores, ids)``: float32 and int64 arrays of shape ``(m, min(k, len(self)))``. An
            approximate index may find fewer than ``k`` documents for a query (an IVF index probing
            few lists): those places hold id ``-1``, which callers drop (``encode_and_search`` does).
        """

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of documents added."""


def check_embeddings(array: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    """``array`` as a C-contiguous float32 ``(n, d)`` matrix, or a ``ValueError`` naming the problem.

    Args:
        array: anything ``numpy.asarray`` accepts.
        what: a name for the message (``"embeddings"``, ``"queries"``).
        dim: the expected ``d``; ``None`` accepts any.
    """
    import numpy as np

    matrix = np.ascontiguousarray(array, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"{what} must have shape (n, d); got shape {tuple(matrix.shape)}")
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(f"{what} have dimension {matrix.shape[1]}, but the index holds dimension {dim}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return matrix
