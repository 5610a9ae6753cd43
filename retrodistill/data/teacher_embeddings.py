"""Teacher-embedding stores: the teacher's vector for every training query and document.

Layout::

    EMB/
      manifest.json         stage "embed-teacher", teacher (model, revision, similarity, ...), inputs
                            (corpus, queries fingerprints), dim, counts, files (name -> sha256), fingerprint;
                            from the stage also config, corpus_embeddings (cache key, shards encoded), wall_time_s
      queries.npy           float32 (Q, dim), row i is the query queries.ids.json[i]
      queries.ids.json      JSON list of the Q query ids
      documents.npy         float32 (D, dim), row i is the document documents.ids.json[i]
      documents.ids.json    JSON list of the D document ids

Vectors are the teacher's as it scores with them (``encode_query`` / ``encode_document``,
L2-normalised when its similarity is cosine). Ids are sorted. Every file is written atomically and
the manifest last, so a store with a manifest is complete. ``fingerprint`` covers the four data files
only, so identical ids and vectors give the same fingerprint whatever wrote them.

``retrodistill embed-teacher`` (:mod:`retrodistill.stages.embed_teacher`) writes stores through
:func:`side_writer` (memory-mapped, for millions of rows); :func:`precompute_teacher_embeddings` is
the in-memory path for small sets and test encoders.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retrodistill.artifacts import atomic_path, read_manifest, sha256_file, sha256_strings, write_manifest

EMBEDDINGS_STAGE = "embed-teacher"
_SIDES = ("queries", "documents")


class TextEncoder(Protocol):
    """What :func:`precompute_teacher_embeddings` needs, e.g. ``CachedTeacherEncoder(BiEncoderTeacher(...))``."""

    def encode_query(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray: ...

    def encode_document(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray: ...


@dataclass
class TeacherEmbeddings:
    """A complete teacher-embedding store, read back (layout in the module docstring)."""

    path: Path
    manifest: dict[str, Any]
    ids: dict[str, list[str]]  # side -> ids
    matrices: dict[str, np.ndarray]  # side -> (n, dim) float32, memory-mapped when opened
    _id_arrays: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # side -> pa.StringArray

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> TeacherEmbeddings:
        directory = Path(path)
        manifest = read_manifest(directory)
        if manifest.get("stage") != EMBEDDINGS_STAGE:
            raise ValueError(f"{directory} is not a teacher-embedding store (stage {manifest.get('stage')!r})")
        ids, matrices = {}, {}
        for side in _SIDES:
            ids[side] = json.loads((directory / f"{side}.ids.json").read_text(encoding="utf-8"))
            # Memory-mapped: a store of the whole MS MARCO corpus is ~13 GB; rows are read when asked for.
            matrices[side] = np.load(directory / f"{side}.npy", mmap_mode="r", allow_pickle=False)
            if len(ids[side]) != len(matrices[side]):
                raise ValueError(f"{directory / (side + '.npy')}: {len(matrices[side])} rows but {len(ids[side])} ids")
        return cls(directory, manifest, ids, matrices)

    @property
    def inputs(self) -> dict[str, str]:
        return dict(self.manifest.get("inputs", {}))

    def rows(self, side: str, ids: Sequence[str]) -> np.ndarray:
        """Row of each of ``ids`` in ``side``'s matrix (int64), ``-1`` where the store lacks it.

        A vectorised hash join (Arrow ``index_in``), so a store of millions of ids builds no dict of them.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        if side not in self._id_arrays:
            self._id_arrays[side] = pa.array(self.ids[side], type=pa.string())
        found = pc.index_in(pa.array(list(ids), type=pa.string()), value_set=self._id_arrays[side])
        return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)

    def missing(self, side: str, ids: Sequence[str]) -> list[str]:
        ids = list(ids)
        return [ids[i] for i in np.flatnonzero(self.rows(side, ids) < 0).tolist()]

    def vectors(self, side: str, ids: Sequence[str]) -> np.ndarray:
        """``(len(ids), dim)`` float32 rows for ``ids`` of ``side`` (``"queries"`` or ``"documents"``).

        Raises:
            ValueError: Naming the ids the store lacks and how to recompute it.
        """
        ids = list(ids)
        rows = self.rows(side, ids)
        if (rows < 0).any():
            missing = [ids[i] for i in np.flatnonzero(rows < 0).tolist()]
            raise ValueError(
                f"the teacher-embedding store {self.path} has no embedding for {len(missing)} {side} "
                f"(e.g. {', '.join(missing[:5])}); it was computed for other texts: point teacher_embeddings.path "
                "at a new folder (with teacher_embeddings.model) to compute a store for this run"
            )
        return np.asarray(self.matrices[side][rows], dtype=np.float32)


