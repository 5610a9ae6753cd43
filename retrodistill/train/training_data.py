"""The training data of ``train-student``: examples, teacher tables and the held-out dev queries.

``query_data`` builds the ``queries`` stage's examples (see :mod:`retrodistill.train.run` for
what each loss reads) and ``corpus_data`` the ``corpus`` stage's texts (documents, training
queries, pseudo-queries: :mod:`retrodistill.train.pseudo_queries`); both return a
:class:`TrainingData` that also records the inputs' fingerprints, the teacher and the counts the
manifest reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from retrodistill.artifacts import MANIFEST, ArtifactMismatchError, check_inputs, recorded_input
from retrodistill.config import TrainConfig
from retrodistill.data.candidates import CandidateSet, read_candidates, triples_candidates
from retrodistill.data.collections import Collection
from retrodistill.data.pair_store import PairStore
from retrodistill.data.store import TeacherStore
from retrodistill.data.teacher_embeddings import TeacherEmbeddings
from retrodistill.train.examples import Examples, build_examples, corpus_columns, sample_corpus
from retrodistill.train.pseudo_queries import PseudoQueries, check_settings, is_pseudo_query_id, pseudo_queries
from retrodistill.train.teacher_table import TeacherTable, build_teacher_table

logger = logging.getLogger(__name__)

_TABLE_INPUTS = frozenset({"teacher_in_batch", "teacher_embeddings", "teacher_pairwise"})
_CORPUS_INPUTS = frozenset({"student_embeddings", "teacher_embeddings"})
#: What the ``corpus`` stage can distil (``corpus_texts``).
CORPUS_TEXTS = ("documents", "queries", "pseudo-queries")


@dataclass
class TrainingData:
    """What the trainer reads and everything the manifest says about where it came from.

    The ``queries`` stage has :attr:`examples` (integer arrays; texts looked up per batch) and, for
    the ``ids`` label layout, :attr:`label`; the ``corpus`` stage has plain :attr:`columns`.
    """

    examples: Examples | None = None
    label: Any = None  # (n, 2 + N) int64 rows into table, when a loss reads a TeacherTable
    columns: dict[str, list[object]] | None = None
    table: TeacherTable | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    candidates: CandidateSet | None = None
    holdout: frozenset[str] = frozenset()  # training queries held out as the dev split
    teacher_rankings: dict[str, Any] = field(default_factory=dict)  # held-out query -> TeacherRanking

    def dataset(self, collection: Collection) -> Any:
        import datasets

        if self.examples is not None:
            return self.examples.dataset(collection, self.label)
        return datasets.Dataset.from_dict(self.columns or {})


def load_candidates(config: TrainConfig, store: TeacherStore | None) -> CandidateSet:
    """The candidates the store was scored from: ``--candidates``, else the store's own record."""
    if config.candidates:
        return read_candidates(config.candidates)
    if store is None:
        raise ValueError(
            "without a teacher-score store, set candidates: the candidates artifact to draw negatives from"
        )
    triples = recorded_input(store.path, store.manifest, "triples")
    if triples is not None:
        import pyarrow.compute as pc

        read = triples_candidates(triples)
        # Grouped by query, each query's documents in file order (a stable sort), as sampling expects.
        table = read.table.take(pc.sort_indices(read.table, sort_keys=[("query_id", "ascending")]))
        return CandidateSet(read.path, table, read.manifest)
    candidates = recorded_input(store.path, store.manifest, "candidates")
    if candidates is None:
        raise ValueError(f"the store {store.path} does not say which candidates it was scored from; pass --candidates")
    return read_candidates(candidates)


