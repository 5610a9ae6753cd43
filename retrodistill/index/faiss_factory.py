"""Approximate inner-product search with any FAISS ``index_factory`` string, saved and loaded as a folder.

The string names the index as FAISS' own factory does (see the FAISS wiki, "The index factory"):

=========================  ==========================================================================
``IVF1024,Flat``           1,024 inverted lists (k-means cells), raw vectors: ``nprobe`` lists visited
``IVF1024,PQ32``           the same lists, vectors as 32-byte product-quantisation codes
``HNSW32,Flat``            a graph of 32 neighbours per node, raw vectors: ``efSearch`` candidates kept
``OPQ16,IVF256,PQ16``      a learnt rotation for 16 sub-vectors, then IVF with 16-byte PQ codes
``IVF1024,PQ32,RFlat``     IVF-PQ whose ``k_factor·k`` best are re-ranked exactly, on raw vectors kept beside
                           the codes (``IVF1024,PQ32,Refine(Flat)`` is the same index)
``Flat``                   exact search (the same results as ``faiss-flat-ip``, but persistable)
=========================  ==========================================================================

Scores are ``⟨q, d⟩`` (``METRIC_INNER_PRODUCT``), approximated by PQ codes where the string has them
(and exact again after a refinement, ``…,RFlat``).

Training: indexes that need it (IVF, PQ, OPQ) are trained once, on a seeded uniform sample of
``min(train_size, n)`` of every vector added, when first searched or saved: until then ``add`` keeps
the vectors (so, while building, memory holds the raw vectors once besides the index). FAISS' k-means
wants at least 39 training vectors per list: fewer than ``39 × nlist`` logs a warning, fewer than
``nlist`` is a ``ValueError``; so is any other training failure (too few vectors for PQ's 256
centroids), with FAISS' complaint in one line. The factory turns on polysemous training for PQ codes;
it is turned off here: it only reorders the codes for polysemous (Hamming) filtering, which this
backend never uses, so results are the same, and ``IVF…,PQ96`` trains in seconds instead of minutes.
OPQ's rotation is trained with 256 centroids per sub-vector whatever the codes, and slowly (13 s for
1,200 vectors of dimension 384 on one busy core; its training time grows with ``train_size``).

Search parameters, set with ``faiss.ParameterSpace``; ``None`` keeps FAISS' default; a parameter the
index lacks is a ``ValueError``:

=============  ==========================================================================================
``nprobe``     IVF: lists visited (FAISS' default 1); ``nprobe = nlist`` visits every list, which on
               ``IVF…,Flat`` is exact search
``efSearch``   HNSW: candidates kept while walking the graph (FAISS' default 16)
``k_factor``   a refinement stage (``…,RFlat``): the inner index returns ``k_factor·k`` candidates, re-ranked
               by their exact score (FAISS' ``k_factor_rf``, default 1: the inner index's top ``k``,
               re-scored, so only their order changes). Scores are then exact ``⟨q, d⟩``; recall is the
               share of the exact top ``k`` among those candidates
=============  ==========================================================================================

One build parameter besides the string and the training sample: ``efConstruction``, HNSW's candidate list
while the graph is built (FAISS' default 40; larger: a better graph, a slower build), part of a saved
index's identity like ``factory``.

On a refined index ``nprobe`` / ``efSearch`` reach the inner index as before. A refinement keeps the raw
vectors besides the codes: its memory is ``IVF…,Flat``'s plus the codes'.

``k``: clamped to ``len(index)`` as in ``faiss-flat-ip``. Unlike exact search, an approximate one can
find fewer than ``k`` documents for a query (IVF with a small ``nprobe`` visits lists holding fewer
than ``k``): those places hold id ``-1`` and score ``-3.4e38``, FAISS' padding, always at the end of
the row; :func:`retrodistill.evaluate.retrieval.encode_and_search` drops them.

GPU: as ``faiss-flat-ip`` (``use_gpu=None`` uses every GPU FAISS sees, ``True`` requires one,
``False`` never), the index trained and filled on the CPU and then sharded over the GPUs
(``faiss.index_cpu_to_all_gpus``) for search; the CPU copy stays in host memory for :meth:`save`.
HNSW has no GPU version in FAISS: it stays on the CPU, with a warning when GPUs were asked for.

On disk (:meth:`FaissFactory.save`, :meth:`FaissFactory.load`)::

    DIR/index.faiss      faiss.write_index of the trained, filled CPU index
    DIR/manifest.json    {"stage": "faiss-index", "format", "version", "backend": "faiss-factory",
                          "factory", "search": {"nprobe", "efSearch", "k_factor"}, "efConstruction",
                          "train_size", "seed",
                          "trained_on", "vectors", "dim", "bytes", "encoder", "corpus", ...}

``encoder`` (model id, revision and settings, as the corpus-embedding cache records them) and
``corpus`` (the corpus fingerprint) are what the caller gives to :meth:`~FaissFactory.save`;
:meth:`~FaissFactory.load` refuses an index built for another model or corpus. The folder is staged
beside its target and renamed into place (:func:`retrodistill.artifacts.publish_dir`), so a reader
sees a complete index or none.

Example:
    >>> import numpy as np
    >>> docs = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    >>> docs /= np.linalg.norm(docs, axis=1, keepdims=True)  # unit length: inner product is cosine
    >>> index = FaissFactory("IVF4,Flat", nprobe=4, use_gpu=False)  # 4 of 4 lists: exact
    >>> index.add(docs)
    >>> scores, ids = index.search(docs[:2], k=3)
    >>> ids[:, 0].tolist()  # each vector's best match is itself
    [0, 1]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.index.base import INDEXES, DenseIndex, check_embeddings
from retrodistill.index.faiss_flat import GPU_MAX_K, import_faiss, search_in_batches, wants_gpus

logger = logging.getLogger(__name__)

FORMAT = "retrodistill.faiss-index"
VERSION = 1
INDEX_FILE = "index.faiss"
#: What FAISS' k-means asks for per centroid before it warns ("please provide at least …").
MIN_POINTS_PER_CENTROID = 39
#: The parameters that decide what is trained and stored; the others only change how it is searched.
BUILD_PARAMS = ("factory", "efConstruction", "train_size", "seed")
#: Each search parameter: its name in ``faiss.ParameterSpace`` and the kind of index that has it.
SEARCH_PARAMS = {
    "nprobe": ("nprobe", "IVF indexes"),
    "efSearch": ("efSearch", "HNSW indexes"),
    "k_factor": ("k_factor_rf", "refined indexes (…,RFlat)"),
}


def faiss_complaint(err: BaseException) -> str:
    """The reason in a FAISS ``RuntimeError``, in one line (its message holds the C++ location too)."""
    lines = str(err).strip().splitlines() or [""]
    text = lines[0]
    if "Error: " in text:
        text = text.split("Error: ", 1)[1]
    if text.startswith("'") and "' failed: " in text:  # "'nx >= k' failed: Number of training points …"
        text = text.split("' failed: ", 1)[1]
    return text.strip()


@INDEXES.register("faiss-factory")
class FaissFactory(DenseIndex):
    """Any FAISS ``index_factory`` index, inner product, trained on a sample of what is added.

    Args:
        factory: the FAISS factory string (see the module docstring).
        dim: the embedding dimension, when known: the string is then checked against it at once
            (``PQ32`` needs ``dim`` divisible by 32), before anything is encoded. Otherwise the
            first ``add`` sets it.
        nprobe: IVF lists visited per query; ``None`` keeps FAISS' default (1).
        efSearch: HNSW candidate-list size; ``None`` keeps FAISS' default (16). Spelt as FAISS spells it.
        efConstruction: HNSW candidate-list size while the graph is built (a build parameter: a saved
            index keeps its own); ``None`` keeps FAISS' default (40). Larger builds a better graph, slower.
        k_factor: a refinement (``…,RFlat``) re-ranks ``k_factor·k`` candidates exactly; ``None`` keeps
            FAISS' default (1).
        train_size: at most this many added vectors (a uniform sample, drawn with ``seed``) train the index.
        seed: the sampling seed (FAISS' k-means has its own fixed seed).
        use_gpu: ``None`` uses all GPUs when FAISS sees any, ``True`` requires one, ``False`` never.
        query_batch_size: queries searched per FAISS call.

    Raises:
        ValueError: FAISS rejects ``factory`` (one line naming it and FAISS' reason), or the index has
            no such search parameter, or a number is below 1.
    """

    def __init__(
        self,
        factory: str = "IVF1024,Flat",
        dim: int | None = None,
        nprobe: int | None = None,
        efSearch: int | None = None,  # FAISS' own name, as its ParameterSpace takes it
        k_factor: int | None = None,
        efConstruction: int | None = None,
        train_size: int = 100_000,
        seed: int = 0,
        use_gpu: bool | None = None,
        query_batch_size: int = 1024,
    ) -> None:
        numbers = {"nprobe": nprobe, "efSearch": efSearch, "k_factor": k_factor, "efConstruction": efConstruction}
        for name, value in (*numbers.items(), ("dim", dim)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name, value in (("train_size", train_size), ("query_batch_size", query_batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.factory = factory
        self.nprobe = nprobe
        self.efSearch = efSearch
        self.k_factor = k_factor
        self.efConstruction = efConstruction
        self.train_size = train_size
        self.seed = seed
        self.use_gpu = use_gpu
        self.query_batch_size = query_batch_size
        self._faiss = import_faiss()
        gpus = wants_gpus(self._faiss, use_gpu)
        # Dimension 0 checks the string's syntax and its search parameters; a real one checks the rest.
        probe = self._new_index(dim or 0)
        self._set_search_params(probe)
        self.nlist: int | None = self._nlist(probe)
        self.is_hnsw = self._is_hnsw(probe)
        self.on_gpu = gpus and not self.is_hnsw
        if gpus and self.is_hnsw:
            logger.warning("%s: FAISS has no GPU version of HNSW; searching on the CPU", factory)
        self.dim = dim
        self._cpu: Any = probe if dim else None  # trained and filled here; searched on the CPU
        self._gpu: Any = None  # the CPU index sharded over the GPUs, made on first search
        self._pending: list[np.ndarray] = []  # vectors added before training, in add order
        self.trained_on = 0

    def _new_index(self, dim: int) -> Any:
        try:
            index = self._faiss.index_factory(dim, self.factory, self._faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            where = f" for dimension {dim}" if dim else ""
            raise ValueError(
                f"FAISS rejects the index factory string {self.factory!r}{where}: {faiss_complaint(err)}"
            ) from None
        inner = self._core(index)
        if self.efConstruction is not None:
            if not isinstance(inner, self._faiss.IndexHNSW):
                raise ValueError(f"efConstruction is a build parameter of HNSW indexes; {self.factory!r} has none")
            inner.hnsw.efConstruction = self.efConstruction
        if getattr(inner, "do_polysemous_training", False):
            # Polysemous training only reorders PQ centroids for Hamming filtering, which is never switched
            # on here: ADC scores, and so results, are the same without it, and training is 10-100x faster.
            inner.do_polysemous_training = False
        return index

    def _set_search_params(self, index: Any, on_gpu: bool = False) -> None:
        space = (getattr(self._faiss, "GpuParameterSpace", None) if on_gpu else None) or self._faiss.ParameterSpace
        space = space()
        for name, (faiss_name, kind) in SEARCH_PARAMS.items():
            value = getattr(self, name)
            if value is None:
                continue
            try:
                space.set_index_parameter(index, faiss_name, value)
            except RuntimeError:
                raise ValueError(f"{name} is a search parameter of {kind}; {self.factory!r} has none") from None

    def set_search_params(
        self, nprobe: int | None = None, efSearch: int | None = None, k_factor: int | None = None
    ) -> None:
        """Search with other ``nprobe`` / ``efSearch`` / ``k_factor`` from now on (``None`` keeps one as it is).

        Nothing is rebuilt.
        """
        given = {"nprobe": nprobe, "efSearch": efSearch, "k_factor": k_factor}
        for name, value in given.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name, value in given.items():
            if value is not None:
                setattr(self, name, value)
        if self._cpu is not None:
            self._set_search_params(self._cpu)
        if self._gpu is not None:
            self._set_search_params(self._gpu, on_gpu=True)

    def _nlist(self, index: Any) -> int | None:
        try:
            return int(self._faiss.extract_index_ivf(index).nlist)
        except RuntimeError:
            return None

    def _core(self, index: Any) -> Any:
        """The index that holds the codes, inside a pre-transform (``OPQ16,…``) or a refinement (``…,RFlat``)."""
        inner = self._faiss.downcast_index(index)
        while isinstance(inner, (self._faiss.IndexPreTransform, self._faiss.IndexRefine)):
            wrapped = inner.index if isinstance(inner, self._faiss.IndexPreTransform) else inner.base_index
            inner = self._faiss.downcast_index(wrapped)
        return inner

    def _is_hnsw(self, index: Any) -> bool:
        return isinstance(self._core(index), self._faiss.IndexHNSW)

    def add(self, embeddings: np.ndarray) -> None:
        matrix = check_embeddings(embeddings, "embeddings", self.dim)
        if self._cpu is None:
            self.dim = int(matrix.shape[1])
            self._cpu = self._new_index(self.dim)
            self._set_search_params(self._cpu)
        self._gpu = None  # searched from a fresh copy next time
        if self._cpu.is_trained:
            self._cpu.add(matrix)
        else:
            self._pending.append(np.array(matrix, copy=True))  # the caller's array may be a memory map

    def train(self, embeddings: np.ndarray) -> None:
        """Train the (empty) index on ``embeddings`` (float32 ``(n, d)``); :meth:`search` calls it when needed.

        Raises:
            ValueError: fewer vectors than IVF lists, or FAISS cannot train on them (its reason in one line).
        """
        matrix = check_embeddings(embeddings, "training vectors", self.dim)
        if self._cpu is None:
            self.dim = int(matrix.shape[1])
            self._cpu = self._new_index(self.dim)
            self._set_search_params(self._cpu)
        if self.nlist is not None:
            if len(matrix) < self.nlist:
                raise ValueError(
                    f"{self.factory!r} has {self.nlist:,} lists but only {len(matrix):,} vectors to train them on: "
                    "choose fewer lists (IVF…) or index more documents"
                )
            if len(matrix) < MIN_POINTS_PER_CENTROID * self.nlist:
                logger.warning(
                    "%s: %d training vectors for %d lists; FAISS' k-means wants at least %d (39 per list)",
                    self.factory,
                    len(matrix),
                    self.nlist,
                    MIN_POINTS_PER_CENTROID * self.nlist,
                )
        try:
            self._cpu.train(matrix)
        except RuntimeError as err:
            raise ValueError(
                f"FAISS could not train {self.factory!r} on {len(matrix):,} vectors: {faiss_complaint(err)}"
            ) from None
        self.trained_on = len(matrix)

    def _ensure_trained(self) -> None:
        """Train on a seeded sample of the pending vectors, then add them (and let them go)."""
        if not self._pending:
            return
        total = sum(len(part) for part in self._pending)
        rows = np.random.default_rng(self.seed).choice(total, size=min(self.train_size, total), replace=False)
        rows.sort()  # in add order: the sample does not depend on how the vectors were split into adds
        starts = np.cumsum([0] + [len(part) for part in self._pending])
        sample = np.concatenate(
            [
                self._pending[i][rows[(rows >= starts[i]) & (rows < starts[i + 1])] - starts[i]]
                for i in range(len(self._pending))
            ]
        )
        self.train(sample)
        del sample
        while self._pending:
            self._cpu.add(self._pending.pop(0))

    def _searcher(self) -> Any:
        self._ensure_trained()
        if not self.on_gpu:
            return self._cpu
        if self._gpu is None:
            options = self._faiss.GpuMultipleClonerOptions()
            options.shard = True
            try:
                self._gpu = self._faiss.index_cpu_to_all_gpus(self._cpu, co=options)
            except RuntimeError as err:
                raise ValueError(
                    f"FAISS cannot put {self.factory!r} on the GPU ({faiss_complaint(err)}); pass use_gpu=False"
                ) from None
            self._set_search_params(self._gpu, on_gpu=True)
        return self._gpu

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        matrix = check_embeddings(queries, "queries", self.dim)
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(matrix), 0), np.float32), np.zeros((len(matrix), 0), np.int64)
        index = self._searcher()
        if self.on_gpu and k > GPU_MAX_K:
            raise ValueError(f"FAISS on GPU returns at most k={GPU_MAX_K}; got k={k} (pass use_gpu=False)")
        return search_in_batches(matrix, k, self.query_batch_size, index.search)

    def __len__(self) -> int:
        stored = 0 if self._cpu is None else int(self._cpu.ntotal)
        return stored + sum(len(part) for part in self._pending)

    def params(self) -> dict[str, Any]:
        """The constructor parameters that decide what this index returns (for manifests and cache keys)."""
        return {
            "factory": self.factory,
            "nprobe": self.nprobe,
            "efSearch": self.efSearch,
            "k_factor": self.k_factor,
            "efConstruction": self.efConstruction,
            "train_size": self.train_size,
            "seed": self.seed,
        }

    def save(self, directory: str | os.PathLike[str], manifest_fields: Mapping[str, Any] | None = None) -> Path:
        """Write the index and its manifest into ``directory`` (absent or empty), published atomically.

        Trains first when needed. ``manifest_fields`` (e.g. ``{"encoder": …, "corpus": …}``) are
        recorded beside the index's own fields, which they may not replace.

        Raises:
            FileExistsError: ``directory`` exists and is not empty.
        """
        from retrodistill.artifacts import atomic_path, publish_dir, write_manifest
        from retrodistill.outputs import staging_dir

        target = Path(directory)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise FileExistsError(f"{target} exists and is not empty; remove it to save an index there")
        if self._cpu is None:
            raise ValueError("cannot save an empty index")
        self._ensure_trained()
        fields = {
            "stage": "faiss-index",
            "format": FORMAT,
            "version": VERSION,
            "backend": "faiss-factory",
            "factory": self.factory,
            "search": {"nprobe": self.nprobe, "efSearch": self.efSearch, "k_factor": self.k_factor},
            "efConstruction": self.efConstruction,
            "train_size": self.train_size,
            "seed": self.seed,
            "trained_on": self.trained_on,
            "vectors": len(self),
            "dim": self.dim,
        }
        clash = sorted(set(fields) & set(manifest_fields or {}))
        if clash:
            raise ValueError(f"manifest_fields may not set {', '.join(clash)}: the index records them itself")
        staged = staging_dir(target)
        try:
            with atomic_path(staged / INDEX_FILE) as tmp:
                self._faiss.write_index(self._cpu, str(tmp))
            fields["bytes"] = (staged / INDEX_FILE).stat().st_size
            write_manifest(staged, {**fields, **dict(manifest_fields or {})})
            publish_dir(staged, target)
        except BaseException:
            import shutil

            shutil.rmtree(staged, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        params: Mapping[str, Any] | None = None,
        built_for: Mapping[str, Any] | None = None,
    ) -> FaissFactory:
        """The index saved in ``directory``, checked against what the caller is about to search with.

        Args:
            directory: a folder written by :meth:`save`.
            params: constructor parameters, as the caller would build the index: those that decide
                what is stored (``factory``, ``efConstruction``, ``train_size``, ``seed``) must equal the
                saved ones; the search ones (``nprobe``, ``efSearch``, ``k_factor``, ``use_gpu``,
                ``query_batch_size``) apply, an absent one at its default. ``None``: the saved factory,
                ``efConstruction`` and search parameters.
            built_for: what the index must have been built for, e.g. ``{"encoder": …, "corpus": …}``:
                each key must equal the manifest's.

        Raises:
            FileNotFoundError: ``directory`` holds no saved index.
            ValueError: one line naming both values, when the index was built for another model,
                corpus or factory.
        """
        from retrodistill.artifacts import read_manifest

        target = Path(directory)
        manifest = read_manifest(target)
        if manifest.get("format") != FORMAT or not (target / INDEX_FILE).is_file():
            raise FileNotFoundError(f"{target}: not a FAISS index saved by retrodistill ({FORMAT})")
        if manifest.get("version") != VERSION:
            raise ValueError(f"{target}: index format version {manifest.get('version')}, this code reads {VERSION}")
        check_built_for(target, manifest, built_for or {})
        if params is None:
            params = {
                "factory": manifest["factory"],
                "efConstruction": manifest.get("efConstruction"),
                **manifest.get("search", {}),
            }
        index = cls(**{**dict(params), "dim": int(manifest["dim"])})
        requested = {name: getattr(index, name) for name in BUILD_PARAMS}
        saved = {name: manifest.get(name) for name in BUILD_PARAMS}
        if requested != saved:
            differ = [name for name in BUILD_PARAMS if requested[name] != saved[name]]
            raise ValueError(
                f"{target}: index built with {', '.join(f'{n}={saved[n]!r}' for n in differ)}, not "
                f"{', '.join(f'{n}={requested[n]!r}' for n in differ)}; remove it to rebuild, or ask for those"
            )
        stored = index._faiss.read_index(str(target / INDEX_FILE))
        if int(stored.ntotal) != int(manifest["vectors"]) or int(stored.d) != index.dim:
            raise ValueError(
                f"{target}/{INDEX_FILE} holds {int(stored.ntotal):,} vectors of dimension {int(stored.d)}, "
                f"its manifest says {manifest['vectors']:,} of {index.dim}; remove the folder to rebuild"
            )
        index._set_search_params(stored)
        index._cpu, index.trained_on = stored, int(manifest.get("trained_on", 0))
        return index


def describe_encoder(encoder: Any) -> str:
    """``ID@REVISION`` of an encoder identity (``{"id", "revision", "settings"}``), or its repr."""
    if isinstance(encoder, Mapping) and "id" in encoder:
        return f"{encoder['id']}@{encoder.get('revision', '?')}"
    return repr(encoder)


def check_built_for(directory: Path, manifest: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse (one line, both values named) an index whose ``encoder`` or ``corpus`` is not ``expected``'s.

    Other keys of ``expected`` are compared too, and named the same way.
    """
    differ = [key for key in expected if manifest.get(key) != expected[key]]
    if not differ:
        return
    if "encoder" in differ or "corpus" in differ:
        built_model, given_model = describe_encoder(manifest.get("encoder")), describe_encoder(expected.get("encoder"))
        note = " (same weights, other encoder settings)" if "encoder" in differ and built_model == given_model else ""
        raise ValueError(
            f"{directory}: index built for model {built_model} / corpus {manifest.get('corpus')}, not "
            f"{given_model} / {expected.get('corpus')}{note}; remove it or choose another --index-dir"
        )
    shown = ", ".join(f"{key}={manifest.get(key)!r}, not {expected[key]!r}" for key in differ)
    raise ValueError(f"{directory}: index built with {shown}; remove it or choose another --index-dir")
