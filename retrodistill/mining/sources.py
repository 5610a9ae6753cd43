"""Where ``mine-negatives`` gets its candidates: BM25 (bm25s or Lucene), a dense model, or a TREC run.

Each source answers every query of the split with :class:`Hits`: flat numpy arrays, one entry per
retrieved (query, document), so nothing is a Python object per hit at MS MARCO size (500k queries
× 100 documents). Queries are numbered by their position in ``collection.queries``, documents by
their corpus row.

A source is named by a string, as ``--retriever`` takes it:

==================  ======================================================================================
``bm25s``           bm25s BM25 (k1, b and tie order from the config), its index cached under the corpus key
``pyserini-bm25``   Lucene BM25 through Pyserini (the ``pyserini`` extra and a Java 21 runtime)
``run:FILE``        a TREC run file (``qid Q0 docid rank score tag``); its order by score is the ranking.
                    Every query and document id must exist in the collection: an unknown one is an
                    error naming ``FILE:LINE``
anything else       a dense model (hub id or folder: the teacher, a student, any sentence-transformers
                    model) searching its corpus embeddings, read from and written to the corpus-
                    embedding cache, with the configured index (exact by default; ``index_dir``: a
                    persisted ``faiss-factory`` index, reused when built for this model and corpus)
==================  ======================================================================================

Every source can also score the judged positives it did not retrieve (:attr:`Hits.positive_score`):
the margin rules of :mod:`retrodistill.mining.filters` compare each negative with its query's
positives *in the same source's scale*. Dense models and bm25s score them exactly; Pyserini and a
run file know only the positives they retrieved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.data.collections import Collection, DataFormatError
from retrodistill.progress import progress_bar

logger = logging.getLogger(__name__)

#: Queries retrieved per call.
QUERY_CHUNK = 1_000
LEXICAL = ("bm25s", "pyserini-bm25")


@dataclass
class Hits:
    """One source's retrieved documents: ``query[i]`` retrieved corpus row ``doc[i]`` at ``rank[i]``
    (1-based) with ``score[i]``; grouped by query, best first within a query."""

    query: np.ndarray  # int64, position in collection.queries
    doc: np.ndarray  # int64, corpus row
    rank: np.ndarray  # int32
    score: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.query)

    @classmethod
    def concat(cls, parts: Sequence[Hits]) -> Hits:
        if not parts:
            return cls(*(np.zeros(0, dtype=t) for t in (np.int64, np.int64, np.int32, np.float32)))
        return cls(
            np.concatenate([p.query for p in parts]),
            np.concatenate([p.doc for p in parts]),
            np.concatenate([p.rank for p in parts]),
            np.concatenate([p.score for p in parts]),
        )

    @classmethod
    def of_matrix(cls, rows: np.ndarray, scores: np.ndarray, found: np.ndarray, start: int) -> Hits:
        """A search's ``(queries, k)`` corpus rows and scores, ``found`` where a hit is real, the first
        query being number ``start``; ranks are column positions + 1."""
        q_index, column = np.nonzero(found)
        return cls(
            q_index.astype(np.int64) + start,
            rows[found].astype(np.int64),
            column.astype(np.int32) + 1,
            scores[found].astype(np.float32),
        )

    def take(self, keep: np.ndarray) -> Hits:
        return Hits(self.query[keep], self.doc[keep], self.rank[keep], self.score[keep])


def source_label(spec: str) -> str:
    """The name a source is recorded under in the ``source`` column: the spec as given, stripped."""
    return spec.strip()


def check_specs(specs: Sequence[str]) -> list[str]:
    """The retriever specs, stripped; an empty list, an empty entry or a repeated one is a ``ValueError``."""
    labels = [source_label(s) for s in specs]
    if not labels:
        raise ValueError("retrievers: give at least one (bm25s, pyserini-bm25, run:FILE or a model)")
    for label in labels:
        if not label or label == "run:":
            raise ValueError(f"retrievers: empty entry in {list(specs)}")
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ValueError(f"retrievers: {', '.join(repeated)} given twice")
    for label in labels:
        if label.startswith("run:") and not Path(label[4:]).is_file():
            raise FileNotFoundError(f"{label[4:]}: no such run file")
    return labels


class Source:
    """A retriever over one collection: :meth:`search` gives :class:`Hits` for every query."""

    label: str

    def search(self, collection: Collection, k: int, show_progress: bool) -> Hits:
        raise NotImplementedError

    def score_pairs(self, collection: Collection, query: np.ndarray, doc: np.ndarray) -> np.ndarray | None:
        """This source's score of (query position, corpus row) pairs it may not have retrieved; ``None``
        when it cannot score a pair it did not retrieve."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.label}