def _teacher_embeddings(
    config: TrainConfig, collection: Collection, query_ids: list[str], doc_ids: list[str], show_progress: bool
) -> TeacherEmbeddings:
    """Open the teacher-embedding store, or compute it with ``teacher_embeddings.model`` when missing."""
    settings = config.teacher_embeddings
    if not settings.path:
        raise ValueError(
            f"loss {config.loss.name!r} needs teacher embeddings: set teacher_embeddings.path (a store, "
            "or where to write one) and teacher_embeddings.model (the bi-encoder teacher that computes it)"
        )
    path = Path(settings.path)
    fingerprints = {k: v for k, v in collection.fingerprints.items() if k in ("corpus", "queries")}
    if (path / MANIFEST).is_file():
        store = TeacherEmbeddings.open(path)
        check_inputs(
            store.inputs,
            fingerprints,
            artifact=f"teacher-embedding store {path}",
            given=f"collection {config.data.dataset}",
        )
        stored_model = store.manifest.get("teacher", {}).get("model")
        if settings.model and stored_model != settings.model:
            raise ArtifactMismatchError(
                f"teacher-embedding store {path} holds embeddings of {stored_model!r}, not of "
                f"teacher_embeddings.model {settings.model!r}"
            )
        # Fail here, before the model is built, rather than at table building.
        _check_coverage(store, query_ids, doc_ids)
        return store
    if not settings.model:
        raise ValueError(
            f"{path} holds no teacher-embedding store ({MANIFEST} is missing) and teacher_embeddings.model "
            "is not set, so none can be computed there"
        )
    from retrodistill.stages.embed_teacher import embed_teacher, load_teacher

    # The embed-teacher stage's core, for exactly these ids; documents go through the shared corpus cache.
    teacher = load_teacher(settings.model, settings.similarity, settings.batch_size, settings.max_length)
    return embed_teacher(path, teacher, collection, query_ids, doc_ids, show_progress=show_progress)


def _check_coverage(store: TeacherEmbeddings, query_ids: list[str], doc_ids: list[str]) -> None:
    """Refuse a store that lacks some of the texts this run needs, saying which kinds and how many."""
    wanted = {  # kind -> (the store's side, ids)
        "pseudo-queries": ("queries", [q for q in query_ids if is_pseudo_query_id(q)]),
        "queries": ("queries", [q for q in query_ids if not is_pseudo_query_id(q)]),
        "documents": ("documents", doc_ids),
    }
    lacking, examples = [], []
    for kind, (side, ids) in wanted.items():
        missing = store.missing(side, ids)
        if missing:
            lacking.append(f"{len(missing)} of the {len(ids)} {kind}")
            examples.append(missing[0])
    if lacking:
        raise ArtifactMismatchError(
            f"the teacher-embedding store at {store.path} lacks {' and '.join(lacking)} this stage needs "
            f"(e.g. {', '.join(examples)}): it was made with other settings or texts; point "
            "teacher_embeddings.path at a new folder (with teacher_embeddings.model) to compute a store for this run"
        )


def _pair_store(config: TrainConfig, loss_name: str, collection: Collection, candidates: CandidateSet) -> PairStore:
    """Open ``pair_store`` and refuse one made for another corpus, other queries or other candidates."""
    if not config.pair_store:
        raise ValueError(
            f"loss {loss_name!r} needs pairwise teacher probabilities: run `retrodistill score-pairwise` on "
            "the training candidates and set pair_store to the store it writes"
        )
    pairs = PairStore.open(config.pair_store)
    check_inputs(
        {k: v for k, v in pairs.inputs.items() if k in ("corpus", "queries", "candidates")},
        {**collection.fingerprints, "candidates": candidates.fingerprint},
        artifact=f"pairwise teacher store {pairs.path}",
        given=f"collection {config.data.dataset} and candidates {candidates.path}",
    )
    return pairs


def _rows_with_scored_pairs(pairs: PairStore, query_ids: list[str], doc_ids: list[list[str]]) -> int:
    """How many examples have at least one scored (off-diagonal) pair in ``pairs``."""
    import numpy as np

    return sum(int(np.isfinite(pairs.matrix(q, docs)).any()) for q, docs in zip(query_ids, doc_ids, strict=True))


