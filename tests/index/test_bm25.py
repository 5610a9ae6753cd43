from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrodistill.index.bm25 import BM25Retriever, read_index_manifest

WORDS = "cancer tumour tumours heart cardiac running runs ran study the of and trial patients effect".split()


def _corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 12))) for _ in range(n)]
    texts[3] = ""  # an empty document
    texts[5] = "the of and"  # stopwords only
    texts[7] = "Cancer, CANCER; cancer!"  # case and punctuation
    return texts


QUERIES = ["cancer trial", "running heart", "the and", "", "tumours studies patients", "unknownword"]


def _reference(texts: list[str]) -> object:
    """bm25s' own index, built the way the retriever used to build it."""
    import bm25s
    import Stemmer

    model = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    tokens = bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)
    model.index(tokens, show_progress=False)
    return model


def _weights(model: object) -> dict[tuple[str, int], bytes]:
    """(term, document) → the float32 weight's bytes, independent of term numbering."""
    scores, vocab = model.scores, model.vocab_dict  # type: ignore[attr-defined]
    term = {v: k for k, v in vocab.items()}
    indptr, indices, data = scores["indptr"], scores["indices"], scores["data"]
    return {
        (term[t], int(indices[j])): data[j].tobytes()
        for t in range(len(indptr) - 1)
        for j in range(indptr[t], indptr[t + 1])
    }


@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_chunked_index_is_bit_identical_to_bm25s(chunk_size: int) -> None:
    import bm25s
    import Stemmer

    texts = _corpus(40)
    reference = _reference(texts)
    retriever = BM25Retriever(chunk_size=chunk_size)
    retriever.index([f"d{i}" for i in range(len(texts))], texts)
    assert _weights(retriever._model) == _weights(reference)
    tokens = bm25s.tokenize(QUERIES, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)
    expected_rows, expected_scores = reference.retrieve(tokens, k=10, show_progress=False, n_threads=1)  # type: ignore[attr-defined]
    rows, scores = retriever.search_rows(QUERIES, 10)
    # Positive scores: bm25s' documents in bm25s' order; after them, row -1 and score 0.
    hit = expected_scores > 0
    np.testing.assert_array_equal(rows[hit], expected_rows[hit])
    np.testing.assert_array_equal(scores[hit], expected_scores[hit])
    assert (rows[~hit] == -1).all() and (scores[~hit] == 0).all()


def test_index_on_disk_is_memory_mapped_and_loads_back(tmp_path: Path) -> None:
    texts = _corpus(30)
    in_memory = BM25Retriever(chunk_size=7)
    in_memory.index([f"d{i}" for i in range(len(texts))], texts)
    on_disk = BM25Retriever(chunk_size=7)
    on_disk.build((texts[i : i + 7] for i in range(0, len(texts), 7)), tmp_path / "index", extra={"corpus": "x"})
    assert isinstance(on_disk._model.scores["data"], np.memmap)
    assert not list(tmp_path.glob("index.tmp-*"))  # published by rename, nothing left behind
    manifest = read_index_manifest(tmp_path / "index")
    assert manifest is not None and manifest["num_docs"] == 30 and manifest["corpus"] == "x"
    loaded = BM25Retriever.load(tmp_path / "index", doc_ids=[f"d{i}" for i in range(len(texts))])
    for other in (on_disk, loaded):
        for got, want in zip(other.search_rows(QUERIES, 5), in_memory.search_rows(QUERIES, 5), strict=True):
            np.testing.assert_array_equal(got, want)
    assert loaded.search(QUERIES, 5) == in_memory.search(QUERIES, 5)
    with pytest.raises(RuntimeError, match="no document ids"):
        on_disk.search(QUERIES, 5)


def test_ties_keep_bm25s_order() -> None:
    """Equal scores are ordered as bm25s orders them (its selection algorithm decides), not by row."""
    import bm25s
    import Stemmer

    texts = [f"cancer {filler}" for filler in ["alpha", "beta", "gamma"] * 20] + ["heart"] * 5
    reference = _reference(texts)
    retriever = BM25Retriever()
    retriever.index([f"d{i}" for i in range(len(texts))], texts)
    tokens = bm25s.tokenize(["cancer"], stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)
    expected_rows, _ = reference.retrieve(tokens, k=25, show_progress=False, n_threads=1)  # type: ignore[attr-defined]
    rows, scores = retriever.search_rows(["cancer"], 25)
    assert len(set(scores[0].tolist())) == 1  # all tied
    np.testing.assert_array_equal(rows, expected_rows)


@pytest.mark.parametrize("k", [1, 5, 25, 70])
def test_ties_by_row(k: int) -> None:
    """``ties="row"``: positive scores best first, equal scores by corpus position, exactly k of them."""
    import bm25s
    import Stemmer

    texts = [f"cancer {filler}" for filler in ["alpha", "beta", "cancer gamma"] * 20] + ["heart"] * 5
    texts += _corpus(40, seed=1)
    reference = _reference(texts)
    retriever = BM25Retriever(ties="row")
    retriever.index([f"d{i}" for i in range(len(texts))], texts)
    for query in QUERIES:
        tokens = bm25s.tokenize(
            [query], stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False, show_progress=False
        )
        dense = reference.get_scores(tokens[0]) if tokens[0] else np.zeros(len(texts))  # type: ignore[attr-defined]
        positive = np.flatnonzero(dense > 0)
        expected = positive[np.lexsort((positive, -dense[positive]))][:k]
        rows, scores = retriever.search_rows([query], k)
        np.testing.assert_array_equal(rows[0][: len(expected)], expected)
        np.testing.assert_array_equal(scores[0][: len(expected)], dense[expected].astype(np.float32))
        assert (rows[0][len(expected) :] == -1).all()
    bad = BM25Retriever(ties="random")
    bad.index(["a"], ["xy"])
    with pytest.raises(ValueError, match="ties must be one of"):
        bad.search_rows(["xy"], 1)


def test_search_leaves_out_zero_scores_and_clamps_k() -> None:
    retriever = BM25Retriever()
    retriever.index(["a", "b", "c"], ["cats purr", "dogs bark loudly", "the cat sleeps"])
    hits = retriever.search(["cat", "the", "zebra"], k=10)
    assert [d for d, _ in hits[0]] and {d for d, _ in hits[0]} == {"a", "c"}
    assert hits[1] == [] and hits[2] == []
    rows, scores = retriever.search_rows(["cat"], k=10)
    assert rows.shape == scores.shape == (1, 3)


def test_empty_corpus_and_misuse_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Retriever().index([], [])
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Retriever().build(iter([]), tmp_path / "index")
    assert not (tmp_path / "index").exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="ids but"):
        BM25Retriever().index(["a"], ["x", "y"])
    with pytest.raises(RuntimeError, match="before searching"):
        BM25Retriever().search(["x"], 1)