@contextlib.contextmanager
def side_writer(directory: str | os.PathLike[str], side: str, ids: Sequence[str], dim: int) -> Iterator[np.ndarray]:
    """Write one side of a store: yields a ``(len(ids), dim)`` float32 array on disk to fill in.

    The array is a memory map over a temporary ``.npy`` (byte-identical to ``np.save`` of the same
    matrix), so a side of millions of rows is written without holding it in memory; it and its
    ``.ids.json`` are renamed into place when the block succeeds.
    """
    if side not in _SIDES:
        raise ValueError(f"side must be one of {', '.join(_SIDES)}, got {side!r}")
    directory = Path(directory)
    with atomic_path(directory / f"{side}.npy") as tmp:
        matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(ids), dim))
        yield matrix
        matrix.flush()
        del matrix  # unmap before the rename
    with atomic_path(directory / f"{side}.ids.json") as tmp:
        tmp.write_text(json.dumps(list(ids)), encoding="utf-8")


def write_store_manifest(
    directory: str | os.PathLike[str],
    *,
    teacher: Mapping[str, Any],
    inputs: Mapping[str, str],
    dim: int,
    extra: Mapping[str, Any] | None = None,
) -> TeacherEmbeddings:
    """Fingerprint both sides :func:`side_writer` wrote and write the manifest last; return the store.

    The fingerprint covers the files only (sha256 of each), so identical vectors and ids give the
    same fingerprint whatever wrote them; ``extra`` adds provenance (config, cache, wall time).
    """
    directory = Path(directory)
    files = {name: sha256_file(directory / name) for side in _SIDES for name in (f"{side}.npy", f"{side}.ids.json")}
    counts = {side: len(json.loads((directory / f"{side}.ids.json").read_text(encoding="utf-8"))) for side in _SIDES}
    write_manifest(
        directory,
        {
            "stage": EMBEDDINGS_STAGE,
            "teacher": dict(teacher),
            "inputs": dict(inputs),
            "dim": int(dim),
            "counts": counts,
            "files": files,
            "fingerprint": sha256_strings(f"{name}={digest}" for name, digest in sorted(files.items())),
            **dict(extra or {}),
        },
    )
    return TeacherEmbeddings.open(directory)


def precompute_teacher_embeddings(
    out: str | os.PathLike[str],
    encoder: TextEncoder,
    queries: Mapping[str, str],
    documents: Mapping[str, str],
    *,
    teacher: Mapping[str, Any],
    inputs: Mapping[str, str],
    show_progress: bool = False,
) -> TeacherEmbeddings:
    """Encode ``queries`` and ``documents`` (id -> text) with ``encoder`` and write a store to ``out``.

    The in-memory path, for small sets and test encoders; the ``embed-teacher`` stage
    (:mod:`retrodistill.stages.embed_teacher`) streams documents through the corpus-embedding cache.

    Args:
        out: The store directory (created; an existing manifest is replaced last).
        encoder: Encodes queries and documents as the teacher scores with them.
        queries: The queries to embed, id -> text (may be empty, e.g. for the corpus stage).
        documents: The documents to embed, id -> text (at least one).
        teacher: The teacher's description for the manifest (``BiEncoderTeacher.describe()``).
        inputs: Fingerprints of the collection the texts come from (``corpus``, ``queries``).
        show_progress: Show the encoder's progress bars.

    Returns:
        The store, read back.
    """
    if not documents:
        raise ValueError("precompute_teacher_embeddings: no documents to embed")
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    doc_ids = sorted(documents)
    doc_vectors = np.asarray(
        encoder.encode_document([documents[d] for d in doc_ids], show_progress_bar=show_progress), dtype=np.float32
    )
    query_ids = sorted(queries)
    if query_ids:
        query_vectors = np.asarray(
            encoder.encode_query([queries[q] for q in query_ids], show_progress_bar=show_progress), dtype=np.float32
        )
    else:
        query_vectors = np.zeros((0, doc_vectors.shape[1]), dtype=np.float32)
    dim = int(doc_vectors.shape[1])
    for side, ids, vectors in (("queries", query_ids, query_vectors), ("documents", doc_ids, doc_vectors)):
        with side_writer(directory, side, ids, dim) as matrix:
            matrix[:] = vectors
    return write_store_manifest(directory, teacher=teacher, inputs=inputs, dim=dim)
