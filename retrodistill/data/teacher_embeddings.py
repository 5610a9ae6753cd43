"""Teacher-embedding stores: the teacher's vector for every training query and document.

Layout::

    EMB/
      manifest.json         stage "embed-teacher", teacher (model, revision, similarity, ...), inputs
                            (corpus, queries fingerprints), dim, counts, files (name -> sha256), fingerprint
      queries.npy           float32 (Q, dim), row i is the query queries.ids.json[i]
      queries.ids.json      JSON list of the Q query ids
      documents.npy         float32 (D, dim), row i is the document documents.ids.json[i]
      documents.ids.json    JSON list of the D document ids

Vectors are the teacher's as it scores with them (``encode_query`` / ``encode_document``,
L2-normalised when its similarity is cosine). Every file is written atomically and the manifest
last, so a store with a manifest is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    matrices: dict[str, np.ndarray]  # side -> (n, dim) float32

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> TeacherEmbeddings:
        directory = Path(path)
        manifest = read_manifest(directory)
        if manifest.get("stage") != EMBEDDINGS_STAGE:
            raise ValueError(f"{directory} is not a teacher-embedding store (stage {manifest.get('stage')!r})")
        ids, matrices = {}, {}
        for side in _SIDES:
            ids[side] = json.loads((directory / f"{side}.ids.json").read_text(encoding="utf-8"))
            matrices[side] = np.load(directory / f"{side}.npy", allow_pickle=False)
            if len(ids[side]) != len(matrices[side]):
                raise ValueError(f"{directory / (side + '.npy')}: {len(matrices[side])} rows but {len(ids[side])} ids")
        return cls(directory, manifest, ids, matrices)

    @property
    def inputs(self) -> dict[str, str]:
        return dict(self.manifest.get("inputs", {}))

    def missing(self, side: str, ids: Sequence[str]) -> list[str]:
        known = set(self.ids[side])
        return [i for i in ids if i not in known]

    def vectors(self, side: str, ids: Sequence[str]) -> np.ndarray:
        """``(len(ids), dim)`` float32 rows for ``ids`` of ``side`` (``"queries"`` or ``"documents"``).

        Raises:
            ValueError: Naming the ids the store lacks and how to recompute it.
        """
        missing = self.missing(side, ids)
        if missing:
            raise ValueError(
                f"the teacher-embedding store {self.path} has no embedding for {len(missing)} {side} "
                f"(e.g. {', '.join(missing[:5])}); it was computed for other texts: point teacher_embeddings.path "
                "at a new folder (with teacher_embeddings.model) to compute a store for this run"
            )
        row = {i: r for r, i in enumerate(self.ids[side])}
        return np.asarray(self.matrices[side][[row[i] for i in ids]], dtype=np.float32)


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
    files: dict[str, str] = {}
    for side, ids, vectors in (("queries", query_ids, query_vectors), ("documents", doc_ids, doc_vectors)):
        with atomic_path(directory / f"{side}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, vectors, allow_pickle=False)
        with atomic_path(directory / f"{side}.ids.json") as tmp:
            tmp.write_text(json.dumps(ids), encoding="utf-8")
        for name in (f"{side}.npy", f"{side}.ids.json"):
            files[name] = sha256_file(directory / name)
    write_manifest(
        directory,
        {
            "stage": EMBEDDINGS_STAGE,
            "teacher": dict(teacher),
            "inputs": dict(inputs),
            "dim": int(doc_vectors.shape[1]),
            "counts": {"queries": len(query_ids), "documents": len(doc_ids)},
            "files": files,
            "fingerprint": sha256_strings(f"{name}={digest}" for name, digest in sorted(files.items())),
        },
    )
    return TeacherEmbeddings.open(directory)
