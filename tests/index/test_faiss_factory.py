"""``faiss-factory``: recall against exact search, search parameters, training, save and load."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from retrodistill.index.base import INDEXES, DenseIndex
from retrodistill.index.faiss_factory import FaissFactory
from retrodistill.index.faiss_flat import FaissFlatIP

DIM = 32


def _clustered(n: int, seed: int, clusters: int = 40) -> np.ndarray:
    """Unit vectors around ``clusters`` centres (the same centres for every seed): data and queries alike."""
    centres = np.random.default_rng(1234).standard_normal((clusters, DIM))
    rng = np.random.default_rng(seed)
    points = centres[rng.integers(clusters, size=n)] + 0.35 * rng.standard_normal((n, DIM))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def docs() -> np.ndarray:
    return _clustered(3000, seed=0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return _clustered(100, seed=1)


@pytest.fixture(scope="module")
def exact(docs: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = FaissFlatIP(use_gpu=False)
    flat.add(docs)
    return flat.search(queries, 10)


def _recall(ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / k."""
    k = exact_ids.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(ids.tolist(), exact_ids.tolist(), strict=True)]))


def _built(docs: np.ndarray, factory: str, **params: object) -> FaissFactory:
    index = FaissFactory(factory, use_gpu=False, **params)  # type: ignore[arg-type]
    index.add(docs[:1700])
    index.add(docs[1700:])  # ids continue across add() calls, before and after training alike
    return index


def test_registered_and_built_by_name() -> None:
    index = INDEXES.build("faiss-factory", {"factory": "HNSW8,Flat", "use_gpu": False})
    assert isinstance(index, FaissFactory) and isinstance(index, DenseIndex)
    assert len(index) == 0


@pytest.mark.parametrize(
    ("factory", "params"),
    [("IVF32,Flat", {"nprobe": 8}), ("HNSW16,Flat", {"efSearch": 64}), ("IVF4_HNSW8,Flat", {"nprobe": 2})],
)
def test_recall_at_10_against_exact_search_is_high(
    docs: np.ndarray, queries: np.ndarray, exact: tuple[np.ndarray, np.ndarray], factory: str, params: dict
) -> None:
    index = _built(docs, factory, **params)
    scores, ids = index.search(queries, 10)
    assert len(index) == 3000
    assert scores.shape == ids.shape == (100, 10) and ids.dtype == np.int64 and scores.dtype == np.float32
    assert _recall(ids, exact[1]) >= 0.9
    assert (np.diff(scores, axis=1) <= 0).all()


def test_pq_codes_approximate_the_scores(docs: np.ndarray, queries: np.ndarray, exact: tuple) -> None:
    """8 one-byte codes, 8 bytes per vector instead of 128: recall far below raw vectors', far above chance."""
    index = _built(docs, "IVF32,PQ8", nprobe=32)
    _, ids = index.search(queries, 10)
    assert _recall(ids, exact[1]) >= 0.3


def test_nprobe_trades_recall_and_all_lists_is_exact(docs: np.ndarray, queries: np.ndarray, exact: tuple) -> None:
    one = _built(docs, "IVF32,Flat", nprobe=1)
    every = _built(docs, "IVF32,Flat", nprobe=32)
    _, one_ids = one.search(queries, 10)
    every_scores, every_ids = every.search(queries, 10)
    assert _recall(one_ids, exact[1]) < _recall(every_ids, exact[1]) == 1.0
    np.testing.assert_array_equal(every_ids, exact[1])
    np.testing.assert_allclose(every_scores, exact[0], rtol=1e-5)
    one.set_search_params(nprobe=32)  # the same trained index, searched wider: exact too
    np.testing.assert_array_equal(one.search(queries, 10)[1], exact[1])


def test_training_is_seeded(docs: np.ndarray, queries: np.ndarray) -> None:
    """Same seed, same sample and the same k-means: identical indexes; another seed samples others."""
    first = _built(docs, "IVF32,PQ16x4", nprobe=4, train_size=1500).search(queries, 10)
    again = _built(docs, "IVF32,PQ16x4", nprobe=4, train_size=1500).search(queries, 10)
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[0], again[0])
    other = _built(docs, "IVF32,PQ16x4", nprobe=4, train_size=1500, seed=1).search(queries, 10)
    assert not np.array_equal(first[0], other[0])


def test_k_is_clamped_and_unfilled_places_are_padding_at_the_end(docs: np.ndarray, queries: np.ndarray) -> None:
    index = _built(docs[:200], "IVF16,Flat", nprobe=1)  # one list of ~12 vectors per query
    scores, ids = index.search(queries, 5000)
    assert ids.shape == (100, 200)  # clamped to the 200 documents
    found = ids >= 0
    assert found[:, 0].all() and not found.all()
    assert (np.sort(~found, axis=1) == ~found).all()  # padding only after the last found document
    assert (scores[~found] < -1e38).all()


