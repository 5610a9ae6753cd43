"""BiEncoderTeacher against embeddings computed by hand with SentenceTransformer.encode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrodistill.data.collections import load_beir
from retrodistill.teachers import TEACHERS
from retrodistill.teachers.bi_encoder import BiEncoderTeacher


@pytest.fixture(scope="module")
def toy_pairs(toy_dir: Path) -> list[tuple[str, str]]:
    """Every toy query with 4 documents (48 pairs, 12 distinct queries, repeated documents)."""
    collection = load_beir(toy_dir, "train")
    doc_ids = sorted(collection.corpus)
    queries = sorted(collection.queries.values())
    return [
        (q, collection.doc_text(doc_ids[(i + 3 * j) % len(doc_ids)]))
        for i, q in enumerate(queries)
        for j in range(4)
    ]


@pytest.fixture(scope="module")
def embeddings(varied_st_dir: Path, toy_pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(query, document) embeddings of each pair, encoded one text at a time by hand: (P, dim) each."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(varied_st_dir), device="cpu")
    q = np.stack([model.encode(query) for query, _ in toy_pairs])
    d = np.stack([model.encode(doc) for _, doc in toy_pairs])
    return q, d


def test_cosine_is_the_cosine_of_the_embeddings(
    varied_st_dir: Path, toy_pairs: list[tuple[str, str]], embeddings: tuple[np.ndarray, np.ndarray]
) -> None:
    q, d = embeddings
    expected = (q * d).sum(1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(d, axis=1))
    teacher = BiEncoderTeacher(str(varied_st_dir), similarity="cosine", batch_size=5, device="cpu")
    scores = teacher.score([a for a, _ in toy_pairs], [b for _, b in toy_pairs])
    assert scores.dtype == np.float32 and scores.shape == (len(toy_pairs),)
    assert expected.std() > 0.01  # the comparison is not vacuous
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)


def test_dot_is_the_dot_product_of_the_embeddings(
    varied_st_dir: Path, toy_pairs: list[tuple[str, str]], embeddings: tuple[np.ndarray, np.ndarray]
) -> None:
    q, d = embeddings
    expected = (q * d).sum(1)
    teacher = BiEncoderTeacher(str(varied_st_dir), similarity="dot", device="cpu")
    scores = teacher.score([a for a, _ in toy_pairs], [b for _, b in toy_pairs])
    assert not np.allclose(expected, (q * d).sum(1) / np.linalg.norm(q, axis=1) / np.linalg.norm(d, axis=1))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)


def test_each_distinct_text_is_encoded_once(varied_st_dir: Path, toy_pairs: list[tuple[str, str]]) -> None:
    teacher = BiEncoderTeacher(str(varied_st_dir), device="cpu")
    encoded: list[str] = []
    for name in ("encode_query", "encode_document"):
        original = getattr(teacher.model, name)

        def spy(texts: list[str], original=original, **kwargs):  # type: ignore[no-untyped-def]
            encoded.extend(texts)
            return original(texts, **kwargs)

        setattr(teacher.model, name, spy)
    queries, docs = [a for a, _ in toy_pairs], [b for _, b in toy_pairs]
    first = teacher.score(queries[:20], docs[:20])
    second = teacher.score(queries, docs)  # the first 20 pairs' texts are cached
    np.testing.assert_array_equal(second[:20], first)
    assert len(encoded) == len(set(queries)) + len(set(docs))


def test_describe_and_parameters(varied_st_dir: Path) -> None:
    teacher = TEACHERS.build(
        "bi-encoder", {"model": str(varied_st_dir), "similarity": "dot", "max_length": 32, "device": "cpu"}
    )
    info = teacher.describe()
    assert (info["name"], info["similarity"], info["max_length"], info["dtype"]) == (
        "bi-encoder",
        "dot",
        32,
        "fp32",
    )
    assert info["revision"].startswith("sha256:")
    with pytest.raises(ValueError, match="similarity"):
        BiEncoderTeacher(str(varied_st_dir), similarity="l2", device="cpu")
