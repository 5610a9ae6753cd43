"""ColBERT teacher: late interaction (MaxSim) over per-token embeddings of the query and the document.

``score(q, d) = Σ_i max_j  q_i · d_j``: for each query token vector ``q_i``, the largest dot product
with any kept document token vector ``d_j``, summed over the query tokens. Token vectors are the
encoder's last hidden states, projected by a linear layer without activation, then L2-normalised one
token at a time, so each ``q_i · d_j`` is a cosine similarity and the score lies in ``[-Lq, Lq]``.

Two checkpoint layouts are read, each with its own library's conventions: Stanford ColBERT
(stanford-futuredata/ColBERT, e.g. ``colbert-ir/colbertv2.0``) and PyLate (lightonai/pylate, e.g.
``answerdotai/answerai-colbert-small-v1``). For BERT tokenizers they build the same sequences; the
markers, the defaults and the skiplists differ:

==================  ================================================  ================================================
                    Stanford ColBERT                                  PyLate
==================  ================================================  ================================================
recognised by       ``config.json`` architectures ``HF_ColBERT``, or  ``modules.json``: a Transformer, then Dense
                    an ``artifact.metadata`` file                     module(s)
settings from       ``artifact.metadata`` (the ColBERT config)        ``config_sentence_transformers.json``
encoder weights     ``model.safetensors``, keys under ``bert.`` (the  the Transformer module's folder
                    base model's prefix)
projection          ``linear.weight`` (dim × hidden), no bias         each Dense folder's ``linear.weight`` (out ×
                                                                      in), ``linear.bias`` if any; no activation
markers [Q] / [D]   ``query_token_id`` / ``doc_token_id``:            ``query_prefix`` / ``document_prefix``
                    vocabulary tokens (``[unused0]`` / ``[unused1]``)  (``"[Q] "`` / ``"[D] "``): added tokens
marker position     ``". " + text`` is tokenized to ``maxlen`` tokens  the text (stripped; lower-cased if
                    at most, then the ``.`` at position 1 becomes     ``sentence_bert_config.json`` says so) is
                    the marker: ``[CLS] [Q] tokens… [SEP]``           tokenized to ``maxlen - 1`` tokens, then the
                                                                      marker is inserted at position 1: the same
query augmentation  always: padded to ``query_maxlen`` with [MASK]    if ``do_query_expansion`` (default): padded
                                                                      to ``query_length`` with [MASK]
[MASK] attended     only if ``attend_to_mask_tokens`` (default no)    only if ``attend_to_expansion_tokens`` (no)
document skiplist   if ``mask_punctuation``: the first token id of    ids of ``skiplist_words`` (default
                    each ``string.punctuation`` mark, and the pad id  ``string.punctuation``), by
                                                                      ``convert_tokens_to_ids``
default lengths     ``query_maxlen`` 32, ``doc_maxlen`` 220 (colbertv2  ``query_length`` 32, ``document_length`` 180
                    .0's ``artifact.metadata`` says 180)
==================  ================================================  ================================================

In both, [MASK] tokens that are not attended still get an output vector (they attend to the real
tokens; the real tokens do not attend to them), and documents are neither padded nor augmented.
Skiplist tokens are encoded like any other token (they shape their neighbours' vectors) but are
removed from the document side of MaxSim. A punctuation mark missing from the vocabulary encodes to
``[UNK]``, so ``[UNK]`` is then skipped too, exactly as both libraries do. Only cosine similarity
(ColBERT's ``similarity: cosine``, ``interaction: colbert``) is supported; ``l2`` and ``flipr`` are refused.

Caching. Each distinct query text and each distinct document text is encoded once per teacher
(keyed by the sha256 of its text, one cache per side), and its token matrix is kept: ``(tokens,
dim)`` float32 (``cache_dtype="fp16"`` halves the memory: about 46 kB instead of 92 kB for a
180-token document at dim 128). Pairs are then scored from the cache, grouped by query: the
query's documents are concatenated, multiplied with the query matrix once, and reduced per
document (:func:`maxsim`). MaxSim is computed in float64 from the stored vectors, so a pair's score
does not depend on which other pairs share its call. :meth:`ColBERTTeacher.prepare` encodes every
distinct text of a scoring run in one canonical pass (sorted texts, batches of neighbours in token
length), so a resumed run ends with exactly the scores of an uninterrupted one.

Weights are read from safetensors; a checkpoint with only ``pytorch_model.bin`` is read with
``torch.load(weights_only=True)`` (no pickled code runs). No remote code unless asked for.
Recognising a layout and reading its settings and weights is :mod:`retrodistill.teachers.colbert_checkpoint`
(:class:`Layout`, :func:`detect_layout` and :class:`Conventions` are importable from here too).

Example::

    teacher = ColBERTTeacher("colbert-ir/colbertv2.0")
    teacher.score(["what is bm25"], ["BM25 is a bag-of-words ranking function ..."])
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from retrodistill.artifacts import model_revision
from retrodistill.onednn_linear import use_onednn_linear
from retrodistill.teachers.base import TEACHERS, Teacher, check_dtype, check_pairs, resolve_device, torch_dtype
from retrodistill.teachers.colbert_checkpoint import (
    Conventions,
    Layout,
    detect_layout,
    load_encoder,
    load_projection,
    local_dir,
    read_pylate,
    read_stanford,
    special_ids,
)

CACHE_DTYPES = {"fp32": np.float32, "fp16": np.float16}
_MAXSIM_TOKENS = 1 << 15  # document tokens per MaxSim product (32k × dim 128 × 8 B = 32 MiB)
_TOKENIZE_CHUNK = 4096


def maxsim(query: np.ndarray, docs: Sequence[np.ndarray]) -> np.ndarray:
    """Late-interaction scores of one query against several documents, in float64.

    Args:
        query: ``(Lq, dim)`` query token vectors.
        docs: ``k`` arrays of shape ``(Ld_j, dim)``, each with at least one token.

    Returns:
        ``(k,)`` float64: score ``m`` is ``Σ_i max_j query[i] · docs[m][j]``.

    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> maxsim(q, [np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([[0.0, -1.0]])]).tolist()  # 1 + 0.5, 0 - 1
    [1.5, -1.0]
    """
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    if (lengths == 0).any():
        raise ValueError("every document needs at least one token vector")
    sim = np.concatenate(docs).astype(np.float64) @ query.astype(np.float64).T  # (Σ Ld_j, Lq)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.maximum.reduceat(sim, starts, axis=0).sum(axis=1)  # (k, Lq) -> (k,)


@TEACHERS.register("colbert")
class ColBERTTeacher(Teacher):
    """Score pairs by ColBERT late interaction, encoding each distinct text once.

    Args:
        model: Hugging Face Hub id or local directory, Stanford ColBERT or PyLate layout.
        query_maxlen: query tokens (markers and [MASK] padding included); default: the checkpoint's.
        doc_maxlen: maximum document tokens (markers included); default: the checkpoint's.
        batch_size: texts per encoder forward pass.
        device: ``"cuda"``, ``"cpu"``...; default: CUDA when available, else CPU.
        dtype: ``"fp32"`` (default); ``"bf16"`` or ``"fp16"`` (GPU only) run the encoder under autocast,
            the weights stay fp32.
        cache_dtype: ``"fp32"`` (default) or ``"fp16"``: how cached token vectors are stored.
        revision: Hub branch, tag or commit to load.
        trust_remote_code: allow model code from the Hub (off unless asked for).
        linear_backend: ``"auto"`` runs fp32 CPU inference through oneDNN (see
            :mod:`retrodistill.onednn_linear`); ``"torch"`` keeps PyTorch's kernels.
    """

    def __init__(
        self,
        model: str,
        query_maxlen: int | None = None,
        doc_maxlen: int | None = None,
        batch_size: int = 32,
        device: str | None = None,
        dtype: str = "fp32",
        cache_dtype: str = "fp32",
        revision: str | None = None,
        trust_remote_code: bool = False,
        linear_backend: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if cache_dtype not in CACHE_DTYPES:
            raise ValueError(f"cache_dtype {cache_dtype!r} is not one of {', '.join(CACHE_DTYPES)}")
        for name, value in (("query_maxlen", query_maxlen), ("doc_maxlen", doc_maxlen)):
            if value is not None and value < 4:
                raise ValueError(f"{name} must be at least 4 ([CLS], marker, a token, [SEP]), got {value}")
        self.device = resolve_device(device)
        check_dtype(dtype, self.device)
        self.model_name = model
        self.batch_size = batch_size
        self.dtype = dtype
        self.cache_dtype = cache_dtype
        self.trust_remote_code = trust_remote_code

        root = local_dir(model, revision)
        layout = detect_layout(root)
        self.tokenizer = AutoTokenizer.from_pretrained(root / layout.encoder_path, trust_remote_code=trust_remote_code)
        reader = read_stanford if layout.name == "stanford" else read_pylate
        self.conventions = reader(root, layout, self.tokenizer, query_maxlen, doc_maxlen)
        self._ids = special_ids(self.tokenizer, self.conventions, model)
        encoder = load_encoder(root / layout.encoder_path, trust_remote_code)
        layers, width = [], int(encoder.config.hidden_size)
        for file in layout.projection_files:  # hidden -> dim (PyLate may chain several Dense modules)
            layers.append(load_projection(file, width))
            width = int(layers[-1].out_features)
        projection = torch.nn.Sequential(*layers)
        self.dim = width
        self.model = torch.nn.ModuleDict({"encoder": encoder, "projection": projection}).eval().to(self.device)
        self.linear_backend = use_onednn_linear(self.model, linear_backend, self.device, dtype)
        self.revision = model_revision(model, revision)
        self._cache = {"query": _TokenCache(), "document": _TokenCache()}

    def describe(self) -> dict[str, Any]:
        c = self.conventions
        return {
            "name": "colbert",
            "model": self.model_name,
            "revision": self.revision,
            "layout": c.layout,
            "max_length": {"query": c.query_maxlen, "document": c.doc_maxlen},
            "dtype": self.dtype,
            "cache_dtype": self.cache_dtype,
            "score": "sum_i max_j q_i . d_j (L2-normalised token vectors)",
            "dim": self.dim,
            "markers": {
                "query": [c.query_marker, self._ids["query"]],
                "document": [c.doc_marker, self._ids["document"]],
            },
            "query_expansion": c.query_expansion,
            "attend_to_mask_tokens": c.attend_to_mask_tokens,
            "skiplist_ids": list(c.skiplist_ids),
            "lowercase": c.lowercase,
            "trust_remote_code": self.trust_remote_code,
            "device": self.device,
            "batch_size": self.batch_size,
            "linear_backend": self.linear_backend,
        }

    def prepare(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> None:
        """Encode every distinct text of the run in one pass, in a canonical order.

        A token vector depends on its batch (padding length, kernel blocking) at the 1e-7 level;
        encoding the run's sorted distinct texts up front makes every batch the same whether the
        run is fresh or resumed, hence bit-identical stores.
        """
        self._embed("query", queries, show_progress)
        self._embed("document", docs, show_progress)

    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        check_pairs(queries, docs)
        scores = np.zeros(len(queries), dtype=np.float32)
        if not queries:
            return scores
        q_rows = self._embed("query", queries, show_progress)
        d_rows = self._embed("document", docs, show_progress)
        q_cache, d_cache = self._cache["query"], self._cache["document"]
        order = np.argsort(q_rows, kind="stable")
        groups = np.flatnonzero(np.diff(q_rows[order])) + 1
        for pairs in np.split(order, groups):  # pairs of one query
            query = q_cache.matrices[q_rows[pairs[0]]]
            for chunk in _token_chunks(pairs, d_rows, d_cache):
                scores[chunk] = maxsim(query, [d_cache.matrices[r] for r in d_rows[chunk]])
        return scores

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> list[np.ndarray]:
        """Token vectors of each query, uncached: ``(Lq, dim)`` float32 each, L2-normalised, in input order."""
        return self._encode("query", texts, show_progress)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> list[np.ndarray]:
        """Token vectors of each document without its skiplist tokens, uncached: ``(Ld, dim)`` float32 each."""
        return self._encode("document", texts, show_progress)

    def clear_cache(self) -> None:
        """Forget every cached token matrix."""
        self._cache = {"query": _TokenCache(), "document": _TokenCache()}

    def tokenize(self, side: str, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(input_ids, attention_mask)`` of each text as the encoder sees it, unpadded (int64 arrays).

        ``side`` is ``"query"`` or ``"document"``; see the module docstring for the conventions.
        """
        if side not in ("query", "document"):
            raise ValueError(f"side must be 'query' or 'document', got {side!r}")
        c, ids = self.conventions, self._ids
        maxlen = c.query_maxlen if side == "query" else c.doc_maxlen
        marker = ids["query"] if side == "query" else ids["document"]
        if c.layout == "stanford":
            prepared = [". " + t for t in texts]
            limit = maxlen
        else:
            prepared = [t.strip().lower() if c.lowercase else t.strip() for t in texts]
            limit = maxlen - 1
        out = []
        for start in range(0, len(prepared), _TOKENIZE_CHUNK):
            encoded = self.tokenizer(
                prepared[start : start + _TOKENIZE_CHUNK],
                truncation=True,
                max_length=limit,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
            for seq in encoded:
                tokens = np.asarray(seq, dtype=np.int64)
                if c.layout == "stanford":
                    tokens[1] = marker
                else:
                    tokens = np.concatenate([tokens[:1], [marker], tokens[1:]])
                attention = np.ones(len(tokens), dtype=np.int64)
                if side == "query" and c.query_expansion:
                    if c.layout == "stanford":  # Stanford turns pad ids into [MASK] ids, real ones included
                        tokens[tokens == ids["pad"]] = ids["mask"]
                    expansion = maxlen - len(tokens)
                    tokens = np.concatenate([tokens, np.full(expansion, ids["mask"], dtype=np.int64)])
                    attention = np.concatenate([attention, np.full(expansion, int(c.attend_to_mask_tokens))])
                out.append((tokens, attention))
        return out

    def _encode(self, side: str, texts: Sequence[str], show_progress: bool) -> list[np.ndarray]:
        """Run the encoder over ``texts`` in batches of neighbours in token length."""
        import torch

        tokenized = self.tokenize(side, texts)
        lengths = np.fromiter((len(t) for t, _ in tokenized), dtype=np.int64, count=len(tokenized))
        skip = np.asarray(self.conventions.skiplist_ids, dtype=np.int64)
        out: list[np.ndarray] = [np.zeros(0)] * len(texts)
        autocast = (
            torch.autocast(device_type=torch.device(self.device).type, dtype=torch_dtype(self.dtype))
            if self.dtype != "fp32"
            else contextlib.nullcontext()
        )
        order = np.argsort(-lengths, kind="stable")
        with _text_progress(len(texts), f"colbert: encoding {side}s", show_progress) as advance:
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                width = int(lengths[rows].max())
                input_ids = np.full((len(rows), width), self._ids["pad"], dtype=np.int64)
                attention = np.zeros((len(rows), width), dtype=np.int64)
                for r, i in enumerate(rows):
                    input_ids[r, : lengths[i]], attention[r, : lengths[i]] = tokenized[i]
                with torch.inference_mode(), autocast:
                    hidden = self.model["encoder"](
                        input_ids=torch.from_numpy(input_ids).to(self.device),
                        attention_mask=torch.from_numpy(attention).to(self.device),
                    ).last_hidden_state  # (B, width, hidden)
                    vectors = self.model["projection"](hidden)  # (B, width, dim)
                vectors = torch.nn.functional.normalize(vectors.float(), p=2, dim=-1).cpu().numpy()
                for r, i in enumerate(rows):
                    tokens = vectors[r, : lengths[i]]
                    if side == "document":
                        tokens = tokens[~np.isin(tokenized[i][0], skip)]
                    out[i] = np.ascontiguousarray(tokens, dtype=np.float32)
                advance(len(rows))
        return out

    def _embed(self, side: str, texts: Sequence[str], show_progress: bool) -> np.ndarray:
        """Encode the texts not cached yet (sorted, so the batches do not depend on input order); return their rows."""
        cache = self._cache[side]
        new = cache.missing(texts)
        if new:
            matrices = self._encode(side, new, show_progress)
            dtype = CACHE_DTYPES[self.cache_dtype]
            cache.add(new, [m.astype(dtype) for m in matrices])
        return cache.rows(texts)


class _TokenCache:
    """Variable-length token matrices by sha256 of their text."""

    def __init__(self) -> None:
        self._row: dict[bytes, int] = {}
        self.matrices: list[np.ndarray] = []

    def missing(self, texts: Sequence[str]) -> list[str]:
        return sorted({t for t in texts if _key(t) not in self._row})

    def add(self, texts: list[str], matrices: list[np.ndarray]) -> None:
        for text, matrix in zip(texts, matrices, strict=True):
            self._row[_key(text)] = len(self.matrices)
            self.matrices.append(matrix)

    def rows(self, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter((self._row[_key(t)] for t in texts), dtype=np.int64, count=len(texts))


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _token_chunks(pairs: np.ndarray, d_rows: np.ndarray, d_cache: _TokenCache) -> Iterator[np.ndarray]:
    """Cut one query's pairs into runs of at most ``_MAXSIM_TOKENS`` document tokens (at least one pair each)."""
    lengths = np.fromiter((len(d_cache.matrices[r]) for r in d_rows[pairs]), dtype=np.int64, count=len(pairs))
    start, total = 0, 0
    for end, n in enumerate(lengths):
        if total + n > _MAXSIM_TOKENS and end > start:
            yield pairs[start:end]
            start, total = end, 0
        total += int(n)
    yield pairs[start:]


def _text_progress(
    total: int, description: str, enabled: bool
) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    """A progress bar over ``total`` texts (:func:`retrodistill.progress.progress_bar`); yields ``advance(n)``."""
    from retrodistill.progress import progress_bar

    return progress_bar(total, description, "texts", enabled)


__all__ = ["CACHE_DTYPES", "ColBERTTeacher", "Conventions", "Layout", "detect_layout", "maxsim"]
