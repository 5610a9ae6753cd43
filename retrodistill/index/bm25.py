"""BM25 retrieval through bm25s (Lucene's BM25 variant, English stemming and stopwords), at any corpus size.

bm25s scores; this module builds its index a chunk of documents at a time, so that an 8.8M-passage
corpus never exists as Python token lists (bm25s' own ``index`` holds one Python list per document:
tens of GB at MS MARCO's size). For each chunk, texts are split with bm25s' token pattern, stopwords
dropped and words stemmed exactly as ``bm25s.tokenize`` does, and the chunk's (term, document, term
frequency) triples kept as numpy arrays, spilled to disk when the index has a directory. Once document
frequencies and the average length are known, the BM25 weights are computed with bm25s' formulas, in
the same float64 operations as bm25s (so the index is bit-identical to ``bm25s.BM25.index``'s), and the
CSC matrix is assembled a range of terms at a time.

On disk the index is bm25s' own layout (``data.csc.index.npy``, ``indices.csc.index.npy``,
``indptr.csc.index.npy``, ``vocab.index.json``, ``params.index.json``) plus ``retrodistill.json`` (what
it was built from), written into a temporary folder and renamed into place, and read back with
``bm25s.BM25.load(mmap=True)``: retrieval touches only the posting lists of the query's terms.

Search adds a query's posting lists into one score array, in bm25s' float32 order, and returns
bm25s' top-k: the k best positive scores, found among the documents that have one, and when scores
tie, bm25s' own selection over every score decides their order (``ties="bm25s"``, the default:
candidates stay those of earlier versions) or, ~10× faster on large corpora, the corpus row does
(``ties="row"``).

Example::

    >>> r = BM25Retriever()
    >>> r.index(["d1", "d2"], ["cats purr", "dogs bark loudly"])
    >>> r.search(["barking dog"], k=2)  # doctest: +ELLIPSIS
    [[('d2', ...)]]
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: bm25s' default token pattern (scikit-learn's): runs of two or more word characters.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
#: How equal scores are ordered (see ``BM25Retriever.ties``).
TIES = ("bm25s", "row")
#: Our record of what an on-disk index was built from, beside bm25s' files.
INDEX_MANIFEST = "retrodistill.json"
INDEX_FORMAT = "retrodistill.bm25s-index"
INDEX_VERSION = 1
#: Non-zeros per pass when the CSC matrix is assembled: bounds the memory of the last step (~12 B each).
_ASSEMBLY_NNZ = 1 << 25


@dataclass
class BM25Retriever:
    """Lexical top-k retrieval over a corpus.

    Args:
        k1: term-frequency saturation (Pyserini uses 0.9 on BEIR).
        b: length normalisation (Pyserini uses 0.4 on BEIR).
        stemmer: a PyStemmer language, or ``None`` for no stemming.
        stopwords: a bm25s stopword list name (``"en"``) or ``None``.
        chunk_size: documents tokenised at a time while indexing.
        ties: the order of documents with equal scores: ``"bm25s"``, the order bm25s' selection gives
            them (what this retriever has always returned: same candidates, same fingerprints), or
            ``"row"``, by corpus position, which needs no pass over every score and is ~10× faster
            on large corpora (1M passages: 4.7 against 55 ms per query), and the same on any machine.
    """

    k1: float = 0.9
    b: float = 0.4
    stemmer: str | None = "english"
    stopwords: str | None = "en"
    chunk_size: int = 50_000
    ties: str = "bm25s"
    _doc_ids: Any = field(default=None, init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False)

    def _stemmer(self) -> Any:
        if self.stemmer is None:
            return None
        try:
            import Stemmer
        except ImportError as err:  # pragma: no cover - PyStemmer is a declared dependency
            raise ImportError("BM25 stemming needs PyStemmer: pip install PyStemmer") from err
        return Stemmer.Stemmer(self.stemmer)

    def params(self) -> dict[str, Any]:
        """What the index depends on, besides the texts."""
        import bm25s

        return {
            "k1": self.k1,
            "b": self.b,
            "method": "lucene",
            "stemmer": self.stemmer,
            "stopwords": self.stopwords,
            "token_pattern": TOKEN_PATTERN,
            "bm25s": bm25s.__version__,
        }

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], show_progress: bool = False) -> None:
        """Index ``texts`` in memory; :meth:`search` returns ``doc_ids``."""
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} ids but {len(texts)} texts")
        if not doc_ids:
            raise ValueError("cannot index an empty corpus")
        chunks = (texts[i : i + self.chunk_size] for i in range(0, len(texts), self.chunk_size))
        self.build(chunks, show_progress=show_progress, total=len(texts))
        self._doc_ids = list(doc_ids)

    def build(
        self,
        chunks: Iterable[Sequence[str]],
        directory: str | os.PathLike[str] | None = None,
        *,
        extra: dict[str, Any] | None = None,
        show_progress: bool = False,
        total: int | None = None,
    ) -> None:
        """Index texts given a chunk at a time; a document's position is its place in that order.

        Args:
            chunks: lists of document texts, in corpus order.
            directory: where to save the index (then memory-mapped from there); ``None`` keeps it in memory.
            extra: recorded in the index's ``retrodistill.json`` (e.g. the corpus fingerprint).
            show_progress: a progress bar over the documents (``total`` of them, when known), and a
                line when done.
        """
        from retrodistill.progress import progress_bar

        started = time.perf_counter()
        builder = _Builder(self, None if directory is None else Path(str(directory) + f".tmp-{os.getpid()}"))
        try:
            with progress_bar(total, "BM25 index", "documents", show_progress) as advance:
                for texts in chunks:
                    builder.add(texts)
                    advance(len(texts))
            if builder.n_docs == 0:
                raise ValueError("cannot index an empty corpus")
            if directory is None:
                self._model = builder.model()
                return
            builder.save({"format": INDEX_FORMAT, "version": INDEX_VERSION, **self.params(), **(extra or {})})
        except BaseException:
            builder.discard()
            raise
        target = Path(directory)
        if target.exists():  # another process finished the same index first
            builder.discard()
        else:
            os.replace(builder.directory, target)  # type: ignore[arg-type]
        self._model = _load_model(target)
        if show_progress:
            took = time.perf_counter() - started
            print(f"BM25 index: {builder.n_docs:,} documents, {len(builder.df):,} terms in {took:.1f} s", flush=True)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], doc_ids: Sequence[str] | None = None) -> BM25Retriever:
        """A retriever over an index saved by :meth:`build` (memory-mapped); parameters come from it."""
        manifest = read_index_manifest(directory)
        if manifest is None:
            raise FileNotFoundError(f"{directory}: not a BM25 index written by retrodistill")
        retriever = cls(manifest["k1"], manifest["b"], manifest["stemmer"], manifest["stopwords"])
        retriever._model = _load_model(Path(directory))
        retriever._doc_ids = None if doc_ids is None else list(doc_ids)
        return retriever

    def __len__(self) -> int:
        if self._model is None:
            return 0
        return int(self._model.scores["num_docs"])

    def search_rows(
        self,
        queries: Sequence[str],
        k: int,
        show_progress: bool = False,
        advance: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` document positions and scores per query, best first.

        The documents with a positive score and their order are exactly those of bm25s' ``retrieve``
        (see :func:`_top_k`); the places after them hold row -1 and score 0. ``advance(1)`` is
        called after each query (a progress bar's, :mod:`retrodistill.progress`); ``show_progress``
        alone shows a bar over these queries.

        Returns:
            ``(rows, scores)``: int64 and float32 arrays of shape ``(len(queries), min(k, len(self)))``.
        """
        import bm25s

        if self._model is None:
            raise RuntimeError("call index() or build() before searching")
        if self.ties not in TIES:
            raise ValueError(f"ties must be one of {', '.join(TIES)}, got {self.ties!r}")
        k = min(k, len(self))
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        if not queries:
            return rows, scores
        tokens = bm25s.tokenize(
            list(queries),
            stopwords=self.stopwords,
            stemmer=self._stemmer(),
            return_ids=False,
            show_progress=False,
        )
        if advance is None and show_progress:
            from retrodistill.progress import progress_bar

            with progress_bar(len(queries), "BM25 retrieval", "queries") as bar:
                return self.search_rows(queries, k, advance=bar)
        model = self._model
        data, indices, indptr = model.scores["data"], model.scores["indices"], model.scores["indptr"]
        dense = np.zeros(len(self), dtype=np.float32)
        for i, query in enumerate(tokens):
            dense[:] = 0
            # bm25s' scoring (np.add.at term by term, in query order); a term's documents are distinct, so
            # a plain indexed add does the same float32 additions in the same order, much faster.
            for term in model.get_tokens_ids(query):
                start, end = int(indptr[term]), int(indptr[term + 1])
                dense[indices[start:end]] += data[start:end]
            top_rows, top_scores = _top_k(dense, k, by_row=self.ties == "row")
            rows[i, : len(top_rows)] = top_rows
            scores[i, : len(top_rows)] = top_scores
            if advance is not None:
                advance(1)
        return rows, scores

    def search(self, queries: Sequence[str], k: int, show_progress: bool = False) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(doc_id, score)`` per query, best first; documents scoring 0 are left out."""
        if self._model is not None and self._doc_ids is None:
            raise RuntimeError("this index has no document ids: use search_rows()")
        rows, scores = self.search_rows(queries, k, show_progress=show_progress)
        return [
            [(self._doc_ids[int(p)], float(s)) for p, s in zip(row_pos, row_scores, strict=True) if s > 0]
            for row_pos, row_scores in zip(rows, scores, strict=True)
        ]


def _top_k(dense: np.ndarray, k: int, by_row: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The positive-scoring part of the top-``k`` of ``dense``, best first.

    bm25s partitions the whole score array, which takes ~70 ms for 1M documents when most scores
    are 0. When the ``k`` best positive scores (and the one after them) are all distinct, the answer
    does not depend on the selection algorithm, so it is found among the positive scores alone. When
    two of them tie, bm25s' order for them depends on its algorithm (and on the CPU's sort kernels), so
    bm25s is asked, unless ``by_row``: then ties are broken by row (the stable sort already did).
    """
    from bm25s.selection import topk

    positive = np.flatnonzero(dense)  # rows, ascending
    values = dense[positive]
    if len(values) > k + 1:
        keep = np.sort(np.argpartition(values, len(values) - (k + 1))[-(k + 1) :])  # back in row order
        positive, values = positive[keep], values[keep]
    order = np.argsort(-values, kind="stable")  # equal scores stay in row order
    positive, values = positive[order], values[order]
    edge_tie = len(values) > k and values[k] == values[k - 1]
    if by_row and edge_tie:
        # Documents tied with the k-th may be among those the partition left out: take every one.
        rows_all = np.flatnonzero(dense)
        values_all = dense[rows_all]
        take = values_all >= values[k - 1]
        rows_all, values_all = rows_all[take], values_all[take]
        order = np.argsort(-values_all, kind="stable")
        return rows_all[order][:k].astype(np.int64), values_all[order][:k]
    head = values[:k]
    if not by_row and (edge_tie or np.any(head[1:] == head[:-1])):
        top_scores, top_rows = topk(dense, k, sorted=True)
        hit = np.asarray(top_scores) > 0
        return np.asarray(top_rows)[hit].astype(np.int64), np.asarray(top_scores)[hit]
    return positive[:k].astype(np.int64), values[:k]


