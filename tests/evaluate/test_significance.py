"""Tests of the paired significance tests, Holm–Bonferroni and the comparison against a baseline.

Expected values are computed independently of the code under test: the t statistic from its
formula with :mod:`statistics`, the exact randomization p-value by listing sign patterns with
:mod:`itertools`, and Holm's adjusted values from a textbook example.
"""

from __future__ import annotations

import doctest
import itertools
import json
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from retrodistill.evaluate import significance
from retrodistill.evaluate.significance import (
    Comparison,
    compare_to_baseline,
    holm_bonferroni,
    paired_t_test,
    randomization_test,
)

# ---------------------------------------------------------------------------- paired t-test


def test_t_test_matches_the_formula_and_scipy() -> None:
    a = [0.62, 0.48, 0.91, 0.33, 0.70, 0.55]
    b = [0.50, 0.52, 0.71, 0.30, 0.49, 0.58]
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    t = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(n))
    by_hand = 2 * stats.t.sf(abs(t), df=n - 1)

    p = paired_t_test(a, b)

    assert p == pytest.approx(by_hand, rel=1e-12)
    assert p == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    assert 0.0 < p < 1.0
    assert paired_t_test(b, a) == pytest.approx(p, rel=1e-12)  # two-sided


def test_t_test_identical_inputs_give_one_not_nan() -> None:
    assert paired_t_test([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]) == 1.0


@pytest.mark.parametrize(
    ("a", "b"),
    [([0.1], [0.2]), ([], []), ([0.1, 0.2, 0.3], [0.1, 0.2]), ([0.1, float("nan")], [0.1, 0.2])],
)
def test_t_test_rejects_bad_input(a: list[float], b: list[float]) -> None:
    with pytest.raises(ValueError):
        paired_t_test(a, b)


# ---------------------------------------------------------------------------- randomization test


