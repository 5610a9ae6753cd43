"""How one model's run on one collection is made: retrieval, reranking, and the run cache.

:func:`post_filtered_run` is what :func:`retrodistill.evaluate.suite.evaluate_suite` calls for every
(model, collection): it reads the run from the run cache, or retrieves it with a
:class:`Retrievers` (lexical, or dense through :func:`~retrodistill.evaluate.retrieval.encode_and_search`
and the corpus-embedding cache), reranks it when the model spec asks, and caches the result.

The run cache (:class:`RunCache`, :func:`cache_key`) is :mod:`retrodistill.evaluate.run_cache`'s.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrodistill.artifacts import model_revision, sha256_file
from retrodistill.data.collections import DataFormatError
from retrodistill.evaluate.metrics import Run
from retrodistill.evaluate.run_cache import CACHE_ENV, CACHE_VERSION, RunCache, cache_key, default_cache_dir

if TYPE_CHECKING:
    from retrodistill.data.collections import Collection

logger = logging.getLogger(__name__)

LEXICAL = ("bm25s", "pyserini-bm25", "pyserini-bm25-multifield")
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+:-]*")


def parse_model(text: str) -> tuple[str | None, str]:
    """``"NAME=MODEL"`` → ``("NAME", "MODEL")``; anything else → ``(None, text)``.

    ``NAME`` is a short label for tables, legends, folders and run tags (letters, digits and
    ``_.+:-``, no ``/``); a string that is an existing path is always a model, never split.

    Example:
        >>> parse_model("student=runs/quickstart/student"), parse_model("bm25s")
        (('student', 'runs/quickstart/student'), (None, 'bm25s'))
    """
    name, sep, model = text.partition("=")
    if not sep or Path(text).exists() or not _ALIAS.fullmatch(name):
        return None, text
    if not model:
        raise ValueError(f"--model {text!r}: nothing after '=' (write NAME=MODEL)")
    return name, model


@dataclass(frozen=True)
class ModelSpec:
    """One column of the table: a first-stage retriever and, optionally, a reranker.

    ``alias`` (from ``NAME=MODEL``, :func:`parse_model`) replaces the model's id in the label. A
    column read from a TREC run file has ``run_file`` set (kind ``"run-file"``), ``name`` its label.
    """

    name: str
    rerank: str | None = None
    rerank_depth: int = 100
    alias: str | None = None
    run_file: str | None = None

    @property
    def kind(self) -> str:
        if self.run_file is not None:
            return "run-file"
        return self.name if self.name in LEXICAL else "dense"

    @property
    def label(self) -> str:
        shown = self.alias or self.name
        if self.rerank is None:
            return shown
        return f"{shown}>>rerank:{self.rerank}@{self.rerank_depth}"


class Retrievers:
    """Loads each model once, on first need (a fully cached suite loads none).

    With ``embeddings`` (a folder), dense models read and write the corpus-embedding cache there
    (:mod:`retrodistill.data.embeddings`), so a run the run cache misses (another ``k``, another
    split of the same corpus) encodes only its queries; ``shards_read`` / ``shards_encoded`` count.

    Dense models search an ``index`` backend built with ``index_params`` (default: exact
    ``faiss-flat-ip``); with ``index_dir``, the index saved there is used when it fits the model and
    corpus (neither the corpus nor its cached embeddings are read), else built and saved there
    (:func:`~retrodistill.evaluate.retrieval.encode_and_search`).
    """

    def __init__(
        self,
        *,
        batch_size: int,
        device: str | None,
        cache_folder: str | None,
        show_progress: bool,
        embeddings: Path | None = None,
        embedding_dtype: str = "float32",
        identities: Mapping[str, dict[str, Any]] | None = None,
        loaded: Mapping[str, Any] | None = None,
        index: str = "faiss-flat-ip",
        index_params: Mapping[str, Any] | None = None,
        index_dir: Path | None = None,
    ):
        self.batch_size = batch_size
        self.device = device
        self.cache_folder = cache_folder
        self.show_progress = show_progress
        self.embeddings = embeddings
        self.embedding_dtype = embedding_dtype
        self.identities = dict(identities or {})
        self.index = index
        self.index_params = dict(index_params or {})
        self.index_dir = index_dir
        self.shards_read = 0
        self.shards_encoded = 0
        #: model name -> :func:`model_facts` of each dense model loaded (or given) in this run.
        self.facts: dict[str, dict[str, Any]] = {}
        self._dense: dict[str, Any] = dict(loaded or {})
        self._rerankers: dict[str, Any] = {}

    def dense(self, name: str) -> Any:
        if name not in self._dense:
            from retrodistill.evaluate.retrieval import load_model

            self._dense[name] = load_model(name, device=self.device, cache_folder=self.cache_folder)
        if name not in self.facts:
            self.facts[name] = model_facts(self._dense[name])
        return self._dense[name]

    def reranker(self, name: str) -> Any:
        if name not in self._rerankers:
            from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

            self._rerankers[name] = CrossEncoderTeacher(name, device=self.device)
        return self._rerankers[name]

    def first_stage(self, spec: ModelSpec, collection: Collection, k: int, ignore_identical_ids: bool = False) -> Run:
        """The model's top ``k`` for every query of ``collection`` (``ignore_identical_ids``: :func:`post_filter`)."""
        if spec.kind == "dense":
            from retrodistill.evaluate.retrieval import encode_and_search, open_embedding_cache

            model = self.dense(spec.name)
            identity = None
            if self.embeddings is not None or self.index_dir is not None:
                identity = self.identities.get(spec.name) or model_identity(spec.name, self.cache_folder)
            saved_index = self.index_dir is not None and (self.index_dir / "manifest.json").is_file()
            cache = None
            if self.embeddings is not None and identity is not None and not saved_index:  # a saved index needs none
                cache = open_embedding_cache(model, collection, self.embeddings, identity, dtype=self.embedding_dtype)
            missing = len(cache.missing_shards()) if cache is not None else 0
            run = encode_and_search(
                model,
                collection,
                k=k,
                batch_size=self.batch_size,
                show_progress=self.show_progress,
                ignore_identical_ids=ignore_identical_ids,
                embedding_cache=cache,
                index=self.index,
                index_params=self.index_params,
                index_dir=self.index_dir,
                model_identity=identity,
            )
            if cache is not None:
                self.shards_encoded += missing
                self.shards_read += cache.num_shards - missing
            return run
        return lexical_run(_lexical(spec.name), collection, k, ignore_identical_ids, self.show_progress)