def query_data(
    config: TrainConfig, collection: Collection, loss_name: str, needs: frozenset[str], show_progress: bool
) -> TrainingData:
    """Examples (query, 1 + N documents) and the teacher's data for them."""
    from retrodistill.losses.combined import TEACHER_INPUTS

    needs_teacher = bool(needs & TEACHER_INPUTS)
    store = None
    if config.store:
        store = TeacherStore.open(config.store)
        check_inputs(
            {k: v for k, v in store.inputs.items() if k in ("corpus", "queries")},
            collection.fingerprints,
            artifact=f"teacher-score store {store.path}",
            given=f"collection {config.data.dataset}",
        )
    elif needs & {"teacher_scores", "teacher_in_batch"}:
        raise ValueError(f"loss {loss_name!r} needs the teacher's scores: set store (a teacher-score store)")
    candidates = load_candidates(config, store)
    # Candidates filtered from the scored ones (mine-negatives --from-candidates) are a subset of its rows.
    scored_from = [candidates.fingerprint, *candidates.manifest.get("derived_from", [])]
    if store is not None and store.inputs.get("candidates") not in scored_from:
        raise ArtifactMismatchError(
            f"teacher-score store {store.path} was not scored from candidates {candidates.path}:\n"
            f"  candidates: store has {store.inputs.get('candidates')}, given {candidates.fingerprint}"
        )
    pairs = _pair_store(config, loss_name, collection, candidates) if "teacher_pairwise" in needs else None
    wants_scores = store is not None and bool(needs & {"teacher_scores", "teacher_in_batch"})
    # One float per candidate row, joined column-wise: never a dict of every stored score.
    scores = store.scores_for(candidates) if store is not None and wants_scores else None
    holdout = _holdout(config, collection, candidates)
    margin_scores = _margin_scores(config, store, candidates, scores)
    examples = build_examples(
        collection,
        candidates,
        scores,
        negatives=config.negatives,
        negative_pool=config.negative_pool,
        epochs=config.epochs,
        seed=config.seed,
        exclude=holdout,
        negative_sampling=config.negative_sampling,
        margin_bins=config.tas_margin_bins if margin_scores is not None else None,
        margin_scores=margin_scores,
    )
    if not len(examples):
        raise ValueError(
            f"no training examples: {examples.skipped_queries or 'no candidates'} "
            f"(split {config.data.split!r}, negatives={config.negatives}, negative_pool={config.negative_pool})"
        )
    data = TrainingData(
        examples=examples,
        inputs={k: v for k, v in collection.fingerprints.items()} | {"candidates": candidates.fingerprint},
        counts={
            "examples": len(examples),
            "documents_per_example": examples.width,
            "skipped_queries": examples.skipped_queries,
        },
    )
    if margin_scores is not None:  # the negatives depend on the store even when the loss reads none of it
        data.inputs["teacher_scores"] = store.fingerprint  # type: ignore[union-attr]
        data.counts["margin_balanced"] = True
    if holdout:
        from retrodistill.train.evaluation import teacher_rankings

        data.holdout = holdout
        data.counts["held_out_queries"] = len(holdout)
        if store is not None:
            held_scores = scores if scores is not None else store.scores_for(candidates)
            data.teacher_rankings = teacher_rankings(candidates, held_scores, holdout)
    data.candidates = candidates
    if store is not None and needs_teacher:
        data.inputs["teacher_scores"] = store.fingerprint
        data.teacher = store.manifest.get("teacher", {})
    if pairs is not None:
        scored_rows = _rows_with_scored_pairs(pairs, examples.example_query_ids(), examples.example_doc_ids())
        if not scored_rows:
            raise ValueError(
                f"the pairwise teacher store {pairs.path} scores no pair among the documents of any of the "
                f"{len(examples)} training examples: score it with `retrodistill score-pairwise` over these "
                "candidates with an m that covers the negative pool"
            )
        data.inputs["pair_store"] = pairs.fingerprint
        data.teacher = {**data.teacher, "pairwise": pairs.manifest.get("teacher", {})}
        data.counts["pairwise_rows"] = scored_rows
    if needs & _TABLE_INPUTS:
        # Losses that look past a row's own documents: a table over the examples' ids (small sets).
        embeddings = None
        if "teacher_embeddings" in needs:
            # The store covers every document the negatives can be drawn from, so other seeds reuse it.
            pool = _negative_pool_documents(candidates, set(examples.query_ids), config.negative_pool)
            embeddings = _teacher_embeddings(config, collection, sorted(examples.query_ids), pool, show_progress)
            data.inputs["teacher_embeddings"] = str(embeddings.manifest["fingerprint"])
            data.teacher = {**data.teacher, "embeddings": embeddings.manifest.get("teacher", {})}
        stored = store.scores() if store is not None and wants_scores else None
        data.table = build_teacher_table(examples.query_ids, examples.distinct_doc_ids(), stored, embeddings, pairs)
        data.label = table_label(examples, data.table)
        data.counts["teacher_pairs"] = len(data.table.pair_keys)
    return data


