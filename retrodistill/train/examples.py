"""Training examples for distillation: a query, 1 + N documents and the teacher's data for them.

For every judged positive of a query and every epoch, N negatives are drawn (without replacement,
seeded) from the query's negatives ranked within ``negative_pool`` (or unranked: judged non-relevant
documents and triples-file negatives); column 0 is the positive. Drawing afresh each epoch shows
the student more of the teacher's judgments.

A dataset's ``label`` column takes one of two layouts (see :mod:`retrodistill.train.st_loss`):

* **scores** (:meth:`Examples.to_columns`): the teacher's ``1 + N`` float scores per row: all a
  score loss needs.
* **ids** (:meth:`Examples.to_id_columns`): ``2 + N`` integer row numbers per row, the query's and
  each document's, into a :class:`TeacherTable` that the adapter holds. The ids travel in the label
  because sentence-transformers' collator tokenizes every other column as text. Losses that need
  the teacher beyond the row's own documents use it: the teacher's scores of a query against the
  other rows' documents (``in-batch-kl``) and stored teacher embeddings (``embedding``).

Teacher embeddings are precomputed once into a store (:func:`precompute_teacher_embeddings`)::

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
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from retrodistill.artifacts import atomic_path, read_manifest, sha256_file, sha256_strings, write_manifest
from retrodistill.data.candidates import CandidateSet
from retrodistill.data.collections import Collection

if TYPE_CHECKING:
    from retrodistill.data.pair_store import PairStore

EMBEDDINGS_STAGE = "embed-teacher"
_SIDES = ("queries", "documents")


@dataclass
class Examples:
    query: list[str] = field(default_factory=list)
    docs: list[list[str]] = field(default_factory=list)  # (n_examples, 1 + N)
    scores: list[list[float]] = field(default_factory=list)  # (n_examples, 1 + N); empty without a teacher
    query_ids: list[str] = field(default_factory=list)
    doc_ids: list[list[str]] = field(default_factory=list)  # (n_examples, 1 + N)
    skipped_queries: dict[str, int] = field(default_factory=dict)  # reason -> count

    def __len__(self) -> int:
        return len(self.query)

    def text_columns(self) -> dict[str, list[object]]:
        """The text columns ``query``, ``doc_0`` … ``doc_N``."""
        columns: dict[str, list[object]] = {"query": list(self.query)}
        width = len(self.docs[0]) if self.docs else 0
        for j in range(width):
            columns[f"doc_{j}"] = [row[j] for row in self.docs]
        return columns

    def to_columns(self) -> dict[str, list[object]]:
        """Columns ``query``, ``doc_0`` … ``doc_N``, ``label`` (the 1 + N teacher scores; absent without)."""
        columns = self.text_columns()
        if self.scores:
            columns["label"] = [list(row) for row in self.scores]
        return columns

    def to_id_columns(self, table: TeacherTable) -> dict[str, list[object]]:
        """Columns ``query``, ``doc_0`` … ``doc_N``, ``label`` = ``[query_row, doc_row_0, …, doc_row_N]``."""
        columns = self.text_columns()
        query_row, doc_row = table.query_rows(), table.doc_rows()
        columns["label"] = [
            [query_row[qid], *(doc_row[d] for d in docs)]
            for qid, docs in zip(self.query_ids, self.doc_ids, strict=True)
        ]
        return columns


def build_examples(
    collection: Collection,
    candidates: CandidateSet,
    teacher_scores: Mapping[tuple[str, str], float] | None,
    *,
    negatives: int,
    negative_pool: int,
    epochs: int,
    seed: int,
) -> Examples:
    """Sample the examples; ``teacher_scores=None`` (a teacher-free loss) leaves ``scores`` empty.

    Raises:
        ValueError: If ``negatives < 1`` or the teacher has no score for a sampled pair.
    """
    if negatives < 1:
        raise ValueError(f"negatives must be at least 1, got {negatives}")
    rng = random.Random(seed)
    out = Examples()
    skipped: dict[str, int] = {}
    grouped = candidates.by_query()
    for epoch in range(epochs):
        for qid in sorted(grouped):
            if qid not in collection.queries:
                if epoch == 0:
                    skipped["not in this split"] = skipped.get("not in this split", 0) + 1
                continue
            rows = grouped[qid]
            positives = [c.doc_id for c in rows if c.label > 0]
            # rank 0: a judged non-relevant or triples-file negative, which no miner ranked
            pool = [c.doc_id for c in rows if c.label <= 0 and c.rank <= negative_pool]
            if not positives:
                if epoch == 0:
                    skipped["no positive"] = skipped.get("no positive", 0) + 1
                continue
            if len(pool) < negatives:
                if epoch == 0:
                    skipped[f"fewer than {negatives} negatives"] = (
                        skipped.get(f"fewer than {negatives} negatives", 0) + 1
                    )
                continue
            for pos in positives:
                docs = [pos, *rng.sample(pool, negatives)]
                if teacher_scores is not None:
                    missing = [d for d in docs if (qid, d) not in teacher_scores]
                    if missing:
                        raise ValueError(
                            f"the teacher-score store has no score for query {qid!r} and document(s) "
                            f"{', '.join(missing[:5])}: it was not scored from these candidates"
                        )
                    out.scores.append([float(teacher_scores[qid, d]) for d in docs])
                out.query.append(collection.queries[qid])
                out.docs.append([collection.doc_text(d) for d in docs])
                out.query_ids.append(qid)
                out.doc_ids.append(docs)
    out.skipped_queries = skipped
    return out


def sample_corpus(collection: Collection, max_documents: int | None, seed: int) -> list[str]:
    """The document ids of the ``corpus`` stage: all of them sorted, or ``max_documents`` drawn (seeded)."""
    ids = sorted(collection.corpus)
    if max_documents is not None:
        if max_documents < 1:
            raise ValueError(f"corpus_documents must be at least 1, got {max_documents}")
        if max_documents < len(ids):
            ids = sorted(random.Random(seed).sample(ids, max_documents))
    return ids


def corpus_columns(
    collection: Collection, doc_ids: Sequence[str], table: TeacherTable, epochs: int
) -> dict[str, list[object]]:
    """The ``corpus`` stage's dataset: one text column ``document`` and ``label`` = ``[doc_row]``.

    Each document appears once per epoch; the trainer shuffles.
    """
    doc_row = table.doc_rows()
    texts: list[object] = [collection.doc_text(d) for d in doc_ids]
    labels: list[object] = [[doc_row[d]] for d in doc_ids]
    return {"document": texts * epochs, "label": labels * epochs}


@dataclass
class TeacherTable:
    """The teacher's data for a training set, addressed by row numbers (the ``ids`` label layout).

    ``query_ids[r]`` / ``doc_ids[r]`` name row ``r``. ``pair_keys`` holds, sorted,
    ``query_row * len(doc_ids) + doc_row`` for every (query, document) pair the teacher scored,
    ``pair_scores`` the matching raw scores. ``query_embeddings`` / ``doc_embeddings``
    (``(Q, D_t)`` / ``(len(doc_ids), D_t)`` float32, row-aligned) are the teacher's embeddings,
    when a loss needs them. ``pairs`` is the pairwise teacher store that :meth:`pairwise` reads,
    when a loss needs pairwise probabilities (``pairwise-kl``).
    """

    query_ids: list[str]
    doc_ids: list[str]
    pair_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pair_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    query_embeddings: np.ndarray | None = None
    doc_embeddings: np.ndarray | None = None
    pairs: PairStore | None = None

    def query_rows(self) -> dict[str, int]:
        return {qid: row for row, qid in enumerate(self.query_ids)}

    def doc_rows(self) -> dict[str, int]:
        return {did: row for row, did in enumerate(self.doc_ids)}

    @property
    def embedding_dim(self) -> int | None:
        """The teacher's embedding dimension, or ``None`` without embeddings."""
        return None if self.doc_embeddings is None else int(self.doc_embeddings.shape[1])

    def scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        """Teacher scores of ``(B,)`` queries against ``(B, K)`` documents: ``(B, K)``, NaN where unscored."""
        keys = query_rows.astype(np.int64)[:, None] * len(self.doc_ids) + doc_rows.astype(np.int64)  # (B, K)
        found = np.searchsorted(self.pair_keys, keys).clip(max=max(len(self.pair_keys) - 1, 0))
        out = np.full(keys.shape, np.nan, dtype=np.float32)
        if len(self.pair_keys):
            hit = self.pair_keys[found] == keys
            out[hit] = self.pair_scores[found[hit]]
        return out

    def pairwise(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        """Pairwise teacher probabilities among each row's documents: float32 ``(B, K, K)``.

        ``[b, i, j]`` is ``P(doc_rows[b, i] more relevant than doc_rows[b, j] | query_rows[b])`` from
        :attr:`pairs` (:meth:`~retrodistill.data.pair_store.PairStore.matrices`), columns in the row's
        order; NaN where the pair was not scored.

        Raises:
            ValueError: If the table holds no pair store.
        """
        if self.pairs is None:
            raise ValueError("this TeacherTable holds no pair store: build it with build_teacher_table(pairs=...)")
        query_ids = [self.query_ids[int(q)] for q in query_rows]
        doc_ids = [[self.doc_ids[int(d)] for d in row] for row in doc_rows]
        return self.pairs.matrices(query_ids, doc_ids)

    def pair_names(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> list[tuple[str, str]]:
        """The ``(query_id, doc_id)`` of paired rows, for error messages."""
        return [(self.query_ids[int(q)], self.doc_ids[int(d)]) for q, d in zip(query_rows, doc_rows, strict=True)]


def build_teacher_table(
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    teacher_scores: Mapping[tuple[str, str], float] | None = None,
    embeddings: TeacherEmbeddings | None = None,
    pairs: PairStore | None = None,
) -> TeacherTable:
    """A :class:`TeacherTable` over the distinct ids given (sorted), with every stored pair among them.

    ``pairs`` (a pairwise teacher store) is kept as is and read batch by batch by :meth:`TeacherTable.pairwise`.

    Raises:
        ValueError: If ``embeddings`` lacks one of the ids.
    """
    table = TeacherTable(sorted(set(query_ids)), sorted(set(doc_ids)), pairs=pairs)
    if teacher_scores is not None:
        query_row, doc_row, width = table.query_rows(), table.doc_rows(), len(table.doc_ids)
        keys, values = [], []
        for (qid, did), score in teacher_scores.items():
            q, d = query_row.get(qid), doc_row.get(did)
            if q is not None and d is not None:
                keys.append(q * width + d)
                values.append(score)
        order = np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")
        table.pair_keys = np.asarray(keys, dtype=np.int64)[order]
        table.pair_scores = np.asarray(values, dtype=np.float32)[order]
    if embeddings is not None:
        table.query_embeddings = embeddings.vectors("queries", table.query_ids)
        table.doc_embeddings = embeddings.vectors("documents", table.doc_ids)
    return table


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