def read_index_manifest(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``retrodistill.json`` of a saved index, or ``None`` when there is no complete index there."""
    path = Path(directory) / INDEX_MANIFEST
    if not path.is_file():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest if manifest.get("format") == INDEX_FORMAT else None


def _load_model(directory: Path) -> Any:
    import bm25s

    return bm25s.BM25.load(directory, mmap=True, load_corpus=False, show_progress=False)


class _Builder:
    """Accumulates (term, document, tf) triples chunk by chunk; assembles bm25s' CSC score matrix."""

    def __init__(self, retriever: BM25Retriever, directory: Path | None) -> None:
        import bm25s.tokenization

        self.retriever = retriever
        self.directory = directory
        self.split = re.compile(TOKEN_PATTERN).findall
        self.stopwords = set(bm25s.tokenization._infer_stopwords(retriever.stopwords) or [])
        self.stemmer = retriever._stemmer()
        self.known: Any = None  # every lowercased word seen (pyarrow strings) …
        self.known_stem = np.zeros(0, dtype=np.int64)  # … and its stem id, -1 for a stopword
        self.stem_ids: dict[str, int] = {}
        self.df = np.zeros(0, dtype=np.int64)
        self.lengths: list[np.ndarray] = []
        self.parts: list[tuple[Any, Any, Any]] = []  # per chunk: stem, doc, tf sorted by (stem, doc)
        self.n_docs = 0
        import pyarrow as pa

        self.known = pa.array([], pa.string())
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
            (directory / "spill").mkdir(parents=True)

    def _lookup(self, words: Any) -> np.ndarray:
        """Stem id of each distinct word of a chunk (a pyarrow string array), -1 for stopwords.

        Known words are found by Arrow's hash lookup; only new ones reach Python, stemmed in one call.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        at = pc.index_in(words, value_set=self.known).fill_null(-1).to_numpy(zero_copy_only=False).copy()
        new = np.flatnonzero(at < 0)
        if len(new):
            fresh = words.take(pa.array(new)).to_pylist()
            kept = [w for w in fresh if w not in self.stopwords]
            stems = self.stemmer.stemWords(kept) if self.stemmer is not None and kept else kept
            stem_of = {w: self.stem_ids.setdefault(s, len(self.stem_ids)) for w, s in zip(kept, stems, strict=True)}
            ids = np.fromiter((stem_of.get(w, -1) for w in fresh), dtype=np.int64, count=len(fresh))
            at[new] = len(self.known) + np.arange(len(new))
            self.known = pa.concat_arrays([self.known, pa.array(fresh, pa.string())])
            self.known_stem = np.concatenate([self.known_stem, ids])
        return self.known_stem[at]

    def add(self, texts: Sequence[str]) -> None:
        import pyarrow as pa

        n = len(texts)
        if n == 0:
            return
        split = [self.split(t.lower()) for t in texts]
        counts = np.fromiter(map(len, split), dtype=np.int64, count=n)
        flat = pa.array(list(itertools.chain.from_iterable(split)), pa.string()).dictionary_encode()
        del split
        stem = self._lookup(flat.dictionary)[flat.indices.to_numpy(zero_copy_only=False)]
        doc = np.repeat(np.arange(n, dtype=np.int64), counts)
        keep = stem >= 0
        stem, doc = stem[keep], doc[keep]
        self.lengths.append(np.bincount(doc, minlength=n))
        n_stems = max(len(self.stem_ids), 1)
        keys, tf = np.unique(doc * n_stems + stem, return_counts=True)
        doc, stem = keys // n_stems, keys % n_stems
        if len(self.df) < len(self.stem_ids):
            self.df = np.concatenate([self.df, np.zeros(len(self.stem_ids) - len(self.df), dtype=np.int64)])
        self.df += np.bincount(stem, minlength=len(self.df))
        order = np.argsort(stem, kind="stable")  # by term, documents ascending within a term
        arrays = (
            stem[order].astype(np.int32),
            (doc[order] + self.n_docs).astype(np.int32),
            tf[order].astype(np.float32),
        )
        if self.directory is None:
            self.parts.append(arrays)
        else:
            names = []
            for name, array in zip(("stem", "doc", "tf"), arrays, strict=True):
                path = self.directory / "spill" / f"{len(self.parts):06d}.{name}.npy"
                np.save(path, array)
                names.append(path)
            self.parts.append((names[0], names[1], names[2]))
        self.n_docs += n

    def _part(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        part = self.parts[index]
        if self.directory is None:
            return part
        return tuple(np.load(p, mmap_mode="r") for p in part)  # type: ignore[return-value]

    def _weights(self) -> tuple[np.ndarray, np.ndarray, np.floating[Any]]:
        from bm25s.scoring import _build_idf_array, _select_idf_scorer

        lengths = np.concatenate(self.lengths)
        # bm25s' own idf (math.log per term), so every weight matches bm25s.BM25.index bit for bit.
        idf = _build_idf_array(dict(enumerate(self.df.tolist())), self.n_docs, _select_idf_scorer("lucene"), "float32")
        return idf, lengths, lengths.mean()

    def _ranges(self, indptr: np.ndarray) -> list[tuple[int, int]]:
        """Term ranges of at most ``_ASSEMBLY_NNZ`` non-zeros each (a term is never split)."""
        bounds, start, n_terms = [], 0, len(indptr) - 1
        while start < n_terms:
            end = int(np.searchsorted(indptr, indptr[start] + _ASSEMBLY_NNZ, side="right")) - 1
            end = min(max(end, start + 1), n_terms)
            bounds.append((start, end))
            start = end
        return bounds

    def _assemble(self, indptr: np.ndarray, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """The CSC ``data`` and ``indices`` of terms ``start … end-1``, from every chunk's triples."""
        idf, lengths, avg = self._cache
        k1, b = self.retriever.k1, self.retriever.b
        base = indptr[start]
        data = np.empty(int(indptr[end] - base), dtype=np.float32)
        indices = np.empty(len(data), dtype=np.int32)
        heads = indptr[start:end] - base
        for index in range(len(self.parts)):
            stem, doc, tf = self._part(index)
            lo, hi = np.searchsorted(stem, [start, end])
            if lo == hi:
                continue
            local = np.asarray(stem[lo:hi], dtype=np.int64) - start
            docs = np.asarray(doc[lo:hi])
            within = np.arange(len(local)) - np.searchsorted(local, local, side="left")
            at = heads[local] + within
            # The operations and their order are bm25s' (_score_tfc_lucene; float64 with float32 tf).
            tf64 = np.asarray(tf[lo:hi]).astype(np.float64)
            tfc = tf64 / (k1 * ((1 - b) + b * lengths[docs].astype(np.float64) / avg) + tf64)
            data[at] = (idf[local + start].astype(np.float64) * tfc).astype(np.float32)
            indices[at] = docs
            heads += np.bincount(local, minlength=len(heads))
        return data, indices

    def _matrix_layout(self) -> np.ndarray:
        self._cache = self._weights()
        indptr = np.zeros(len(self.df) + 1, dtype=np.int64)
        np.cumsum(self.df, out=indptr[1:])
        return indptr

    def _vocab(self) -> dict[str, int]:
        vocab = dict(self.stem_ids)
        vocab.setdefault("", len(vocab))  # bm25s adds the empty token (create_empty_token=True)
        return vocab

    def model(self) -> Any:
        import bm25s

        indptr = self._matrix_layout()
        data, indices = self._assemble(indptr, 0, len(indptr) - 1)
        r = self.retriever
        model = bm25s.BM25(k1=r.k1, b=r.b, method="lucene")
        model.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": self.n_docs}
        model.vocab_dict = self._vocab()
        model.unique_token_ids_set = set(model.vocab_dict.values())
        model.nonoccurrence_array = None
        return model

    def save(self, manifest: dict[str, Any]) -> None:
        import bm25s

        assert self.directory is not None
        indptr = self._matrix_layout()
        nnz = int(indptr[-1])
        with (
            open(self.directory / "data.csc.index.npy", "wb") as f_data,
            open(self.directory / "indices.csc.index.npy", "wb") as f_indices,
        ):
            for f, dtype in ((f_data, np.float32), (f_indices, np.int32)):
                header = {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False,
                    "shape": (nnz,),
                }
                np.lib.format.write_array_header_1_0(f, header)
            for start, end in self._ranges(indptr):
                data, indices = self._assemble(indptr, start, end)
                data.tofile(f_data)
                indices.tofile(f_indices)
        np.save(self.directory / "indptr.csc.index.npy", indptr)
        (self.directory / "vocab.index.json").write_text(json.dumps(self._vocab(), ensure_ascii=False), "utf-8")
        r = self.retriever
        params = {
            "k1": r.k1,
            "b": r.b,
            "delta": 0.5,
            "method": "lucene",
            "idf_method": "lucene",
            "dtype": "float32",
            "int_dtype": "int32",
            "num_docs": self.n_docs,
            "version": bm25s.__version__,
            "backend": "numpy",
        }
        (self.directory / "params.index.json").write_text(json.dumps(params, indent=4))
        shutil.rmtree(self.directory / "spill")
        manifest = {**manifest, "num_docs": self.n_docs, "num_terms": len(self.df), "nnz": nnz}
        (self.directory / INDEX_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    def discard(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