def _margin_scores(config: TrainConfig, store: TeacherStore | None, candidates: CandidateSet, scores: Any) -> Any:
    """The scores TAS-balanced negatives are balanced by: the store's, read even when the loss needs none.

    ``None`` unless ``batch_sampling`` is ``tas-balanced``; without a store, the batches stay topic
    aware and the negatives are drawn by ``negative_sampling`` (a logged note).
    """
    if config.batch_sampling != "tas-balanced":
        return None
    if store is None:
        logger.warning(
            "batch_sampling tas-balanced without a teacher-score store: batches come from one query cluster each, "
            "but the negatives are drawn uniformly, not balanced over teacher margins"
        )
        return None
    return scores if scores is not None else store.scores_for(candidates)


def _holdout(config: TrainConfig, collection: Collection, candidates: CandidateSet) -> frozenset[str]:
    """The ``eval_holdout`` training queries left out as a dev split: drawn among those with a judged candidate."""
    if not config.eval_holdout:
        return frozenset()
    import pyarrow.compute as pc

    from retrodistill.train.evaluation import holdout_queries

    table = candidates.table
    judged = pc.unique(table.column("query_id").filter(pc.greater(table.column("label"), 0))).to_pylist()
    return holdout_queries([q for q in judged if q in collection.queries], config.eval_holdout, config.seed)


