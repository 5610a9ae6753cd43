"""Bi-encoder teacher: a sentence-transformers model scores a pair by the similarity of two embeddings.

``score(q, d) = sim(E_q(q), E_d(d))`` where ``E_q`` is ``SentenceTransformer.encode_query`` and ``E_d``
is ``encode_document`` (they differ only for models with ``query``/``document`` prompts or routers),
and ``sim`` is:

==========  ==========================================
similarity  score
==========  ==========================================
cosine      ``E_q · E_d / (‖E_q‖ ‖E_d‖)``, in [-1, 1]
dot         ``E_q · E_d``
==========  ==========================================

Each distinct query text and document text is encoded once per teacher instance and cached by
text, so the parts of a scoring run share embeddings (memory: one float32 vector per distinct
text, e.g. 1.5 kB per text for a 384-dimensional model).

Example::

    teacher = BiEncoderTeacher("sentence-transformers/all-MiniLM-L6-v2", similarity="cosine")
    teacher.score(["what is bm25"], ["BM25 is a bag-of-words ranking function ..."])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from retrodistill.artifacts import model_revision
from retrodistill.onednn_linear import use_onednn_linear
from retrodistill.teachers.base import (
    TEACHERS,
    Teacher,
    check_dtype,
    check_pairs,
    resolve_device,
    torch_dtype,
)

SIMILARITIES = ("cosine", "dot")


@TEACHERS.register("bi-encoder")
class BiEncoderTeacher(Teacher):
    """Score pairs by the similarity of sentence-transformers embeddings.

    Args:
        model: Hugging Face Hub id or local directory of a sentence-transformers model.
        similarity: ``"cosine"`` (default) or ``"dot"``.
        batch_size: texts per encoding batch.
        max_length: maximum tokens per text; default: the model's ``max_seq_length``.
        device: ``"cuda"``, ``"cpu"``...; default: CUDA when available, else CPU.
        dtype: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (GPU only): the dtype the model runs in.
        trust_remote_code: allow model code from the Hub (off unless asked for).
        revision: Hub branch, tag or commit to load.
        linear_backend: ``"auto"`` runs fp32 CPU inference through oneDNN (see
            :mod:`retrodistill.onednn_linear`); ``"torch"`` keeps PyTorch's kernels.
    """

    def __init__(
        self,
        model: str,
        similarity: str = "cosine",
        batch_size: int = 64,
        max_length: int | None = None,
        device: str | None = None,
        dtype: str = "fp32",
        trust_remote_code: bool = False,
        revision: str | None = None,
        linear_backend: str = "auto",
    ) -> None:
        from sentence_transformers import SentenceTransformer

        from retrodistill.teachers.model_kind import require_bi_encoder

        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity {similarity!r} is not one of {', '.join(SIMILARITIES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = resolve_device(device)
        check_dtype(dtype, self.device)
        self.model_name = model
        self.similarity = similarity
        self.batch_size = batch_size
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        require_bi_encoder(model, revision)
        self.model = SentenceTransformer(
            model,
            device=self.device,
            revision=revision,
            trust_remote_code=trust_remote_code,
            model_kwargs={"use_safetensors": True, "dtype": torch_dtype(dtype)},
        )
        if max_length is not None:
            if max_length < 1:
                raise ValueError(f"max_length must be positive, got {max_length}")
            self.model.max_seq_length = max_length
        self.max_length = self.model.max_seq_length
        self.linear_backend = use_onednn_linear(self.model, linear_backend, self.device, dtype)
        self.revision = model_revision(model, revision)
        # One cache per side: a text can be both a query and a document, with different prompts.
        self._cache: dict[str, _EmbeddingCache] = {"query": _EmbeddingCache(), "document": _EmbeddingCache()}

    def describe(self) -> dict[str, Any]:
        return {
            "name": "bi-encoder",
            "model": self.model_name,
            "revision": self.revision,
            "max_length": self.max_length,
            "dtype": self.dtype,
            "similarity": self.similarity,
            "prompts": dict(self.model.prompts),
            "trust_remote_code": self.trust_remote_code,
            "device": self.device,
            "batch_size": self.batch_size,
            "linear_backend": self.linear_backend,
        }

    def prepare(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> None:
        """Encode every distinct text of the run in one pass.

        An embedding depends on its batch (padding length, kernel blocking) at the 1e-7 level. Were
        texts encoded part by part, a resumed run would batch them differently from an
        uninterrupted one; encoding the whole run's texts up front, in the same order every time,
        makes the stores bit-identical (at the price of re-encoding finished parts' texts on resume).
        """
        self._embed("query", queries, show_progress)
        self._embed("document", docs, show_progress)

    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        check_pairs(queries, docs)
        if not queries:
            return np.zeros(0, dtype=np.float32)
        q_rows = self._embed("query", queries, show_progress)
        d_rows = self._embed("document", docs, show_progress)
        q = self._cache["query"].vectors(q_rows)  # (P, dim)
        d = self._cache["document"].vectors(d_rows)  # (P, dim)
        return np.einsum("pd,pd->p", q, d).astype(np.float32)

    def _embed(self, side: str, texts: Sequence[str], show_progress: bool) -> np.ndarray:
        """Encode the texts not cached yet; return each text's row in the cache."""
        cache = self._cache[side]
        new = cache.missing(texts)
        if new:
            encode = self.model.encode_query if side == "query" else self.model.encode_document
            vectors = encode(
                new,
                batch_size=self.batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=self.similarity == "cosine",
            )
            cache.add(new, np.asarray(vectors, dtype=np.float32))
        return cache.rows(texts)


class _EmbeddingCache:
    """Embeddings by text, in one float32 matrix that grows by doubling (amortised O(1) per text)."""

    def __init__(self) -> None:
        self._row: dict[str, int] = {}
        self._matrix = np.zeros((0, 0), dtype=np.float32)

    def missing(self, texts: Sequence[str]) -> list[str]:
        return list(dict.fromkeys(t for t in texts if t not in self._row))

    def add(self, texts: list[str], vectors: np.ndarray) -> None:
        start, end = len(self._row), len(self._row) + len(texts)
        if start == 0:
            self._matrix = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        elif end > len(self._matrix):
            grown = np.zeros((max(end, 2 * len(self._matrix)), vectors.shape[1]), dtype=np.float32)
            grown[:start] = self._matrix[:start]
            self._matrix = grown
        self._matrix[start:end] = vectors
        for text in texts:
            self._row[text] = len(self._row)

    def rows(self, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter((self._row[t] for t in texts), dtype=np.int64, count=len(texts))

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self._matrix[rows]


class CachedTeacherEncoder:
    """A :class:`BiEncoderTeacher` seen as an encoder for evaluation, reusing its embedding cache.

    Evaluating a dense teacher right after scoring with it would otherwise encode the corpus a
    second time; through this view only the texts the scoring run did not see are encoded. The
    vectors are the ones the teacher scores with (normalised when its similarity is cosine), so
    the evaluation measures exactly the teacher that produced the store.
    """

    def __init__(self, teacher: BiEncoderTeacher) -> None:
        self.teacher = teacher
        self.model_id = teacher.model_name
        self.revision = teacher.revision
        self.max_seq_length = teacher.max_length
        self.similarity_fn_name = teacher.similarity

    def get_embedding_dimension(self) -> int:
        dimension = self.teacher.model.get_embedding_dimension()
        if dimension is None:
            raise ValueError(f"{self.model_id} does not report its embedding dimension")
        return int(dimension)

    def _encode(self, side: str, texts: Sequence[str], show_progress_bar: bool = False, **_: Any) -> np.ndarray:
        rows = self.teacher._embed(side, list(texts), show_progress_bar)
        return self.teacher._cache[side].vectors(rows)

    def encode_query(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        return self._encode("query", texts, **kwargs)

    def encode_document(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        return self._encode("document", texts, **kwargs)
