"""How one model's run on one collection is made: retrieval, reranking, and the run cache.

:func:`make_run` is what :func:`retrodistill.evaluate.suite.evaluate_suite` calls for every
(model, collection): it reads the run from the run cache, or retrieves it with a
:class:`Retrievers` (lexical, or dense through :func:`~retrodistill.evaluate.retrieval.encode_and_search`
and the corpus-embedding cache), reranks it when the model spec asks, and caches the result.

Run cache: one folder per entry, the key a sha256 over the model's identity (:func:`model_identity`,
and the reranker's and its depth), the collection's corpus and queries fingerprints, the ids of the
split's queries, ``k`` and the identical-id rule (:func:`cache_key`)::

    cache_dir/<key>/run.trec     the run (:mod:`retrodistill.evaluate.run_files`)
    cache_dir/<key>/key.json     {"what": "MODEL on DATASET", "rows": 6000, "sha256": "sha256:…"}

An entry is used only when ``run.trec`` still has the sha256 and the row count its ``key.json``
records: a run cut short, edited or overwritten is reported in one warning line naming the entry,
recomputed and written over the entry (``run.trec`` first, then ``key.json``, each renamed into
place, so a reader never takes a half-written entry for a good one). An entry that cannot be read
or rewritten never stops an evaluation; temporary files killed runs left in the cache are removed
by the next run (:mod:`retrodistill.temporaries`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrodistill.artifacts import model_revision, sha256_file, sha256_strings
from retrodistill.data.collections import DataFormatError
from retrodistill.evaluate.metrics import Run
from retrodistill.evaluate.run_files import read_run, write_run
from retrodistill.temporaries import remove_stale_temporaries, writer_atomic_path

if TYPE_CHECKING:
    from retrodistill.data.collections import Collection

logger = logging.getLogger(__name__)

LEXICAL = ("bm25s", "pyserini-bm25")
CACHE_ENV = "RETRODISTILL_CACHE"
#: Bump when a change to retrieval code changes runs, so old cache entries are not reused.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$RETRODISTILL_CACHE/runs`` if set, else ``~/.cache/retrodistill/runs``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) / "runs" if root else Path.home() / ".cache" / "retrodistill" / "runs"


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

    ``alias`` (from ``NAME=MODEL``, :func:`parse_model`) replaces the model's id in the label.
    """

    name: str
    rerank: str | None = None
    rerank_depth: int = 100
    alias: str | None = None

    @property
    def kind(self) -> str:
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
    ):
        self.batch_size = batch_size
        self.device = device
        self.cache_folder = cache_folder
        self.show_progress = show_progress
        self.embeddings = embeddings
        self.embedding_dtype = embedding_dtype
        self.identities = dict(identities or {})
        self.shards_read = 0
        self.shards_encoded = 0
        self._dense: dict[str, Any] = dict(loaded or {})
        self._rerankers: dict[str, Any] = {}

    def dense(self, name: str) -> Any:
        if name not in self._dense:
            from retrodistill.evaluate.retrieval import load_model

            self._dense[name] = load_model(name, device=self.device, cache_folder=self.cache_folder)
        return self._dense[name]

    def reranker(self, name: str) -> Any:
        if name not in self._rerankers:
            from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

            self._rerankers[name] = CrossEncoderTeacher(name, device=self.device)
        return self._rerankers[name]

    def first_stage(self, spec: ModelSpec, collection: Collection, k: int, ignore_identical_ids: bool) -> Run:
        if spec.kind == "dense":
            from retrodistill.evaluate.retrieval import encode_and_search, open_embedding_cache

            model = self.dense(spec.name)
            cache = None
            if self.embeddings is not None:
                identity = self.identities.get(spec.name) or model_identity(spec.name, self.cache_folder)
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
            )
            if cache is not None:
                self.shards_encoded += missing
                self.shards_read += cache.num_shards - missing
            return run
        return lexical_run(_lexical(spec.name), collection, k, ignore_identical_ids, self.show_progress)


def _lexical(name: str) -> Any:
    if name == "bm25s":
        from retrodistill.index.bm25 import BM25Retriever

        return BM25Retriever()
    from retrodistill.index.pyserini_bm25 import PyseriniBM25

    return PyseriniBM25()