def _exact_by_listing(a: list[float], b: list[float]) -> float:
    """Two-sided exact sign-flip p-value, listing every sign pattern with itertools."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    observed = abs(sum(d))
    hits = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        if abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= observed - 1e-12:
            hits += 1
    return hits / 2 ** len(d)


def test_randomization_exact_on_four_queries_by_hand() -> None:
    # Differences 0.1, 0.2, 0.3, -0.4 (in floats, so not exactly). In tenths, flipping a subset S of
    # {1, 2, 3, 4} gives 10 - 2·sum(S) for the signed sum of |d|; the observed pattern is +1+2+3-4 = 2.
    # Subset sums 0..10 give signed sums 10,8,6,4,2,4,2,0,0,-2,-4,-2,-4,-6,-8,-10: only the two
    # zeros (S = {1,4} and {2,3}) fall short of |2|, so p = 14/16.
    a = [0.5, 0.7, 0.9, 0.2]
    b = [0.4, 0.5, 0.6, 0.6]
    assert randomization_test(a, b, n_samples=16) == 14 / 16
    assert _exact_by_listing(a, b) == 14 / 16
    # All differences positive: only the identity and the all-flipped pattern reach |10|.
    assert randomization_test([0.2, 0.3, 0.4, 0.5], [0.1, 0.1, 0.1, 0.1], n_samples=16) == 2 / 16


def test_randomization_exact_matches_listing_on_random_data() -> None:
    rng = np.random.default_rng(7)
    a = rng.random(10).tolist()
    b = (np.asarray(a) - 0.05 + 0.2 * rng.standard_normal(10)).tolist()
    exact = randomization_test(a, b, n_samples=2**10)
    assert exact == pytest.approx(_exact_by_listing(a, b), abs=1e-15)
    assert 0.0 < exact < 1.0


def test_randomization_sampled_is_close_to_exact() -> None:
    rng = np.random.default_rng(3)
    n = 16
    a = rng.random(n)
    b = a - 0.06 + 0.25 * rng.standard_normal(n)
    exact = randomization_test(a.tolist(), b.tolist(), n_samples=2**n)  # enumerates all 65,536
    assert 0.01 < exact < 0.99  # an informative example, not a degenerate one
    samples = 20_000  # < 2**16, so this one samples
    sampled = randomization_test(a.tolist(), b.tolist(), n_samples=samples, seed=5)
    standard_error = math.sqrt(exact * (1 - exact) / samples)
    assert abs(sampled - exact) < 5 * standard_error + 1 / (samples + 1)
    assert sampled != exact  # the sampled branch was really taken


def test_randomization_identical_inputs_give_one() -> None:
    same = [0.3, 0.1, 0.8, 0.5, 0.0, 0.9, 0.4, 0.2, 0.7, 0.6, 0.5, 0.5, 0.1, 0.9, 0.3, 0.3]
    assert randomization_test(same, same, n_samples=1000) == 1.0  # sampled: (1000 + 1) / (1000 + 1)
    assert randomization_test(same[:4], same[:4], n_samples=1000) == 1.0  # exact


def test_randomization_strong_difference_hits_the_plus_one_floor() -> None:
    rng = np.random.default_rng(11)
    b = rng.random(30)
    a = b + 0.3 + 0.01 * rng.random(30)  # every difference positive
    # Only the identity and all-flipped of 2**30 patterns reach the observed sum, so no sample
    # does (bar a 2/2**30 chance): p is the convention's floor 1 / (N + 1).
    assert randomization_test(a.tolist(), b.tolist(), n_samples=2000) == 1 / 2001
    assert paired_t_test(a.tolist(), b.tolist()) < 1e-10


def test_randomization_is_deterministic_for_a_seed_and_varies_across_seeds() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(40).tolist()
    b = (np.asarray(a) - 0.02 + 0.2 * rng.standard_normal(40)).tolist()
    first = randomization_test(a, b, n_samples=3000, seed=42)
    assert randomization_test(a, b, n_samples=3000, seed=42) == first
    others = {randomization_test(a, b, n_samples=3000, seed=s) for s in range(1, 6)}
    assert len(others | {first}) > 1


def test_randomization_blocks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    a = rng.random(50).tolist()
    b = (np.asarray(a) + 0.2 * rng.standard_normal(50)).tolist()
    whole = randomization_test(a, b, n_samples=999, seed=9)
    monkeypatch.setattr(significance, "_BLOCK_ENTRIES", 50 * 7)  # 7 rows per block, last one partial
    assert randomization_test(a, b, n_samples=999, seed=9) == whole


@pytest.mark.parametrize("n_samples", [0, -5, 2.5, True])
def test_randomization_rejects_bad_n_samples(n_samples: object) -> None:
    with pytest.raises(ValueError, match="n_samples"):
        randomization_test([0.1, 0.2], [0.3, 0.4], n_samples=n_samples)  # type: ignore[arg-type]


def test_randomization_rejects_unpaired_input() -> None:
    with pytest.raises(ValueError, match="same queries"):
        randomization_test([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least 2"):
        randomization_test([0.1], [0.2])


# ---------------------------------------------------------------------------- Holm–Bonferroni


def test_holm_textbook_example() -> None:
    raw = {"q1": 0.01, "q2": 0.04, "q3": 0.03, "q4": 0.005}
    # Sorted: 0.005·4, 0.01·3, 0.03·2, max(0.04·1, previous).
    expected = {"q4": 0.005 * 4, "q1": 0.01 * 3, "q3": 0.03 * 2, "q2": max(0.04 * 1, 0.03 * 2)}
    adjusted = holm_bonferroni(raw)
    assert list(adjusted) == list(raw)
    assert adjusted == pytest.approx(expected)
    assert [adjusted[k] for k in raw] == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_is_monotone_capped_and_never_below_raw() -> None:
    rng = np.random.default_rng(2)
    raw = {f"h{i}": float(p) for i, p in enumerate(rng.random(12) ** 2)}
    adjusted = holm_bonferroni(raw)
    order = sorted(raw, key=raw.__getitem__)
    assert all(adjusted[x] <= adjusted[y] for x, y in itertools.pairwise(order))
    assert all(raw[k] <= adjusted[k] <= 1.0 for k in raw)
    assert max(adjusted.values()) == 1.0  # 12 · (some p > 1/12) is capped
    assert holm_bonferroni({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}


def test_holm_ties_single_and_empty() -> None:
    assert holm_bonferroni({"a": 0.02, "b": 0.02, "c": 0.5}) == pytest.approx({"a": 0.06, "b": 0.06, "c": 0.5})
    assert holm_bonferroni({"only": 0.03}) == {"only": 0.03}
    assert holm_bonferroni({}) == {}


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_holm_rejects_invalid_p(bad: float) -> None:
    with pytest.raises(ValueError, match="'b'"):
        holm_bonferroni({"a": 0.1, "b": bad})


# ---------------------------------------------------------------------------- compare_to_baseline

MEASURES = ("nDCG@10", "R@100")
DATASETS = ("scifact", "nfcorpus", "fiqa")


def _scores(rng: np.random.Generator, n: int, shift: float, noise: float, base: np.ndarray) -> np.ndarray:
    return np.clip(base + shift + noise * rng.standard_normal(n), 0.0, 1.0)


@pytest.fixture(scope="module")
def per_query() -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """bm25 (baseline), 'better' (+0.25), 'worse' (-0.25), 'noisy' (a small shift, 0.3 noise)."""
    rng = np.random.default_rng(123)
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {m: {} for m in ("bm25", "better", "worse", "noisy")}
    for dataset in DATASETS:
        n = 40
        qids = [f"{dataset}-q{i}" for i in range(n)]
        base = {measure: rng.uniform(0.2, 0.6, n) for measure in MEASURES}
        shifts = {"bm25": 0.0, "better": 0.25, "worse": -0.25, "noisy": 0.05}
        for model, shift in shifts.items():
            noise = 0.0 if model == "bm25" else (0.3 if model == "noisy" else 0.05)
            values = {m: _scores(rng, n, shift, noise, base[m]) for m in MEASURES}
            rows = {qid: {m: float(values[m][i]) for m in MEASURES} for i, qid in enumerate(qids)}
            if model != "bm25":  # insertion order differs from the baseline's: pairing must use ids
                rows = dict(reversed(list(rows.items())))
            out[model][dataset] = rows
    return out


def _paired(per_query: dict, model: str, dataset: str, measure: str) -> tuple[list[float], list[float]]:
    qids = sorted(per_query["bm25"][dataset])
    return (
        [per_query[model][dataset][q][measure] for q in qids],
        [per_query["bm25"][dataset][q][measure] for q in qids],
    )


def test_compare_structure_and_values(per_query: dict) -> None:
    results = compare_to_baseline(per_query, "bm25", list(MEASURES), n_samples=2000, seed=4)
    assert [(c.model, c.dataset, c.measure) for c in results] == [
        (m, d, x) for m in ("better", "worse", "noisy") for d in DATASETS for x in MEASURES
    ]
    for c in results:
        a, b = _paired(per_query, c.model, c.dataset, c.measure)
        assert c.baseline == "bm25"
        assert c.num_queries == 40
        assert c.mean == pytest.approx(statistics.fmean(a))
        assert c.baseline_mean == pytest.approx(statistics.fmean(b))
        assert c.mean_diff == pytest.approx(statistics.fmean(x - y for x, y in zip(a, b, strict=True)))
        assert c.p_ttest == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
        assert c.p_randomization == randomization_test(a, b, n_samples=2000, seed=4)
        assert c.p_ttest <= c.p_ttest_holm <= 1.0
        assert c.p_randomization <= c.p_randomization_holm <= 1.0
        assert c.significant == (c.p_ttest_holm < 0.05 and c.p_randomization_holm < 0.05)


def test_compare_marks(per_query: dict) -> None:
    results = compare_to_baseline(per_query, "bm25", list(MEASURES), n_samples=2000)
    marks = {(c.model, c.dataset, c.measure): c.mark() for c in results}
    for dataset in DATASETS:
        for measure in MEASURES:
            assert marks[("better", dataset, measure)] == "▲"
            assert marks[("worse", dataset, measure)] == "▼"
    assert any(c.mark() == "" and not c.significant for c in results if c.model == "noisy")


def test_compare_applies_holm_across_datasets(per_query: dict) -> None:
    results = compare_to_baseline(per_query, "bm25", list(MEASURES), n_samples=2000)
    by_key = {(c.model, c.dataset, c.measure): c for c in results}
    corrected_something = False
    for model in ("better", "worse", "noisy"):
        for measure in MEASURES:
            family = {d: by_key[(model, d, measure)] for d in DATASETS}
            want_t = holm_bonferroni({d: c.p_ttest for d, c in family.items()})
            want_r = holm_bonferroni({d: c.p_randomization for d, c in family.items()})
            for d, c in family.items():
                assert c.p_ttest_holm == pytest.approx(want_t[d])
                assert c.p_randomization_holm == pytest.approx(want_r[d])
                corrected_something |= c.p_ttest_holm > c.p_ttest * 1.5
    assert corrected_something  # the family has 3 members, so some raw p was visibly adjusted
    # A family is one model × measure × test: removing a dataset changes the correction.
    fewer = {m: {d: v for d, v in ds.items() if d != "fiqa"} for m, ds in per_query.items()}
    noisy = {
        (c.dataset, c.measure): c
        for c in compare_to_baseline(fewer, "bm25", list(MEASURES), n_samples=2000)
        if c.model == "noisy"
    }
    for measure in MEASURES:
        raw = {d: noisy[(d, measure)].p_ttest for d in ("scifact", "nfcorpus")}
        assert {d: noisy[(d, measure)].p_ttest_holm for d in raw} == pytest.approx(holm_bonferroni(raw))


def test_significant_needs_both_tests() -> None:
    # Four queries, all improved by ~0.1: the t-test is far below 0.05 but the exact randomization
    # test cannot go below 2/16 = 0.125, so the comparison is not significant.
    qids = ["q1", "q2", "q3", "q4"]
    base = {q: {"nDCG@10": v} for q, v in zip(qids, [0.30, 0.40, 0.50, 0.60], strict=True)}
    model = {q: {"nDCG@10": v} for q, v in zip(qids, [0.40, 0.501, 0.599, 0.70], strict=True)}
    (c,) = compare_to_baseline({"bm25": {"toy": base}, "m": {"toy": model}}, "bm25", ["nDCG@10"])
    assert c.p_ttest_holm < 0.001
    assert c.p_randomization_holm == 2 / 16
    assert not c.significant
    assert c.mark() == ""
    (loose,) = compare_to_baseline({"bm25": {"toy": base}, "m": {"toy": model}}, "bm25", ["nDCG@10"], alpha=0.2)
    assert loose.significant and loose.mark() == "▲"


def test_comparison_to_json_round_trips() -> None:
    c = Comparison(
        model="m",
        baseline="bm25",
        dataset="scifact",
        measure="nDCG@10",
        mean=0.7,
        baseline_mean=0.6,
        mean_diff=0.1,
        num_queries=300,
        p_ttest=0.001,
        p_randomization=0.002,
        p_ttest_holm=0.003,
        p_randomization_holm=0.004,
        significant=True,
    )
    data = json.loads(json.dumps(c.to_json()))
    assert data["mark"] == "▲"
    assert data["p_randomization_holm"] == 0.004 and data["num_queries"] == 300 and data["alpha"] == 0.05
    assert {k: v for k, v in data.items() if k != "mark"} == {
        "model": "m",
        "baseline": "bm25",
        "dataset": "scifact",
        "measure": "nDCG@10",
        "mean": 0.7,
        "baseline_mean": 0.6,
        "mean_diff": 0.1,
        "num_queries": 300,
        "p_ttest": 0.001,
        "p_randomization": 0.002,
        "p_ttest_holm": 0.003,
        "p_randomization_holm": 0.004,
        "significant": True,
        "alpha": 0.05,
    }


def test_compare_unknown_baseline_lists_models(per_query: dict) -> None:
    with pytest.raises(ValueError, match=r"unknown baseline 'bm-25'.*'better'.*'bm25'"):
        compare_to_baseline(per_query, "bm-25", list(MEASURES))


def test_compare_missing_dataset(per_query: dict) -> None:
    broken = {m: dict(ds) for m, ds in per_query.items()}
    del broken["worse"]["fiqa"]
    with pytest.raises(ValueError, match=r"'worse' has no results for dataset 'fiqa'"):
        compare_to_baseline(broken, "bm25", list(MEASURES))


def test_compare_query_mismatch_names_model_dataset_and_ids(per_query: dict) -> None:
    broken = {m: dict(ds) for m, ds in per_query.items()}
    broken["noisy"]["scifact"] = {q: v for q, v in per_query["noisy"]["scifact"].items() if q != "scifact-q7"}
    with pytest.raises(ValueError, match=r"'noisy'.*'scifact'.*missing from the model: \['scifact-q7'\]"):
        compare_to_baseline(broken, "bm25", list(MEASURES))


def test_compare_missing_measure_and_bad_arguments(per_query: dict) -> None:
    with pytest.raises(ValueError, match=r"no 'AP' for query"):
        compare_to_baseline(per_query, "bm25", ["AP"])
    with pytest.raises(ValueError, match="alpha"):
        compare_to_baseline(per_query, "bm25", list(MEASURES), alpha=1.5)
    with pytest.raises(ValueError, match="empty"):
        compare_to_baseline(per_query, "bm25", [])
    with pytest.raises(ValueError, match="twice"):
        compare_to_baseline(per_query, "bm25", ["nDCG@10", "nDCG@10"])
    one_query = {"bm25": {"d": {"q": {"nDCG@10": 0.1}}}, "m": {"d": {"q": {"nDCG@10": 0.2}}}}
    with pytest.raises(ValueError, match="at least 2 queries"):
        compare_to_baseline(one_query, "bm25", ["nDCG@10"])


def test_module_doctests() -> None:
    result = doctest.testmod(significance)
    assert result.attempted >= 4
    assert result.failed == 0