def model_facts(model: Any) -> dict[str, Any]:
    """What a loaded dense model ran with, for the manifest: the settings that change its scores, and
    the device and linear kernel (:func:`~retrodistill.data.embeddings.encoder_runtime`) that computed them."""
    from retrodistill.data.embeddings import encoder_runtime

    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return {
        "max_seq_length": getattr(model, "max_seq_length", None),
        "similarity_fn_name": getattr(model, "similarity_fn_name", None),
        "embedding_dimension": dimension(),
        "prompts": dict(getattr(model, "prompts", {}) or {}),
        **encoder_runtime(model),
    }


def _lexical(name: str) -> Any:
    if name == "bm25s":
        from retrodistill.index.bm25 import BM25Retriever

        return BM25Retriever()
    from retrodistill.index.pyserini_bm25 import PyseriniBM25

    return PyseriniBM25(multifield=name == "pyserini-bm25-multifield")


def lexical_run(
    retriever: Any, collection: Collection, k: int, ignore_identical_ids: bool = False, show_progress: bool = False
) -> Run:
    """Index ``collection.corpus`` (``title + " " + text``) with a lexical retriever and search every query.

    ``retriever`` has ``index(doc_ids, texts)`` and ``search(queries, k)`` (:class:`~retrodistill.index.bm25.
    BM25Retriever` or :class:`~retrodistill.index.pyserini_bm25.PyseriniBM25`). With ``ignore_identical_ids``
    the top ``k + 1`` are searched and a document whose id equals the query id is dropped.
    """
    doc_ids = list(collection.corpus)
    if getattr(retriever, "multifield", False):  # title and text as separate fields
        documents = [collection.corpus[d] for d in doc_ids]
        texts, titles = [d.text for d in documents], [d.title for d in documents]
        retriever.index(doc_ids, texts, show_progress=show_progress, titles=titles)
    else:
        retriever.index(doc_ids, [collection.corpus[d].joined() for d in doc_ids], show_progress=show_progress)
    query_ids = list(collection.queries)
    hits = retriever.search(
        [collection.queries[q] for q in query_ids], k + 1 if ignore_identical_ids else k, show_progress=show_progress
    )
    run: Run = {}
    for qid, ranked in zip(query_ids, hits, strict=True):
        docs = {d: s for d, s in ranked if not (ignore_identical_ids and d == qid)}
        run[qid] = dict(list(docs.items())[:k])
    return run