def lexical_run(
    retriever: Any, collection: Collection, k: int, ignore_identical_ids: bool = False, show_progress: bool = False
) -> Run:
    """Index ``collection.corpus`` (``title + " " + text``) with a lexical retriever and search every query.

    ``retriever`` has ``index(doc_ids, texts)`` and ``search(queries, k)`` (:class:`~retrodistill.index.bm25.
    BM25Retriever` or :class:`~retrodistill.index.pyserini_bm25.PyseriniBM25`). With ``ignore_identical_ids``
    the top ``k + 1`` are searched and a document whose id equals the query id is dropped.
    """
    doc_ids = list(collection.corpus)
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


def rerank_run(
    run: Mapping[str, Mapping[str, float]],
    collection: Collection,
    score: Callable[[Sequence[str], Sequence[str]], Any],
    depth: int,
) -> Run:
    """Rescore each query's top ``depth`` documents with ``score(queries, docs)``; keep the rest below them.

    The reranked documents take their new scores; each document below the depth gets a score under
    the lowest reranked one, in its first-stage order, so the run's order is: reranked top ``depth``,
    then the first-stage tail.
    """
    from retrodistill.evaluate.metrics import trec_order

    if depth < 1:
        raise ValueError(f"rerank depth must be at least 1, got {depth}")
    ranked = {qid: trec_order(docs) for qid, docs in run.items()}
    pairs = [(qid, doc_id) for qid, docs in ranked.items() for doc_id, _ in docs[:depth]]
    scores = score([collection.queries[q] for q, _ in pairs], [collection.doc_text(d) for _, d in pairs])
    new: Run = {qid: {} for qid in ranked}
    for (qid, doc_id), value in zip(pairs, scores, strict=True):
        new[qid][doc_id] = float(value)
    for qid, docs in ranked.items():
        floor = min(new[qid].values(), default=0.0)
        for offset, (doc_id, _) in enumerate(docs[depth:], start=1):
            new[qid][doc_id] = floor - offset
    return new


class _DamagedEntry(Exception):
    """A run cache entry whose run does not match its record (the message says how)."""


