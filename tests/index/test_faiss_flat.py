from __future__ import annotations

import numpy as np
import pytest

from retrodistill.index.base import INDEXES, DenseIndex
from retrodistill.index.faiss_flat import FaissFlatIP


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_registered_and_built_by_name() -> None:
    index = INDEXES.build("faiss-flat-ip", {"use_gpu": False})
    assert isinstance(index, FaissFlatIP)
    assert isinstance(index, DenseIndex)
    assert len(index) == 0


def test_exact_top_k_matches_numpy_brute_force() -> None:
    docs, queries = _random(500, 16, seed=0), _random(37, 16, seed=1)
    index = FaissFlatIP(use_gpu=False, query_batch_size=8)  # several query batches
    index.add(docs[:200])
    index.add(docs[200:])  # ids continue across add() calls
    assert len(index) == 500

    scores, ids = index.search(queries, k=10)

    assert scores.shape == ids.shape == (37, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    expected_scores = queries @ docs.T  # (37, 500)
    expected_ids = np.argsort(-expected_scores, axis=1)[:, :10]
    np.testing.assert_array_equal(ids, expected_ids)  # random floats: no ties
    np.testing.assert_allclose(scores, np.take_along_axis(expected_scores, expected_ids, 1), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_k_larger_than_corpus_is_clamped_without_padding_ids() -> None:
    docs = _random(3, 4, seed=2)
    index = FaissFlatIP(use_gpu=False)
    index.add(docs)
    scores, ids = index.search(_random(2, 4, seed=3), k=10)
    assert ids.shape == scores.shape == (2, 3)
    assert (ids >= 0).all()
    assert sorted(ids[0].tolist()) == [0, 1, 2]


def test_empty_index_returns_empty_rows() -> None:
    scores, ids = FaissFlatIP(use_gpu=False).search(_random(2, 4, seed=4), k=5)
    assert scores.shape == ids.shape == (2, 0)


def test_bad_shapes_are_named() -> None:
    index = FaissFlatIP(use_gpu=False)
    index.add(_random(3, 4, seed=5))
    with pytest.raises(ValueError, match="dimension 5"):
        index.search(_random(1, 5, seed=6), k=1)
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        index.add(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search(_random(1, 4, seed=7), k=0)


def test_use_gpu_true_without_a_gpu_says_so() -> None:
    import faiss

    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match="no GPU"):
        FaissFlatIP(use_gpu=True)


def test_parts_merge_to_the_single_index_answer() -> None:
    """Each add() of a big enough batch gets its own part; the merged top-k equals brute force."""
    docs, queries = _random(300, 8, seed=8), _random(21, 8, seed=9)
    index = FaissFlatIP(use_gpu=False, query_batch_size=5, part_bytes=1)  # every add is a new part
    for start in range(0, 300, 70):  # parts of 70, 70, 70, 70, 20 rows
        index.add(docs[start : start + 70])
    assert len(index) == 300 and len(index._parts) == 5

    scores, ids = index.search(queries, k=25)

    expected_scores = queries @ docs.T
    expected_ids = np.argsort(-expected_scores, axis=1)[:, :25]
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, np.take_along_axis(expected_scores, expected_ids, 1), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    small_k, _ = index.search(queries, k=300)  # k above every part's size: clamped per part, all documents
    assert small_k.shape == (21, 300)


def test_small_adds_fill_the_last_part() -> None:
    index = FaissFlatIP(use_gpu=False, part_bytes=10 * 4 * 4)  # a part takes adds until it holds 10 rows of d=4
    for _ in range(6):
        index.add(_random(4, 4, seed=10))
    assert [int(p.ntotal) for p in index._parts] == [12, 12]