def rerank_scores(
    run: Mapping[str, Mapping[str, float]],
    collection: Collection,
    score: Callable[[Sequence[str], Sequence[str]], Any],
    depth: int,
) -> Run:
    """``score(queries, docs)`` of each query's top ``depth`` documents of ``run`` (trec_eval order)."""
    from retrodistill.evaluate.metrics import trec_order

    if depth < 1:
        raise ValueError(f"rerank depth must be at least 1, got {depth}")
    pairs = [(qid, doc_id) for qid, docs in run.items() for doc_id, _ in trec_order(docs)[:depth]]
    scores = score([collection.queries[q] for q, _ in pairs], [collection.doc_text(d) for _, d in pairs])
    new: Run = {qid: {} for qid in run}
    for (qid, doc_id), value in zip(pairs, scores, strict=True):
        new[qid][doc_id] = float(value)
    return new


def apply_rerank(run: Mapping[str, Mapping[str, float]], scores: Mapping[str, Mapping[str, float]], depth: int) -> Run:
    """Give each query's top ``depth`` documents of ``run`` their reranker ``scores``; keep the rest below them.

    The reranked documents take their new scores; each document below the depth gets a score under
    the lowest reranked one, in its first-stage order, so the run's order is: reranked top ``depth``,
    then the first-stage tail.

    Raises:
        KeyError: ``scores`` lacks a document of some query's top ``depth``.
    """
    from retrodistill.evaluate.metrics import trec_order

    if depth < 1:
        raise ValueError(f"rerank depth must be at least 1, got {depth}")
    new: Run = {}
    for qid, docs in run.items():
        ranked = trec_order(docs)
        new[qid] = {doc_id: scores[qid][doc_id] for doc_id, _ in ranked[:depth]}
        floor = min(new[qid].values(), default=0.0)
        for offset, (doc_id, _) in enumerate(ranked[depth:], start=1):
            new[qid][doc_id] = floor - offset
    return new


def rerank_run(
    run: Mapping[str, Mapping[str, float]],
    collection: Collection,
    score: Callable[[Sequence[str], Sequence[str]], Any],
    depth: int,
) -> Run:
    """Rescore each query's top ``depth`` documents with ``score(queries, docs)``; keep the rest below them.

    :func:`rerank_scores` then :func:`apply_rerank`.
    """
    return apply_rerank(run, rerank_scores(run, collection, score, depth), depth)


def post_filter(run: Mapping[str, Mapping[str, float]], k: int, ignore_identical_ids: bool) -> Run:
    """A cached run as scored: without self-hits when ``ignore_identical_ids``, cut to its top ``k``.

    ``ignore_identical_ids`` is BEIR's rule for corpora whose queries are also documents (ArguAna,
    Quora): a retrieved document whose id equals the query id is dropped. The cut keeps the top
    ``k`` in trec_eval order (:func:`~retrodistill.evaluate.metrics.trec_order`).
    """
    from retrodistill.evaluate.metrics import trec_order

    out: Run = {}
    for qid, docs in run.items():
        ranked = trec_order(docs)
        if ignore_identical_ids:
            ranked = [(doc_id, score) for doc_id, score in ranked if doc_id != qid]
        out[qid] = dict(ranked[:k])
    return out


def self_hits_at_rank_1(run: Mapping[str, Mapping[str, float]]) -> int:
    """How many queries of ``run`` (unfiltered) have their own id as their top document."""
    from retrodistill.evaluate.metrics import trec_order

    return sum(1 for qid, docs in run.items() if docs and trec_order(docs)[0][0] == qid)