class RunCache:
    """Runs on disk by key (see the module docstring); ``root=None`` computes every run."""

    RUN, ENTRY = "run.trec", "key.json"

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.hits = 0
        self.misses = 0
        self._swept = False

    def get(self, key: str, compute: Callable[[], Run], what: str) -> Run:
        if self.root is None:
            self.misses += 1
            return compute()
        if not self._swept:  # once per evaluation: the leftovers of killed runs, not of this one
            remove_stale_temporaries(self.root, "*/.*.tmp")
            self._swept = True
        folder = self.root / key
        run = self._read(folder, what)
        if run is not None:
            self.hits += 1
            logger.info("cache hit: %s (%s)", what, folder / self.RUN)
            return run
        self.misses += 1
        run = compute()
        self._write(folder, run, what)
        return run

    def _read(self, folder: Path, what: str) -> Run | None:
        """The entry's run if it is intact; ``None`` (with a warning if it was damaged) otherwise."""
        run_path, entry_path = folder / self.RUN, folder / self.ENTRY
        if not run_path.exists() and not entry_path.exists():
            return None
        try:
            return self._verified(run_path, entry_path)
        except _DamagedEntry as damage:
            logger.warning("run cache entry %s is damaged: %s; recomputing %s", folder, damage, what)
            return None

    def _verified(self, run_path: Path, entry_path: Path) -> Run | None:
        """The run if it has the sha256 and row count of its entry; ``None`` for an entry without them.

        Raises:
            _DamagedEntry: saying what does not match or cannot be read.
        """
        try:
            entry = json.loads(entry_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _DamagedEntry(f"{self.ENTRY} cannot be read ({type(err).__name__})") from None
        if not isinstance(entry, dict):
            raise _DamagedEntry(f"{self.ENTRY} is not an object")
        if "sha256" not in entry or "rows" not in entry:
            # Written before entries recorded a checksum: nothing to verify it by, so it is a miss
            # (recomputed once, and rewritten with its checksum).
            logger.info(
                "run cache entry %s has no checksum (an older version wrote it): recomputing", entry_path.parent
            )
            return None
        try:
            if sha256_file(run_path) != entry["sha256"]:
                raise _DamagedEntry(f"{self.RUN} does not match the sha256 in {self.ENTRY}")
            run = read_run(run_path)
        except (OSError, UnicodeDecodeError, DataFormatError) as err:
            raise _DamagedEntry(f"{self.RUN} cannot be read ({type(err).__name__})") from None
        rows = sum(len(docs) for docs in run.values())
        if rows != entry["rows"]:
            raise _DamagedEntry(f"{self.RUN} has {rows} rows, {self.ENTRY} records {entry['rows']}")
        return run

    def _write(self, folder: Path, run: Run, what: str) -> None:
        """Write ``run`` and its entry over whatever the folder held; a failure only costs the caching."""
        run_path = folder / self.RUN
        try:
            for path in (run_path, folder / self.ENTRY):
                if path.is_dir() and not path.is_symlink():  # a damaged entry's debris must not block the rename
                    shutil.rmtree(path)
            with writer_atomic_path(run_path) as tmp:
                write_run(tmp, run, tag="retrodistill")
                checksum = sha256_file(tmp)
            entry = {"what": what, "rows": sum(len(docs) for docs in run.values()), "sha256": checksum}
            with writer_atomic_path(folder / self.ENTRY) as tmp:
                tmp.write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            logger.warning("run cache entry %s cannot be written (%s): %s is not cached", folder, err, what)


def spec_identity(spec: ModelSpec, identities: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    if spec.rerank is None:
        return identities[spec.name]
    return {"first_stage": identities[spec.name], "rerank": identities[spec.rerank], "depth": spec.rerank_depth}


def make_run(
    spec: ModelSpec,
    collection: Collection,
    ignore_identical_ids: bool,
    k: int,
    retrievers: Retrievers,
    cache: RunCache,
    identities: Mapping[str, dict[str, Any]],
) -> Run:
    """The model's run on one collection: from the cache, or retrieved (and reranked) and cached."""
    first_key = cache_key(identities[spec.name], collection, k, ignore_identical_ids)
    run = cache.get(
        first_key,
        lambda: retrievers.first_stage(spec, collection, k, ignore_identical_ids),
        f"{spec.name} on {collection.name}",
    )
    if spec.rerank is None:
        return run
    reranker = spec.rerank
    return cache.get(
        cache_key(spec_identity(spec, identities), collection, k, ignore_identical_ids),
        lambda: rerank_run(run, collection, retrievers.reranker(reranker).score, spec.rerank_depth),
        f"{spec.label} on {collection.name}",
    )


def _dir_config_hash(path: Path) -> str:
    """sha256 over a model directory's small config files (json/txt), which change its outputs too."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".txt")):
        if file.name in ("manifest.json", "train_log.json"):
            continue
        digest.update(os.fsencode(file.relative_to(path).as_posix()) + b"\0" + file.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def model_identity(name: str, cache_folder: str | None = None) -> dict[str, Any]:
    """What identifies a model's runs: kind, id, revision (hub commit or weight hash), settings."""
    if name == "bm25s":
        from retrodistill.index.bm25 import BM25Retriever

        r = BM25Retriever()
        return {"kind": "bm25s", "id": "bm25s", "k1": r.k1, "b": r.b, "stemmer": r.stemmer, "stopwords": r.stopwords}
    if name == "pyserini-bm25":
        return {"kind": "pyserini-bm25", "id": "pyserini-bm25", "k1": 0.9, "b": 0.4, "recipe": "beir-flat"}
    identity: dict[str, Any] = {"kind": "dense", "id": name, "revision": model_revision(name, cache_dir=cache_folder)}
    if Path(name).is_dir():
        identity["config"] = _dir_config_hash(Path(name))
    return identity


def cache_key(identity: Mapping[str, Any], collection: Collection, k: int, ignore_identical_ids: bool) -> str:
    payload = {
        "version": CACHE_VERSION,
        "model": identity,
        "corpus": collection.fingerprints.get("corpus"),
        "queries": collection.fingerprints.get("queries"),
        # The queries file holds every split's queries: the run answers only this split's.
        "query_ids": sha256_strings(collection.queries),
        "k": k,
        "ignore_identical_ids": ignore_identical_ids,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