def _query_texts(collection: Collection) -> list[str]:
    return [collection.queries[q] for q in collection.queries]


class BM25sSource(Source):
    """bm25s, through the cached index :func:`~retrodistill.stages.mine_negatives.bm25_retriever` keeps."""

    def __init__(self, k1: float, b: float, ties: str, dataset: str | None = None, data_dir: str | None = None) -> None:
        self.label, self.k1, self.b, self.ties = "bm25s", k1, b, ties
        # the dataset whose corpus statistics score unretrieved positives; None: they are not scored
        self.dataset, self.data_dir = dataset, data_dir

    def search(self, collection: Collection, k: int, show_progress: bool) -> Hits:
        from retrodistill.stages.mine_negatives import bm25_retriever

        retriever = bm25_retriever(collection, self.k1, self.b, ties=self.ties, show_progress=show_progress)
        texts = _query_texts(collection)
        parts = []
        started = time.perf_counter()
        with progress_bar(len(texts), "BM25 retrieval", "queries", show_progress) as advance:
            for start in range(0, len(texts), QUERY_CHUNK):
                rows, scores = retriever.search_rows(texts[start : start + QUERY_CHUNK], k, advance=advance)
                # bm25s pads a row with documents scoring 0: they were not retrieved
                parts.append(Hits.of_matrix(rows, scores, scores > 0, start))
        if show_progress:
            print(f"BM25 retrieval: {len(texts):,} queries in {time.perf_counter() - started:.1f} s", flush=True)
        return Hits.concat(parts)

    def score_pairs(self, collection: Collection, query: np.ndarray, doc: np.ndarray) -> np.ndarray | None:
        """Lucene BM25 with the corpus's statistics (:class:`~retrodistill.teachers.bm25.BM25Teacher`),
        which equals bm25s' retrieval score."""
        from retrodistill.teachers.bm25 import BM25Teacher

        if self.dataset is None:
            return None
        teacher = BM25Teacher(self.dataset, self.data_dir, k1=self.k1, b=self.b)
        texts = _query_texts(collection)
        doc_texts = _corpus_texts(collection)(doc)
        return np.asarray(teacher.score([texts[q] for q in query.tolist()], doc_texts), dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": self.label, "k1": self.k1, "b": self.b, "ties": self.ties}


class PyseriniSource(Source):
    """Lucene BM25 through Pyserini (:class:`~retrodistill.index.pyserini_bm25.PyseriniBM25`)."""

    def __init__(self) -> None:
        self.label = "pyserini-bm25"

    def search(self, collection: Collection, k: int, show_progress: bool) -> Hits:
        from retrodistill.index.pyserini_bm25 import PyseriniBM25

        retriever = PyseriniBM25()
        doc_ids = list(collection.corpus)
        retriever.index(doc_ids, [collection.doc_text(d) for d in doc_ids], show_progress=show_progress)
        texts = _query_texts(collection)
        parts = []
        for start in range(0, len(texts), QUERY_CHUNK):
            ranked = retriever.search(texts[start : start + QUERY_CHUNK], k, show_progress=show_progress)
            parts.append(_ranked_hits(collection, ranked, start))
        return Hits.concat(parts)

    def describe(self) -> dict[str, Any]:
        from retrodistill.index.pyserini_bm25 import RECIPE

        return {"name": self.label, "recipe": RECIPE}


def _ranked_hits(collection: Collection, ranked: Sequence[Sequence[tuple[str, float]]], start: int) -> Hits:
    """Per-query ``[(doc_id, score), …]`` lists, best first, as :class:`Hits` (queries from ``start``)."""
    from retrodistill.train.examples import corpus_rows

    lengths = np.fromiter((len(r) for r in ranked), dtype=np.int64, count=len(ranked))
    doc_ids = [d for r in ranked for d, _ in r]
    scores = np.fromiter((s for r in ranked for _, s in r), dtype=np.float32, count=len(doc_ids))
    query = np.repeat(np.arange(start, start + len(ranked), dtype=np.int64), lengths)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    rank = (np.arange(len(doc_ids), dtype=np.int64) - offsets + 1).astype(np.int32)
    return Hits(query, corpus_rows(collection, doc_ids), rank, scores)


def _corpus_texts(collection: Collection) -> Callable[[np.ndarray], list[str]]:
    from retrodistill.train.examples import corpus_texts

    return corpus_texts(collection)


class DenseSource(Source):
    """A dense model searching the corpus: its embeddings through the corpus-embedding cache, its index
    from ``index_dir`` when one saved there fits (see :func:`~retrodistill.evaluate.retrieval.corpus_index`)."""

    def __init__(
        self,
        name: str,
        *,
        batch_size: int,
        index: str = "faiss-flat-ip",
        index_params: dict[str, Any] | None = None,
        index_dir: str | None = None,
        embeddings: str | None = None,
        device: str | None = None,
    ) -> None:
        self.label = name
        self.batch_size = batch_size
        self.index, self.index_params, self.index_dir = index, dict(index_params or {}), index_dir
        self.embeddings = embeddings
        self.device = device
        self._model: Any = None
        self._identity: dict[str, Any] | None = None

    def _load(self) -> Any:
        if self._model is None:
            from retrodistill.evaluate.retrieval import load_model
            from retrodistill.evaluate.runs import model_identity

            self._model = load_model(self.label, device=self.device)
            self._identity = model_identity(self.label)
        return self._model

    def search(self, collection: Collection, k: int, show_progress: bool) -> Hits:
        from retrodistill.data.embeddings import default_embedding_dir
        from retrodistill.data.encoding import encode_texts
        from retrodistill.evaluate.retrieval import corpus_index, open_embedding_cache

        model = self._load()
        assert self._identity is not None
        saved = self.index_dir is not None and (Path(self.index_dir) / "manifest.json").is_file()
        cache = None
        if not saved:  # a saved index needs no corpus vectors
            root = Path(self.embeddings) if self.embeddings else default_embedding_dir()
            cache = open_embedding_cache(model, collection, root, self._identity)
        index = corpus_index(
            model,
            collection,
            self.index,
            self.index_params,
            batch_size=self.batch_size,
            show_progress=show_progress,
            embedding_cache=cache,
            index_dir=self.index_dir,
            model_identity=self._identity,
        )
        texts = _query_texts(collection)
        parts = []
        with progress_bar(len(texts), f"dense retrieval ({self.label})", "queries", show_progress) as advance:
            for start in range(0, len(texts), QUERY_CHUNK):
                vectors = encode_texts(model, texts[start : start + QUERY_CHUNK], "query", self.batch_size, False)
                scores, rows = index.search(vectors, min(k, len(collection.corpus)))
                # an approximate index pads a row it cannot fill with -1
                parts.append(Hits.of_matrix(rows, scores, rows >= 0, start))
                advance(len(vectors))
        return Hits.concat(parts)

    def score_pairs(self, collection: Collection, query: np.ndarray, doc: np.ndarray) -> np.ndarray | None:
        """The inner product of the query's and the document's vectors, encoded as search encodes them."""
        from retrodistill.data.encoding import encode_texts

        model = self._load()
        texts = _query_texts(collection)
        unique_q, q_at = np.unique(query, return_inverse=True)
        unique_d, d_at = np.unique(doc, return_inverse=True)
        q_vec = encode_texts(model, [texts[q] for q in unique_q.tolist()], "query", self.batch_size, False)
        d_vec = encode_texts(model, _corpus_texts(collection)(unique_d), "document", self.batch_size, False)
        return np.einsum("ij,ij->i", q_vec[q_at], d_vec[d_at]).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        self._load()
        return {
            "name": self.label,
            "model": self._identity,
            "index": {"name": self.index, "params": self.index_params, "dir": self.index_dir},
        }


class RunFileSource(Source):
    """A TREC run file, read column-wise; each query's documents ordered by score (ties: file order)."""

    def __init__(self, spec: str) -> None:
        self.label = spec
        self.path = Path(spec[4:])

    def search(self, collection: Collection, k: int, show_progress: bool) -> Hits:
        import pyarrow as pa
        import pyarrow.compute as pc

        from retrodistill.evaluate.run_files import read_run

        table = _read_run_table(self.path)
        if table is None:  # not parseable column-wise: the line reader names the bad line
            run = read_run(self.path)
            if not run:  # no lines at all (pyarrow refuses an empty CSV before the check below)
                raise DataFormatError(self.path, None, "empty run file")
            table = pa.table(
                {
                    "qid": [q for q, docs in run.items() for _ in docs],
                    "docid": [d for docs in run.values() for d in docs],
                    "score": [s for docs in run.values() for s in docs.values()],
                }
            )
        qids, docids = table.column("qid").combine_chunks(), table.column("docid").combine_chunks()
        query_ids = pa.array(list(collection.queries), pa.string())
        q_pos = pc.index_in(qids, value_set=query_ids)
        in_split = pc.is_valid(q_pos)
        if not pc.any(in_split).as_py():
            raise DataFormatError(
                self.path, None, f"none of its query ids is a {collection.split} query of {collection.name}"
            )
        # Queries of other splits are skipped (a run of every MS MARCO query mines one split);
        # a document the corpus lacks is an error: the run is of another corpus.
        doc_rows = _corpus_row_array(collection, docids)
        unknown = pc.is_null(doc_rows)
        if pc.any(unknown).as_py():
            row = pc.index(unknown, True).as_py()
            raise DataFormatError(
                self.path,
                _line_of_row(self.path, row),
                f"document id {docids[row].as_py()!r} is not in the corpus of {collection.name}",
            )
        keep = in_split.to_numpy(zero_copy_only=False)
        query = q_pos.to_numpy(zero_copy_only=False)[keep].astype(np.int64)
        doc = doc_rows.to_numpy(zero_copy_only=False)[keep].astype(np.int64)
        score = table.column("score").to_numpy()[keep].astype(np.float32)
        if not np.isfinite(score).all():
            row = int(np.flatnonzero(keep)[np.flatnonzero(~np.isfinite(score))[0]])
            raise DataFormatError(self.path, _line_of_row(self.path, row), "score is not a finite number")
        key = query * max(len(collection.corpus), 1) + doc
        if len(np.unique(key)) != len(key):
            read_run(self.path)  # raises, naming the repeated pair's line
        order = np.lexsort((np.arange(len(query)), -score, query))  # by query, score descending, file order
        query, doc, score = query[order], doc[order], score[order]
        starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]])
        lengths = np.diff(np.r_[starts, len(query)])
        rank = (np.arange(len(query)) - np.repeat(starts, lengths) + 1).astype(np.int32)
        keep = rank <= k
        return Hits(query[keep], doc[keep], rank[keep], score[keep])

    def describe(self) -> dict[str, Any]:
        from retrodistill.evaluate.runs import run_file_identity

        return {"name": self.label, **run_file_identity(self.path)}