def spec_identity(spec: ModelSpec, identities: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    if spec.rerank is None:
        return identities[spec.name]
    return {"first_stage": identities[spec.name], "rerank": identities[spec.rerank], "depth": spec.rerank_depth}


def post_filtered_run(
    spec: ModelSpec,
    collection: Collection,
    ignore_identical_ids: bool,
    k: int,
    retrievers: Retrievers,
    cache: RunCache,
    identities: Mapping[str, dict[str, Any]],
) -> tuple[Run, int]:
    """The model's run on one collection, as scored, and how many queries retrieved their own id at rank 1.

    The cached run (or a new one, cached) post-filtered: the first stage is cached at depth ``k + 1``
    before the identical-id rule; the rule and the cut to ``k`` (:func:`post_filter`) and the reranking
    are applied here. The self-hit count (before the rule) feeds the suite's warning.
    """
    depth = k + 1  # one more than asked, so that dropping a self-hit still leaves k
    first = cache.get(
        cache_key(identities[spec.name], collection),
        lambda: retrievers.first_stage(spec, collection, depth),
        f"{spec.name} on {collection.name}",
        depth,
    )
    hits = self_hits_at_rank_1(first)
    run = post_filter(first, k, ignore_identical_ids)
    if spec.rerank is None:
        return run, hits
    reranker, covered = spec.rerank, min(spec.rerank_depth + 1, depth)
    # The top rerank_depth after the rule are among the top rerank_depth + 1 before it.
    scores = cache.get(
        cache_key(spec_identity(spec, identities), collection),
        lambda: rerank_scores(first, collection, retrievers.reranker(reranker).score, covered),
        f"{spec.label} on {collection.name}",
        covered,
    )
    return apply_rerank(run, scores, spec.rerank_depth), hits


def run_file_spec(text: str) -> ModelSpec:
    """``--run FILE`` or ``--run NAME=FILE`` as a column; the label is ``NAME``, else the file name without suffix.

    Example:
        >>> run_file_spec("runs/bm25.trec").label, run_file_spec("bm25=runs/x.trec").label
        ('bm25', 'bm25')
    """
    alias, path = parse_model(text)
    return ModelSpec(alias or Path(path).stem or path, run_file=path)


def run_file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What identifies a run read from a file: its path and sha256."""
    return {"kind": "run-file", "id": str(path), "sha256": sha256_file(path)}


def file_run(
    run: Mapping[str, Mapping[str, float]], path: str, collection: Collection, ignore_identical_ids: bool
) -> tuple[Run, int]:
    """A run read from ``path`` as scored on ``collection``: the identical-id rule applied, never cut.

    Returns:
        The run, and how many queries had their own id at rank 1 before the rule.

    Raises:
        DataFormatError: none of the run's query ids is judged in ``collection`` (a run made for
            another dataset or split, most likely).
    """
    judged = collection.qrels
    if not any(qid in judged for qid in run):
        examples = ", ".join(repr(q) for q in list(run)[:3])
        raise DataFormatError(
            path,
            None,
            f"none of its {len(run):,} query ids (such as {examples}) is judged in {collection.name} "
            f"({collection.split}): is it a run of this dataset?",
        )
    depth = max((len(docs) for docs in run.values()), default=0)
    return post_filter(run, depth, ignore_identical_ids), self_hits_at_rank_1(run)


def _dir_config_hash(path: Path) -> str:
    """sha256 over a model directory's small config files (json/txt), which change its outputs too."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".txt")):
        if file.name in ("manifest.json", "train_log.json"):
            continue
        digest.update(os.fsencode(file.relative_to(path).as_posix()) + b"\0" + file.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


#: What the hub accepts as a model id: ``NAME`` or ``ORG/NAME``.
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def model_identity(name: str, cache_folder: str | None = None) -> dict[str, Any]:
    """What identifies a model's runs: kind, id, revision (hub commit or weight hash), settings."""
    if name == "bm25s":
        from retrodistill.index.bm25 import BM25Retriever

        r = BM25Retriever()
        return {"kind": "bm25s", "id": "bm25s", "k1": r.k1, "b": r.b, "stemmer": r.stemmer, "stopwords": r.stopwords}
    if name in ("pyserini-bm25", "pyserini-bm25-multifield"):
        recipe = "beir-multifield" if name.endswith("multifield") else "beir-flat"
        return {"kind": name, "id": name, "k1": 0.9, "b": 0.4, "recipe": recipe}
    if not Path(name).exists() and not _HUB_ID.fullmatch(name):
        raise FileNotFoundError(
            f"--model {name}: no such folder, and not a Hugging Face hub id (ORG/NAME); "
            "pass a sentence-transformers folder, a hub id, or bm25s / pyserini-bm25 / pyserini-bm25-multifield"
        )
    identity: dict[str, Any] = {"kind": "dense", "id": name, "revision": model_revision(name, cache_dir=cache_folder)}
    if Path(name).is_dir():
        identity["config"] = _dir_config_hash(Path(name))
    return identity


__all__ = [  # the run cache's names lived here; they stay importable
    "CACHE_ENV",
    "CACHE_VERSION",
    "RunCache",
    "cache_key",
    "default_cache_dir",
]