@pytest.mark.parametrize("factory", ["IVF16,PQ8x4,RFlat", "IVF16,PQ8x4,Refine(Flat)"])
def test_a_refinement_with_every_list_and_k_factor_times_k_documents_is_exact_search(
    docs: np.ndarray, queries: np.ndarray, exact: tuple[np.ndarray, np.ndarray], factory: str
) -> None:
    """4-bit codes find few of the exact top 10; re-ranking every document (16 lists × k_factor·k ≥ n) finds all."""
    index = _built(docs, factory, nprobe=16, k_factor=len(docs) // 10)
    scores, ids = index.search(queries, 10)
    np.testing.assert_array_equal(ids, exact[1])
    np.testing.assert_allclose(scores, exact[0], rtol=1e-5)  # exact scores, not the codes' approximations
    index.set_search_params(k_factor=1)  # the codes' own top 10, only re-ordered
    assert _recall(index.search(queries, 10)[1], exact[1]) < 0.9
    assert index.params()["k_factor"] == 1


def test_nprobe_reaches_the_index_inside_a_refinement(docs: np.ndarray, queries: np.ndarray) -> None:
    index = _built(docs, "IVF16,PQ8x4,RFlat", nprobe=1, k_factor=2)
    found = (index.search(queries, 1000)[1] >= 0).sum(axis=1)
    assert found.max() < 1000  # one list of 16 per query, ~190 of the 3,000 documents: the rest is padding
    index.set_search_params(nprobe=16)
    assert (index.search(queries, 1000)[1] >= 0).all()


def test_k_factor_is_saved_and_applies_after_loading(docs: np.ndarray, queries: np.ndarray, tmp_path: Path) -> None:
    index = _built(docs, "IVF16,PQ8x4,RFlat", nprobe=4, k_factor=8)
    index.save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["search"] == {"nprobe": 4, "efSearch": None, "k_factor": 8}
    loaded = FaissFactory.load(tmp_path / "index")
    assert loaded.k_factor == 8
    for got, expected in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, expected)
    built = INDEXES.build("faiss-factory", {"factory": "IVF16,PQ8x4,RFlat", "k_factor": 8, "use_gpu": False})
    assert built.params()["k_factor"] == 8  # as `evaluate --index-param k_factor=8` builds it


def test_a_bad_k_factor_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"^k_factor must be at least 1, got 0$"):
        FaissFactory("IVF8,PQ8x4,RFlat", k_factor=0, use_gpu=False)
    with pytest.raises(
        ValueError, match=r"^k_factor is a search parameter of refined indexes \(…,RFlat\); 'IVF8,PQ8x4' has none$"
    ):
        FaissFactory("IVF8,PQ8x4", k_factor=4, use_gpu=False)
    index = FaissFactory("IVF8,PQ8x4,RFlat", k_factor=4, use_gpu=False)
    with pytest.raises(ValueError, match=r"^k_factor must be at least 1, got -2$"):
        index.set_search_params(k_factor=-2)
    assert index.k_factor == 4


def test_a_factory_string_faiss_rejects_is_one_line_naming_it() -> None:
    with pytest.raises(ValueError, match=r"'IVF64,Bogus'.*could not parse code description Bogus") as err:
        FaissFactory("IVF64,Bogus", use_gpu=False)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"'IVF8,PQ5' for dimension 32: .*multiple of the number of subquantizers"):
        FaissFactory("IVF8,PQ5", dim=DIM, use_gpu=False)  # refused before any vector is added


def test_a_search_parameter_the_index_lacks_is_named() -> None:
    with pytest.raises(ValueError, match="nprobe is a search parameter of IVF indexes; 'HNSW8,Flat' has none"):
        FaissFactory("HNSW8,Flat", nprobe=4, use_gpu=False)
    with pytest.raises(ValueError, match="efSearch is a search parameter of HNSW indexes"):
        FaissFactory("IVF8,Flat", efSearch=4, use_gpu=False)


def test_fewer_training_vectors_than_lists_is_refused(docs: np.ndarray) -> None:
    index = FaissFactory("IVF64,Flat", use_gpu=False)
    index.add(docs[:50])
    with pytest.raises(ValueError, match=r"'IVF64,Flat' has 64 lists but only 50 vectors to train them on"):
        index.search(docs[:1], 1)


