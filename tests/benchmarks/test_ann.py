"""The ANN benchmark's pieces at a tiny size: list counts, recall, the mixture, the index strings (no model)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import ann  # noqa: E402
import ann_report  # noqa: E402
import ann_vectors  # noqa: E402

from retrodistill.index.faiss_factory import FaissFactory  # noqa: E402


def test_nlist_is_near_four_root_n_with_39_vectors_per_list() -> None:
    assert ann.nlist_for(1_000_000) == 4096  # 4·√10⁶ = 4000 → 2¹²; 39·4096 ≤ 10⁶
    assert ann.nlist_for(5183) == 128  # 4·√5183 ≈ 288 → 256, but 39·256 > 5183
    assert all(n >= 39 * ann.nlist_for(n) for n in (100, 5000, 20_000, 8_800_000))


def test_recall_counts_shared_ids_and_never_padding() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, -1, -1], [5, 6, 7, 8]])
    assert ann.recall_at(approx, exact) == pytest.approx((2 / 4 + 4 / 4) / 2)


def three_directions(n: int = 600, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around three random directions, with noise correlated across dimensions."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, dim)) * 4
    mixing = rng.standard_normal((dim, dim)) * 0.1
    data = ann_vectors.unit(centres[rng.integers(3, size=n)] + rng.standard_normal((n, dim)) @ mixing)
    return data, centres


@pytest.mark.parametrize("spec", ["diag:3", "full:3", "kde:0.1"])
def test_mixture_samples_are_seeded_unit_vectors_near_the_data(spec: str) -> None:
    data, centres = three_directions()
    mixture = ann_vectors.fit_mixture(data, spec, 0)
    drawn = mixture.sample(1000, seed=1, chunk=300)
    assert drawn.shape == (1000, 8) and drawn.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(drawn, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(drawn, mixture.sample(1000, seed=1, chunk=300))
    # every drawn vector lies near one of the data's three directions
    assert (drawn @ ann_vectors.unit(centres).T).max(axis=1).min() > 0.9


def test_a_full_mixture_draws_the_covariance_it_fitted() -> None:
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    data = rng.multivariate_normal([0.0, 0.0], cov, size=4000)
    mixture = ann_vectors.fit_mixture(data, "full:1", 0)
    raw = mixture.means[0] + rng.standard_normal((20_000, 2)) @ mixture.factors[0].T
    np.testing.assert_allclose(np.cov(raw.T), cov, atol=0.1)
    diag = ann_vectors.fit_mixture(data, "diag:1", 0)  # keeps the variances, loses the correlation
    assert np.count_nonzero(diag.factors[0] - np.diag(np.diag(diag.factors[0]))) == 0


def test_auto_picks_the_likeliest_mixture_on_held_out_vectors_and_keeps_the_choice(tmp_path: Path) -> None:
    data, _ = three_directions(900)
    best, scores = ann_vectors.select_mixture(data, ("diag:1", "full:1", "full:3"), seed=0)
    assert set(scores) == {"diag:1", "full:1", "full:3"} and best == max(scores, key=scores.__getitem__)
    assert best == "full:3"  # three correlated clusters: one component, or no correlations, fits worse
    args = argparse.Namespace(mixture="auto", out=tmp_path, quick=True, seed=0)
    mixture, facts = ann.chosen_mixture(data, "documents", args)
    assert facts["chosen"] in ann_vectors.QUICK_MIXTURES and (tmp_path / "mixture-documents.json").is_file()
    assert mixture.means.shape[0] == ann_vectors.parse_mixture(facts["chosen"])[1]
    facts["held_out_loglik"] = {"stale": 0.0}  # a resumed run reads the stored choice, fits no candidates
    (tmp_path / "mixture-documents.json").write_text(json.dumps({**facts, "chosen": "diag:2"}))
    again, facts2 = ann.chosen_mixture(data, "documents", args)
    assert facts2["chosen"] == "diag:2" and again.means.shape[0] == 2


@pytest.mark.parametrize("dim", [4, 48])  # in 48 dimensions sklearn's KernelDensity comes out nats too high
def test_a_kernel_density_estimate_is_scored_as_the_mixture_it_samples_from(dim: int) -> None:
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    data, _ = three_directions(300, dim=dim)
    train, rest = data[:240].astype(np.float64), data[240:].astype(np.float64)
    mixture = ann_vectors.fit_mixture(train, "kde:0.4", 0)
    cov = mixture.factors @ mixture.factors.T  # one covariance for every component, centred on each vector
    np.testing.assert_allclose(cov, 0.16 * ann_vectors.covariance(train), atol=1e-12)
    per_component = np.stack([multivariate_normal(mean, cov).logpdf(rest) for mean in mixture.means])
    expected = (logsumexp(per_component, axis=0) - np.log(len(train))).mean()
    assert ann_vectors.held_out_loglik(train, rest, "kde:0.4", 0) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("spec", ["full", "diag:0", "tied:4", "full:x", "kde:0", "kde:-1", "diag:1.5"])
def test_a_bad_mixture_spec_is_one_clear_error(spec: str) -> None:
    with pytest.raises(SystemExit, match=f"^--scale-check '{spec}': expected auto"):
        ann.parse_args(["--scale-check", f"kde:0.5,{spec}"])
    with pytest.raises(SystemExit, match="expected auto, diag:K or full:K .* or kde:H"):
        ann.parse_args(["--mixture", spec])


@pytest.mark.parametrize(("quick", "opq"), [(False, False), (False, True), (True, False)])
def test_the_index_strings_fit_minilm_vectors(quick: bool, opq: bool) -> None:
    specs = ann.index_specs(1_000_000 if not quick else 20_000, 384, quick, opq)
    labels = ["IVF-Flat", "IVF-PQ", "IVF-PQ 4-bit fast-scan", "HNSW", "HNSW efConstruction 200"]
    labels += ["HNSW M64 efConstruction 200"]
    labels += ["OPQ+IVF-PQ"] if quick or opq else []
    assert [s.label for s in specs] == labels
    for spec in specs:
        for chain in spec.chains:
            FaissFactory(spec.factory, dim=384, use_gpu=False, **spec.build, **chain[-1])
    assert specs[1].factory == ("IVF4096,PQ96x8,RFlat" if not quick else "IVF512,PQ96x8,RFlat")
    assert [chain[0] for chain in specs[1].chains] == [{"nprobe": 1, "k_factor": f} for f in ann.K_FACTORS]


def test_a_sweep_stops_at_full_recall_records_memory_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    docs, queries = ann_vectors.unit(rng.standard_normal((800, 16))), ann_vectors.unit(rng.standard_normal((20, 16)))
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


@pytest.mark.parametrize("true_dim", [2, 6])
def test_the_local_intrinsic_dimension_finds_the_surface_the_points_fill(true_dim: int) -> None:
    from retrodistill.index.faiss_flat import FaissFlatIP

    rng = np.random.default_rng(0)
    inside = np.zeros((20_000, 16))
    inside[:, :true_dim] = rng.uniform(-0.3, 0.3, (20_000, true_dim))
    inside[:, -1] = 1.0  # a flat patch of dimension true_dim, normalised onto the sphere
    points = ann_vectors.unit(inside)
    flat = FaissFlatIP(use_gpu=False)
    flat.add(points)
    assert ann_vectors.intrinsic_dimension(flat, points, seed=0) == pytest.approx(true_dim, rel=0.2)


def test_a_scale_check_compares_drawn_and_real_documents_on_the_same_queries() -> None:
    docs, _ = three_directions(1500)
    queries, _ = three_directions(200)
    check = ann_vectors.scale_check(docs, queries, "full:3", seed=0, fraction=0.2, ef_search=(16, 64))
    assert (check["mixture"], check["fitted_on"], check["draws"]) == ("full:3", 300, 1500)
    for side in ("real", "synthetic"):
        assert list(check[side]["hnsw_recall"]) == [16, 64]
        assert all(0 < r <= 1 for r in check[side]["hnsw_recall"].values())
    # the true form of the data, fitted to a fifth of it, draws documents of the same local dimension
    assert check["synthetic"]["lid"] == pytest.approx(check["real"]["lid"], abs=1.0)
    assert check["real"]["lid"] > 4  # eight noisy dimensions, not three points
    table = ann_report.scale_check_table([check])
    assert table[0].startswith("Scale check: each mixture fitted to 300 of the 1,500 real documents draws 1,500")
    assert (
        table[4]
        == f"| real | {check['real']['lid']} | " + " | ".join(map(str, check["real"]["hnsw_recall"].values())) + " |"
    )
    assert table[5].startswith(f"| full:3 | {check['synthetic']['lid']} | ")


def test_indexes_picks_some_by_name_and_refuses_an_unknown_one() -> None:
    args = ann.parse_args(["--indexes", "HNSW, IVF-PQ 4-bit fast-scan"])
    assert [s.label for s in ann.chosen_indexes(1_000_000, 384, args)] == ["IVF-PQ 4-bit fast-scan", "HNSW"]
    assert len(ann.chosen_indexes(1_000_000, 384, ann.parse_args([]))) == 6
    with pytest.raises(SystemExit, match="--indexes: unknown 'HNSW16'; choose among IVF-Flat, IVF-PQ, "):
        ann.parse_args(["--indexes", "HNSW16"])


def test_scale_checks_are_kept_and_a_resumed_run_does_not_redo_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs, _ = three_directions(600)
    real = [ann.Dataset("a", docs[:300], docs[:50], "test"), ann.Dataset("b", docs[300:], docs[50:100], "test")]
    args = argparse.Namespace(out=tmp_path, seed=0)
    searched = []
    measure = ann_vectors._searched
    monkeypatch.setattr(ann_vectors, "_searched", lambda *a: searched.append(len(a[0])) or measure(*a))
    first = ann.scale_checks(real, ["full:3", "diag:1", "full:3"], args)
    assert [c["mixture"] for c in first] == ["full:3", "diag:1"] and first[0]["draws"] == 600
    assert len(searched) == 3 and first[0]["real"] == first[1]["real"]  # the real side once, each mixture's draws

    def refit(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stored scale check was done again")

    monkeypatch.setattr(ann, "scale_check", refit)
    assert ann.scale_checks(real, ["diag:1"], args) == [json.loads(json.dumps(first[1]))]
    fewer_queries = [ann.Dataset("a", docs[:300], docs[:40], "test"), real[1]]  # other real sets, same OUT
    with pytest.raises(AssertionError, match="done again"):
        ann.scale_checks(fewer_queries, ["diag:1"], args)
