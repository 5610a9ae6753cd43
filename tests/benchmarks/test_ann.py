"""The ANN benchmark's pieces at a tiny size: list counts, recall, the mixture, the index strings (no model)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import ann  # noqa: E402

from retrodistill.index.faiss_factory import FaissFactory  # noqa: E402


def test_nlist_is_near_four_root_n_with_39_vectors_per_list() -> None:
    assert ann.nlist_for(1_000_000) == 4096  # 4·√10⁶ = 4000 → 2¹²; 39·4096 ≤ 10⁶
    assert ann.nlist_for(5183) == 128  # 4·√5183 ≈ 288 → 256, but 39·256 > 5183
    assert all(n >= 39 * ann.nlist_for(n) for n in (100, 5000, 20_000, 8_800_000))


def test_recall_counts_shared_ids_and_never_padding() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, -1, -1], [5, 6, 7, 8]])
    assert ann.recall_at(approx, exact) == pytest.approx((2 / 4 + 4 / 4) / 2)


@pytest.mark.parametrize("fit", [ann.fit_mixture, ann.kmeans_mixture])
def test_mixture_samples_are_seeded_unit_vectors_near_the_data(fit: object) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 8)) * 4
    data = ann.unit(centres[rng.integers(3, size=600)] + 0.1 * rng.standard_normal((600, 8)))
    mixture = fit(data, 3, 0)  # type: ignore[operator]
    drawn = mixture.sample(1000, seed=1, chunk=300)
    assert drawn.shape == (1000, 8) and drawn.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(drawn, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(drawn, mixture.sample(1000, seed=1, chunk=300))
    # every drawn vector lies near one of the data's three directions
    assert (drawn @ ann.unit(centres).T).max(axis=1).min() > 0.9


@pytest.mark.parametrize(("quick", "opq"), [(False, False), (False, True), (True, False)])
def test_the_index_strings_fit_minilm_vectors(quick: bool, opq: bool) -> None:
    specs = ann.index_specs(1_000_000 if not quick else 20_000, 384, quick, opq)
    labels = ["IVF-Flat", "IVF-PQ", "HNSW"] + (["OPQ+IVF-PQ"] if quick or opq else [])
    assert [s.label for s in specs] == labels
    for spec in specs:
        for chain in spec.chains:
            FaissFactory(spec.factory, dim=384, use_gpu=False, **chain[-1])
    assert specs[1].factory == ("IVF4096,PQ96x8,RFlat" if not quick else "IVF512,PQ96x8,RFlat")
    assert [chain[0] for chain in specs[1].chains] == [{"nprobe": 1, "k_factor": f} for f in ann.K_FACTORS]


def test_a_sweep_stops_at_full_recall_records_memory_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    docs, queries = ann.unit(rng.standard_normal((800, 16))), ann.unit(rng.standard_normal((20, 16)))
    exact_ids = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, : ann.K]
    data = ann.Dataset("tiny", docs, queries, "random")
    probes = tuple({"nprobe": p} for p in (1, 2, 4, 8, 16, 32))
    spec = ann.IndexSpec("IVF-Flat", "IVF16,Flat", (probes,), 800)
    args = argparse.Namespace(repeats=1, seed=0)
    results = ann.Results(tmp_path)
    ann.sweep(spec, data, exact_ids, 0.0, results, args)
    rows = list(results.data["rows"].values())
    assert rows[-1]["setting"] == "nprobe=16" and rows[-1]["recall"] == 1.0  # every list: exact; 32 never measured
    assert all(r["peak_rss"] > 0 and r["bytes"] > 0 for r in rows)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("every row was in results.json: nothing to build")

    monkeypatch.setattr("retrodistill.index.faiss_factory.FaissFactory", no_build)
    ann.sweep(spec, data, exact_ids, 0.0, ann.Results(tmp_path), args)