def test_few_training_vectors_warn(docs: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    index = FaissFactory("IVF16,Flat", use_gpu=False, train_size=100)
    index.add(docs[:500])
    with caplog.at_level(logging.WARNING, logger="retrodistill.index.faiss_factory"):
        index.search(docs[:1], 1)
    assert "100 training vectors for 16 lists; FAISS' k-means wants at least 624 (39 per list)" in caplog.text
    assert index.trained_on == 100 and len(index) == 500


def test_a_training_failure_is_one_line() -> None:
    index = FaissFactory("PQ8", use_gpu=False)  # 256 centroids per sub-quantizer
    index.add(_clustered(100, seed=2))
    with pytest.raises(ValueError, match=r"could not train 'PQ8' on 100 vectors: Number of training points \(100\)"):
        index.search(_clustered(1, seed=3), 1)


def test_save_and_load_give_identical_results(docs: np.ndarray, queries: np.ndarray, tmp_path: Path) -> None:
    index = _built(docs, "IVF32,PQ16x4", nprobe=8)
    built_for = {"encoder": {"id": "m", "revision": "r1"}, "corpus": "sha256:c"}
    index.save(tmp_path / "index", built_for)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no staging folder left beside it
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["index.faiss", "manifest.json"]
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["factory"] == "IVF32,PQ16x4"
    assert manifest["search"] == {"nprobe": 8, "efSearch": None, "k_factor": None}
    assert (manifest["vectors"], manifest["dim"], manifest["trained_on"]) == (3000, DIM, 3000)
    assert manifest["encoder"] == built_for["encoder"] and manifest["corpus"] == "sha256:c"
    assert manifest["bytes"] == (tmp_path / "index" / "index.faiss").stat().st_size

    loaded = FaissFactory.load(tmp_path / "index", {"factory": "IVF32,PQ16x4", "nprobe": 8}, built_for)
    for got, expected in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, expected)
    same = FaissFactory.load(tmp_path / "index")  # no parameters: the saved ones
    np.testing.assert_array_equal(same.search(queries, 10)[1], index.search(queries, 10)[1])
    wider = FaissFactory.load(tmp_path / "index", {"factory": "IVF32,PQ16x4", "nprobe": 32})  # search changes only
    assert wider.nprobe == 32 and len(wider) == 3000


def test_saving_into_a_folder_with_files_is_refused(docs: np.ndarray, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        _built(docs, "HNSW8,Flat").save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_an_index_of_another_model_or_corpus_is_refused(docs: np.ndarray, tmp_path: Path) -> None:
    built_for = {"encoder": {"id": "m", "revision": "r1"}, "corpus": "sha256:c"}
    _built(docs, "HNSW8,Flat").save(tmp_path / "index", built_for)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "index").iterdir()}
    other_model = {**built_for, "encoder": {"id": "m", "revision": "r2"}}
    with pytest.raises(ValueError, match=r"index built for model m@r1 / corpus sha256:c, not m@r2 / sha256:c"):
        FaissFactory.load(tmp_path / "index", None, other_model)
    with pytest.raises(ValueError, match=r"index built for model m@r1 / corpus sha256:c, not m@r1 / sha256:d"):
        FaissFactory.load(tmp_path / "index", None, {**built_for, "corpus": "sha256:d"})
    settings = {**built_for, "encoder": {"id": "m", "revision": "r1", "settings": {"max_seq_length": 64}}}
    with pytest.raises(ValueError, match=r"same weights, other encoder settings"):
        FaissFactory.load(tmp_path / "index", None, settings)
    with pytest.raises(ValueError, match=r"index built with factory='HNSW8,Flat', not factory='HNSW16,Flat'"):
        FaissFactory.load(tmp_path / "index", {"factory": "HNSW16,Flat"}, built_for)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "index").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_ef_construction_builds_the_graph_is_saved_and_a_saved_index_keeps_its_own(
    docs: np.ndarray, queries: np.ndarray, exact: tuple, tmp_path: Path
) -> None:
    index = _built(docs, "HNSW8,Flat", efConstruction=200, efSearch=16)
    inner = index._faiss.downcast_index(index._cpu)
    assert inner.hnsw.efConstruction == 200 and index.params()["efConstruction"] == 200
    default = _built(docs, "HNSW8,Flat", efSearch=16)
    assert index._faiss.downcast_index(default._cpu).hnsw.efConstruction == 40  # FAISS' own
    links = [index._faiss.vector_to_array(i.hnsw.neighbors) for i in (inner, index._faiss.downcast_index(default._cpu))]
    assert not np.array_equal(*links)  # another graph was built
    assert _recall(index.search(queries, 10)[1], exact[1]) > 0.9
    index.save(tmp_path / "index")
    assert json.loads((tmp_path / "index" / "manifest.json").read_text())["efConstruction"] == 200
    loaded = FaissFactory.load(tmp_path / "index")
    assert loaded.efConstruction == 200
    with pytest.raises(ValueError, match=r"index built with efConstruction=200, not efConstruction=None"):
        FaissFactory.load(tmp_path / "index", {"factory": "HNSW8,Flat"})
    with pytest.raises(ValueError, match=r"^efConstruction is a build parameter of HNSW indexes; 'IVF8,Flat' has"):
        FaissFactory("IVF8,Flat", efConstruction=100, use_gpu=False)
    with pytest.raises(ValueError, match=r"^efConstruction must be at least 1, got 0$"):
        FaissFactory("HNSW8,Flat", efConstruction=0, use_gpu=False)