def _read_run_table(path: Path) -> Any:
    """``qid``, ``docid``, ``score`` of a run file whose columns are single spaces or tabs; ``None`` otherwise."""
    import pyarrow as pa
    import pyarrow.csv as csv

    names = ["qid", "q0", "docid", "rank", "score", "tag"]
    with open(path, "rb") as f:
        head = f.read(65536)
    delimiter = "\t" if b"\t" in head.split(b"\n", 1)[0] else " "
    try:
        table = csv.read_csv(
            path,
            csv.ReadOptions(column_names=names),
            csv.ParseOptions(delimiter=delimiter, quote_char=False, escape_char=False),
            csv.ConvertOptions(
                column_types={"qid": pa.string(), "docid": pa.string(), "rank": pa.int64(), "score": pa.float64()},
                include_columns=["qid", "docid", "rank", "score"],
                null_values=[],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if table.num_rows == 0:
        raise DataFormatError(path, None, "empty run file")
    return table


def _corpus_row_array(collection: Collection, doc_ids: Any) -> Any:
    """Corpus rows of an Arrow string array of ids, null where the corpus has no such id."""
    import pyarrow as pa
    import pyarrow.compute as pc

    corpus = collection.corpus
    ids = corpus.ids if hasattr(corpus, "ids") else pa.array(list(corpus), pa.string())
    return pc.index_in(doc_ids, value_set=ids)


def _line_of_row(path: Path, row: int) -> int:
    """The 1-based line of a run file's ``row``-th record (blank lines are not records)."""
    seen = -1
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    return number
    return seen + 1


def build_source(spec: str, config: Any) -> Source:
    """The :class:`Source` a ``--retriever`` string names (``config``: the :class:`~retrodistill.config.MineConfig`)."""
    if spec == "bm25s":
        return BM25sSource(config.k1, config.b, config.ties, config.data.dataset, config.data.data_dir)
    if spec == "pyserini-bm25":
        return PyseriniSource()
    if spec.startswith("run:"):
        return RunFileSource(spec)
    return DenseSource(
        spec,
        batch_size=config.batch_size,
        index=config.index.name,
        index_params=config.index.params,
        index_dir=config.index_dir,
        embeddings=config.embeddings,
        device=config.device,
    )