def _negative_pool_documents(candidates: CandidateSet, queries: set[str], negative_pool: int) -> list[str]:
    """Sorted ids of the documents the examples of ``queries`` can draw: positives and pooled negatives."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = candidates.table
    keep = pc.and_(
        pc.is_in(table.column("query_id"), value_set=pa.array(sorted(queries), type=pa.string())),
        pc.or_(pc.greater(table.column("label"), 0), pc.less_equal(table.column("rank"), negative_pool)),
    )
    return sorted(pc.unique(table.column("doc_id").filter(keep)).to_pylist())


def table_label(examples: Examples, table: TeacherTable) -> Any:
    """The ``ids`` label layout: ``[query_row, doc_row_0, …, doc_row_N]`` into ``table``, per example."""
    import numpy as np

    query_row, doc_row = table.query_rows(), table.doc_rows()
    queries = np.array([query_row[q] for q in examples.query_ids], dtype=np.int64)[examples.query_rows]
    docs = np.array([doc_row[d] for d in examples.doc_column.take(examples.candidate_rows.ravel()).to_pylist()])
    return np.concatenate([queries[:, None], docs.reshape(examples.candidate_rows.shape)], axis=1)


def corpus_data(
    config: TrainConfig, collection: Collection, loss_name: str, needs: frozenset[str], show_progress: bool
) -> TrainingData:
    """The corpus stage: its ``corpus_texts`` (documents, training queries, pseudo-queries) and their teacher vectors.

    Each epoch's rows are the drawn documents, the training queries and that epoch's pseudo-queries
    (the trainer shuffles them all). The teacher embeds queries and pseudo-queries as queries and
    documents as documents. The store always holds the drawn documents, trained on or not: they are
    what the pseudo-queries are cropped from, and ``embed_teacher`` needs at least one document.
    """
    extra = sorted(needs - _CORPUS_INPUTS)
    if extra:
        raise ValueError(
            f"the corpus stage distils single texts (documents alone, queries alone: no (query, documents) rows), "
            f"but loss {loss_name!r} needs {', '.join(extra)}: use the 'embedding' loss there (stage: queries "
            "for the others)"
        )
    kinds = check_corpus_texts(config.corpus_texts)
    if "pseudo-queries" in kinds:
        check_settings(config.pseudo_queries)  # before the teacher loads
    doc_ids = sample_corpus(collection, config.corpus_documents, config.seed)
    query_ids = sorted(collection.queries) if "queries" in kinds else []
    pseudo = PseudoQueries({}, [[] for _ in range(config.epochs)])
    if "pseudo-queries" in kinds:
        pseudo = pseudo_queries(collection, doc_ids, config.pseudo_queries, config.seed, config.epochs)
    side_ids = query_ids + sorted(pseudo.texts)  # the store's queries side
    # The store's embed_teacher reads query texts from collection.queries; the fingerprints stay the
    # collection's, as pseudo-query ids name their texts.
    texts = replace(collection, queries={**collection.queries, **pseudo.texts}) if pseudo.texts else collection
    embeddings = _teacher_embeddings(config, texts, side_ids, doc_ids, show_progress)
    trained_docs = doc_ids if "documents" in kinds else []
    table = corpus_table(embeddings, trained_docs, side_ids)
    columns = corpus_columns(collection, trained_docs, table, config.epochs)
    row = {q: len(trained_docs) + i for i, q in enumerate(side_ids)}
    for epoch in range(config.epochs):
        columns["document"] += [collection.queries[q] for q in query_ids]
        columns["document"] += [pseudo.texts[p] for p in pseudo.epochs[epoch]]
        columns["label"] += [[row[q]] for q in query_ids] + [[row[p]] for p in pseudo.epochs[epoch]]
    if not columns["label"]:
        raise ValueError(f"the corpus stage has nothing to train on: corpus_texts {kinds} gave no text")
    return TrainingData(
        columns=columns,
        table=table,
        inputs={
            "corpus": collection.fingerprints["corpus"],
            **({"queries": collection.fingerprints["queries"]} if query_ids else {}),
            "teacher_embeddings": str(embeddings.manifest["fingerprint"]),
        },
        teacher={"embeddings": embeddings.manifest.get("teacher", {})},
        counts={
            "examples": len(columns["label"]),
            "corpus_texts": kinds,
            # Per epoch for documents and queries; distinct texts over every epoch for pseudo-queries.
            "documents": len(trained_docs),
            "queries": len(query_ids),
            "pseudo_queries": len(pseudo.texts),
            "documents_per_example": 1,
        },
    )


def check_corpus_texts(texts: list[str]) -> list[str]:
    """``corpus_texts`` as given, refused (one-line ``ValueError``) when empty, unknown or repeated."""
    allowed = ", ".join(CORPUS_TEXTS)
    if not texts:
        raise ValueError(f"corpus_texts is empty: list one or more of {allowed}")
    for text in texts:
        if text not in CORPUS_TEXTS:
            raise ValueError(f"corpus_texts: unknown entry {text!r}; allowed: {allowed}")
    if len(set(texts)) != len(texts):
        raise ValueError(f"corpus_texts lists an entry twice ({', '.join(texts)}); allowed: {allowed}")
    return list(texts)


def corpus_table(embeddings: TeacherEmbeddings, doc_ids: list[str], query_ids: list[str]) -> TeacherTable:
    """The corpus stage's table: one row space, the documents first, then the query-side texts.

    The corpus stage has one text column and the adapter reads each row's teacher vector from the
    table's document rows (``doc_embeddings``), so every text the stage trains on is a "document"
    row here: ``doc_ids[i]`` holds the teacher's document vector, ``len(doc_ids) + j`` the teacher's
    query vector of ``query_ids[j]``, named ``query:<id>`` (pseudo-queries keep their ``pseudo:``
    ids) so that it never shares a name with a document.
    """
    import numpy as np

    names = doc_ids + [q if is_pseudo_query_id(q) else f"query:{q}" for q in query_ids]
    documents, queries = embeddings.vectors("documents", doc_ids), embeddings.vectors("queries", query_ids)
    return TeacherTable(
        [],
        names,
        query_embeddings=np.zeros((0, documents.shape[1]), dtype=np.float32),
        doc_embeddings=np.concatenate([documents, queries]),
    )
