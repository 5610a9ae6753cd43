"""BM25 retrieval through bm25s (Lucene's BM25 variant, English stemming and stopwords).

Used to mine negatives and, later, as a baseline. bm25s does the scoring; this module only maps
between our string ids and bm25s' integer positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BM25Retriever:
    """Lexical top-k retrieval over a corpus.

    Args:
        k1: term-frequency saturation (Pyserini uses 0.9 on BEIR).
        b: length normalisation (Pyserini uses 0.4 on BEIR).
        stemmer: a PyStemmer language, or ``None`` for no stemming.
        stopwords: a bm25s stopword list name (``"en"``) or ``None``.
    """

    k1: float = 0.9
    b: float = 0.4
    stemmer: str | None = "english"
    stopwords: str | None = "en"
    _doc_ids: list[str] = field(default_factory=list, init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False)

    def _stemmer(self) -> Any:
        if self.stemmer is None:
            return None
        try:
            import Stemmer
        except ImportError as err:  # pragma: no cover - PyStemmer is a declared dependency
            raise ImportError("BM25 stemming needs PyStemmer: pip install PyStemmer") from err
        return Stemmer.Stemmer(self.stemmer)

    def _tokenize(self, texts: Sequence[str], show_progress: bool) -> Any:
        import bm25s

        return bm25s.tokenize(
            list(texts), stopwords=self.stopwords, stemmer=self._stemmer(), show_progress=show_progress
        )

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], show_progress: bool = False) -> None:
        import bm25s

        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} ids but {len(texts)} texts")
        if not doc_ids:
            raise ValueError("cannot index an empty corpus")
        self._doc_ids = list(doc_ids)
        self._model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        self._model.index(self._tokenize(texts, show_progress), show_progress=show_progress)

    def search(
        self, queries: Sequence[str], k: int, show_progress: bool = False
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(doc_id, score)`` per query, best first; documents scoring 0 are left out."""
        if self._model is None:
            raise RuntimeError("call index() before search()")
        k = min(k, len(self._doc_ids))
        tokens = self._tokenize(queries, show_progress)
        positions, scores = self._model.retrieve(tokens, k=k, show_progress=show_progress, n_threads=1)
        results = []
        for row_pos, row_scores in zip(positions, scores, strict=True):
            results.append(
                [(self._doc_ids[int(p)], float(s)) for p, s in zip(row_pos, row_scores, strict=True) if s > 0]
            )
        return results
