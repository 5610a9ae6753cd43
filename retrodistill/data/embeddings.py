"""Corpus embeddings on disk: one encoder's vectors of one corpus, in shards, resumable and shared.

Evaluation (:func:`retrodistill.evaluate.retrieval.encode_and_search`) and dense mining read the
same cache, so a corpus is encoded once per encoder, and a run killed while encoding loses at most
the shard it was working on.

Layout (``root`` is ``$RETRODISTILL_CACHE/embeddings`` by default, see :func:`default_embedding_dir`)::

    ROOT/KEY/manifest.json        format, version, encoder identity, corpus fingerprint, documents,
                                  shard_size, dtype (written first; never changes afterwards)
    ROOT/KEY/shards/000000.npy    rows [0, shard_size) of the corpus, corpus (file) order,
                                  shape (rows, d), float32 or float16, C order
    ROOT/KEY/shards/000000.json   {"shard", "start", "rows", "dim", "dtype", "bytes", "sha256", "seconds",
                                   "encoded_with": {"device", "linear_backend", "torch"}}
    ...

``KEY`` is :func:`cache_key`: a sha256 over the encoder's identity (its weights' revision and the
settings that change its vectors: ``max_seq_length``, prompts, modules such as ``Normalize``),
the corpus file's fingerprint and the stored dtype.

Invariants: row ``i`` of the concatenated shards is document ``i`` in corpus order; every shard
but the last holds exactly ``shard_size`` rows. A shard counts as done only when its ``.json``
entry exists and its ``.npy`` has the recorded size; both are renamed into place (the ``.npy``
first), so a crash leaves a shard either done or absent, and a re-run encodes only absent shards
(a writer killed mid-write leaves a hidden ``.NAME.PID-HOST-XXXXXXXX.tmp`` file, which a later
open deletes once its process is gone, or once it is ten minutes old: see :mod:`retrodistill.temporaries`).
``sha256`` is recorded for :meth:`EmbeddingCache.verify`; opening a cache checks sizes only, which
is cheap at any corpus size.

Encoding itself (length-sorted, shard by shard into the cache) is :mod:`retrodistill.data.encoding`'s.
Within a shard, documents are encoded longest first (as BEIR and MTEB do: batches of similar
length waste little padding) and stored back in corpus order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrodistill.artifacts import read_manifest, sha256_file, write_manifest
from retrodistill.temporaries import remove_stale_temporaries, writer_atomic_path

if TYPE_CHECKING:
    import numpy as np


logger = logging.getLogger(__name__)

FORMAT = "retrodistill-corpus-embeddings"
#: Bump when a change to the encoding code changes the vectors, so old caches are not reused.
VERSION = 1
DTYPES = ("float32", "float16")
DEFAULT_SHARD_SIZE = 100_000


def default_embedding_dir() -> Path:
    """``$RETRODISTILL_CACHE/embeddings`` if set, else ``~/.cache/retrodistill/embeddings``."""
    root = os.environ.get("RETRODISTILL_CACHE")
    return Path(root) / "embeddings" if root else Path.home() / ".cache" / "retrodistill" / "embeddings"


def encoder_settings(model: Any) -> dict[str, Any]:
    """The settings of a loaded encoder that change its document vectors (for the cache key).

    Its weights are identified separately (a hub commit or a weight hash); these are what a caller
    may change after loading: the truncation length, the prompts, the modules (``Normalize``), the
    output truncation and the parameters' dtype.
    """
    children = getattr(model, "named_children", None)
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return {
        "class": type(model).__name__,
        "modules": [type(module).__name__ for _, module in children()] if callable(children) else None,
        "max_seq_length": getattr(model, "max_seq_length", None),
        "prompts": dict(getattr(model, "prompts", None) or {}),
        "default_prompt_name": getattr(model, "default_prompt_name", None),
        "truncate_dim": getattr(model, "truncate_dim", None),
        "dtype": None if first is None else str(first.dtype),
    }


def encoder_runtime(model: Any) -> dict[str, Any]:
    """What runs ``model``'s forward pass: device, linear kernel (see :mod:`retrodistill.onednn_linear`), torch.

    ``linear_backend`` is what :func:`retrodistill.evaluate.retrieval.load_model` (or a teacher) chose;
    a model loaded any other way runs PyTorch's own kernels.
    """
    import torch

    backend = getattr(model, "retrodistill_linear_backend", None) or getattr(model, "linear_backend", None)
    device = getattr(model, "device", None)
    return {
        "device": str(device) if device is not None else "cpu",
        "linear_backend": backend if isinstance(backend, str) else "torch",
        "torch": torch.__version__,
    }


def cache_key(encoder: Mapping[str, Any], corpus_fingerprint: str, dtype: str = "float32") -> str:
    """The cache folder name: 32 hex digits of sha256 over encoder identity, corpus and dtype."""
    payload = {"version": VERSION, "encoder": encoder, "corpus": corpus_fingerprint, "dtype": dtype}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


class EmbeddingCache:
    """One corpus's embeddings under one encoder: a folder of shards (see the module docstring).

    Build it with :meth:`open` (creates or resumes) or :meth:`load` (an existing folder, to read).

    Example:
        >>> import numpy as np, tempfile
        >>> root = tempfile.mkdtemp()
        >>> cache = EmbeddingCache.open(root, {"id": "m"}, "sha256:c", documents=3, shard_size=2)
        >>> cache.missing_shards()
        [0, 1]
        >>> cache.write_shard(0, np.ones((2, 4), np.float32)); cache.write_shard(1, np.zeros((1, 4), np.float32))
        >>> cache.is_complete(), cache.dim, [len(s) for s in cache.iter_shards()]
        (True, 4, [2, 1])
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not a corpus-embedding cache (format {self.manifest.get('format')!r})")
        if self.manifest.get("version") != VERSION:
            raise ValueError(f"{self.path}: cache version {self.manifest.get('version')}, this code reads {VERSION}")
        self.documents = int(self.manifest["documents"])
        self.shard_size = int(self.manifest["shard_size"])
        self.dtype = str(self.manifest["dtype"])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EmbeddingCache:
        """An existing cache folder (``ROOT/KEY``)."""
        return cls(path)

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        encoder: Mapping[str, Any],
        corpus_fingerprint: str,
        documents: int,
        *,
        dtype: str = "float32",
        shard_size: int = DEFAULT_SHARD_SIZE,
    ) -> EmbeddingCache:
        """The cache of ``encoder`` × corpus under ``root``, created if absent, resumed if present.

        Args:
            root: the folder holding one sub-folder per key.
            encoder: what identifies the encoder (JSON-able): its id and weights' revision, and
                :func:`encoder_settings`.
            corpus_fingerprint: the corpus file's fingerprint (``collection.fingerprints["corpus"]``).
            documents: the number of documents in the corpus.
            dtype: ``"float32"`` or ``"float16"`` (half the disk; vectors rounded to fp16).
            shard_size: documents per shard for a new cache; an existing cache keeps its own.
        """
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        if documents < 1:
            raise ValueError("cannot cache the embeddings of an empty corpus")
        path = Path(root) / cache_key(encoder, corpus_fingerprint, dtype)
        if not (path / "manifest.json").is_file():
            write_manifest(
                path,
                {
                    "format": FORMAT,
                    "version": VERSION,
                    "encoder": dict(encoder),
                    "corpus": corpus_fingerprint,
                    "documents": documents,
                    "shard_size": shard_size,
                    "dtype": dtype,
                },
            )
        cache = cls(path)
        if cache.documents != documents or cache.manifest.get("corpus") != corpus_fingerprint:
            raise ValueError(
                f"{path} holds {cache.documents:,} documents of corpus {cache.manifest.get('corpus')}, "
                f"not {documents:,} of {corpus_fingerprint}; remove the folder to rebuild it"
            )
        if cache.shard_size != shard_size:
            logger.info("%s: resuming with its own shard size %d (asked %d)", path, cache.shard_size, shard_size)
        cache._remove_stale_temporaries()
        return cache

    def _remove_stale_temporaries(self, older_than_s: float = 600.0) -> None:
        """Delete half-written files killed writers left: their process is gone, or they are old.

        Ten minutes, not the hour of :data:`retrodistill.temporaries.STALE_AFTER_S`: a shard's file
        is written in one go after its encoding, in seconds.
        """
        for pattern in (".*.tmp", "shards/.*.tmp"):
            remove_stale_temporaries(self.path, pattern, older_than_s=older_than_s)

    @property
    def num_shards(self) -> int:
        return -(-self.documents // self.shard_size)

    def bounds(self, shard: int) -> tuple[int, int]:
        """The rows ``[start, stop)`` of the corpus that ``shard`` holds."""
        if not 0 <= shard < self.num_shards:
            raise IndexError(f"shard {shard} out of range (the cache has {self.num_shards})")
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.documents)

    def _files(self, shard: int) -> tuple[Path, Path]:
        stem = self.path / "shards" / f"{shard:06d}"
        return stem.with_suffix(".npy"), stem.with_suffix(".json")

    def _entry(self, shard: int) -> dict[str, Any] | None:
        """The shard's manifest entry if the shard is done (entry present, ``.npy`` of its size)."""
        array, entry = self._files(shard)
        if not entry.is_file():
            return None
        try:
            data: dict[str, Any] = json.loads(entry.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # cannot happen with atomic writes; re-encoding the shard is the safe answer
        start, stop = self.bounds(shard)
        if data.get("rows") != stop - start or not array.is_file() or array.stat().st_size != data.get("bytes"):
            return None
        return data

    def is_done(self, shard: int) -> bool:
        """Whether ``shard`` is stored (its entry exists and its ``.npy`` has the recorded size)."""
        return self._entry(shard) is not None

    def missing_shards(self) -> list[int]:
        """Shards not yet done, in order."""
        return [shard for shard in range(self.num_shards) if not self.is_done(shard)]

    def is_complete(self) -> bool:
        return not self.missing_shards()

    @property
    def dim(self) -> int | None:
        """The embedding dimension (``None`` until a shard is written)."""
        for shard in range(self.num_shards):
            entry = self._entry(shard)
            if entry is not None:
                return int(entry["dim"])
        return None

    def write_shard(
        self,
        shard: int,
        embeddings: np.ndarray,
        seconds: float | None = None,
        encoded_with: Mapping[str, Any] | None = None,
    ) -> None:
        """Store ``shard``'s embeddings (``(rows, d)``, corpus order), cast to the cache's dtype, atomically.

        ``encoded_with`` (:func:`encoder_runtime`) records what computed them: the kernels and device
        do not change the vectors beyond float rounding, so they are not part of the key, but a cache
        resumed on another machine may mix them and each shard says which it got.
        """
        import numpy as np

        start, stop = self.bounds(shard)
        matrix = np.ascontiguousarray(embeddings, dtype=self.dtype)
        if matrix.ndim != 2 or len(matrix) != stop - start:
            raise ValueError(f"shard {shard} needs shape ({stop - start}, d); got {tuple(matrix.shape)}")
        dim = self.dim
        if dim is not None and matrix.shape[1] != dim:
            raise ValueError(f"shard {shard} has dimension {matrix.shape[1]}; the cache holds {dim}")
        array, entry = self._files(shard)
        with writer_atomic_path(array) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, matrix)
        record = {
            "shard": shard,
            "start": start,
            "rows": stop - start,
            "dim": int(matrix.shape[1]),
            "dtype": self.dtype,
            "bytes": array.stat().st_size,
            "sha256": sha256_file(array),
            "seconds": None if seconds is None else round(seconds, 3),
            "encoded_with": dict(encoded_with) if encoded_with is not None else None,
        }
        with writer_atomic_path(entry) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    def read_shard(self, shard: int) -> np.ndarray:
        """``shard``'s embeddings, memory-mapped read-only, in the cache's dtype."""
        import numpy as np

        if not self.is_done(shard):
            raise FileNotFoundError(f"{self.path}: shard {shard} is not encoded yet")
        array: np.ndarray = np.load(self._files(shard)[0], mmap_mode="r")
        return array

    def iter_shards(self) -> Iterator[np.ndarray]:
        """Every shard, in order, memory-mapped (fails on the first missing one)."""
        for shard in range(self.num_shards):
            yield self.read_shard(shard)

    def verify(self) -> list[int]:
        """Shards whose ``.npy`` no longer matches its recorded sha256 (reads every byte)."""
        bad = []
        for shard in range(self.num_shards):
            entry = self._entry(shard)
            if entry is not None and sha256_file(self._files(shard)[0]) != entry["sha256"]:
                bad.append(shard)
        return bad
