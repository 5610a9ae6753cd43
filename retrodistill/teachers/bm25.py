"""BM25 as a teacher: the lexical score of any (query, document) pair, over a corpus's statistics.

The easy end of a progressive-distillation ladder (PROD: teachers from weak to strong) and a member of
lexical + dense ensembles (``ensemble-teachers``): ``score-teacher`` stores BM25 scores of the training
candidates like any other teacher's.

Why written here: bm25s scores a query against its whole index (one score per corpus document);
a teacher scores given pairs by their texts. So the corpus is read once, a chunk at a time, for
what BM25 needs besides the pair: each term's document frequency, the number of documents and their
mean length. The words are split, stopped and stemmed by the same code as ``mine-negatives``' index
(:class:`retrodistill.index.bm25._Builder`), and a pair's score is bm25s' Lucene formula in bm25s'
operations (float64 per term, a float32 sum in query-token order), so the teacher gives a candidate the
score ``mine-negatives`` retrieved it with (a test checks this). Memory: the vocabulary and its
frequencies; the corpus's postings are dropped chunk by chunk.

Example (``configs/prod_ladder.yaml`` scores with it)::

    teacher = TEACHERS.build("bm25", {"corpus": "scifact"})
    teacher.score(["gene therapy"], ["Gene therapy for ..."])
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.teachers.base import TEACHERS, Teacher, check_pairs

CHUNK = 10_000  # corpus documents tokenised at a time while counting frequencies


@TEACHERS.register("bm25")
class BM25Teacher(Teacher):
    """Lucene BM25 (bm25s' variant) of a pair, with the document frequencies of ``corpus``.

    Args:
        corpus: A BEIR dataset name or folder (its ``corpus.jsonl``): the collection whose statistics
            the scores use, which should be the one the pairs come from.
        data_dir: Where named datasets live (default ``$RETRODISTILL_DATA`` or ``./data``).
        k1, b: BM25's parameters (``mine-negatives``' defaults: Pyserini's on BEIR).
        stemmer, stopwords: as :class:`~retrodistill.index.bm25.BM25Retriever`.
    """

    def __init__(
        self,
        corpus: str,
        data_dir: str | None = None,
        k1: float = 0.9,
        b: float = 0.4,
        stemmer: str | None = "english",
        stopwords: str | None = "en",
    ) -> None:
        from retrodistill.data.collections import read_corpus
        from retrodistill.data.download import resolve_dataset
        from retrodistill.index.bm25 import TOKEN_PATTERN, BM25Retriever, _Builder

        self.corpus_name = str(corpus)
        documents = read_corpus(Path(resolve_dataset(corpus, data_dir)) / "corpus.jsonl")
        self.corpus_fingerprint = documents.fingerprint
        self.retriever = BM25Retriever(k1=k1, b=b, stemmer=stemmer, stopwords=stopwords)
        counter = _Builder(self.retriever, None)
        total_length = 0
        for start in range(0, len(documents), CHUNK):
            counter.add(documents.texts(np.arange(start, min(len(documents), start + CHUNK))))
            total_length += int(counter.lengths.pop().sum())
            counter.parts.clear()  # the postings: only frequencies and lengths are kept
        self._counter = counter
        self._split = re.compile(TOKEN_PATTERN).findall
        self.n_docs = counter.n_docs
        self.avg_length = np.float64(total_length / max(self.n_docs, 1))
        from bm25s.scoring import _build_idf_array, _select_idf_scorer

        # bm25s' own idf (math.log per term), as the index weights are computed.
        self.idf = _build_idf_array(
            dict(enumerate(counter.df.tolist())), self.n_docs, _select_idf_scorer("lucene"), "float32"
        )
        self.model_name = f"bm25(k1={k1}, b={b})"

    def _stems(self, texts: Sequence[str], *, queries: bool) -> list[list[int]]:
        """Each text's stem ids in order, stopwords and (for queries) words the corpus lacks dropped.

        Document words go through the corpus counter's own lookup (a word it has not seen gets a new
        stem id with df 0, which no query term can match); query words through bm25s' tokenizer, as the
        index searches them.
        """
        import pyarrow as pa

        if queries:
            import bm25s

            tokens = bm25s.tokenize(
                list(texts),
                stopwords=self.retriever.stopwords,
                stemmer=self.retriever._stemmer(),
                return_ids=False,
                show_progress=False,
            )
            ids, known = self._counter.stem_ids, len(self.idf)  # stems scoring added have df 0: dropped
            return [[ids[t] for t in query if ids.get(t, known) < known] for query in tokens]
        import itertools

        split = [self._split(text.lower()) for text in texts]
        counts = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
        flat = pa.array(list(itertools.chain.from_iterable(split)), pa.string()).dictionary_encode()
        stems = self._counter._lookup(flat.dictionary)[flat.indices.to_numpy(zero_copy_only=False)]
        return [[int(s) for s in doc if s >= 0] for doc in np.split(stems, np.cumsum(counts)[:-1])]

    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        check_pairs(queries, docs)
        k1, b = self.retriever.k1, self.retriever.b
        query_stems = self._stems(queries, queries=True)
        doc_stems = self._stems(docs, queries=False)
        scores = np.zeros(len(queries), dtype=np.float32)
        for i, (terms, words) in enumerate(zip(query_stems, doc_stems, strict=True)):
            tf = Counter(words)
            norm = k1 * ((1 - b) + b * np.float64(len(words)) / self.avg_length)
            total = np.float32(0)
            for term in terms:  # the index's float32 additions, term by term in query order
                count = tf.get(term, 0)
                if count:
                    weight = np.float64(self.idf[term]) * (np.float64(count) / (norm + np.float64(count)))
                    total = np.float32(total + np.float32(weight))
            scores[i] = total
        return scores

    def describe(self) -> dict[str, Any]:
        return {
            "name": "bm25",
            "model": self.model_name,
            "revision": self.corpus_fingerprint,  # the statistics' corpus identifies the scores
            "corpus": self.corpus_name,
            "max_length": None,
            "dtype": "fp32",
            "device": "cpu",
            "k1": self.retriever.k1,
            "b": self.retriever.b,
            "method": "lucene",
            "stemmer": self.retriever.stemmer,
            "stopwords": self.retriever.stopwords,
            "documents": self.n_docs,
        }
