"""Paired significance tests on per-query scores, with Holm–Bonferroni correction across datasets.

Every test compares two systems on the same queries. With per-query scores ``a_i`` (the model)
and ``b_i`` (the baseline) for queries ``i = 1..n`` paired by query id, the differences are
``d_i = a_i - b_i`` and the observed mean difference is ``d̄ = (1/n) Σ_i d_i``.

- **Paired t-test** (:func:`paired_t_test`, via ``scipy.stats.ttest_rel``)::

      t = d̄ / (s_d / sqrt(n)),   s_d² = Σ_i (d_i - d̄)² / (n - 1),   p = 2 · P(T_{n-1} ≥ |t|)

  If every ``d_i`` is exactly 0 the test is undefined (0/0); we return ``p = 1.0`` (no evidence
  of a difference) rather than NaN. If the ``d_i`` are equal and non-zero, ``t = ±inf`` and
  ``p = 0.0``, as scipy gives.

- **Paired randomization test** (:func:`randomization_test`; Smucker et al. 2007). Under the null
  hypothesis the two systems are exchangeable on each query, so each ``d_i`` is as likely to have
  had the opposite sign. A permutation flips the sign of each ``d_i`` independently with
  probability 1/2 and gives ``m = (1/n) Σ_i s_i d_i`` (``s_i ∈ {-1, +1}``). Two-sided::

      sampled (N = n_samples random sign vectors):
          p = (#{k : |m_k| ≥ |d̄| - ε} + 1) / (N + 1)
      exact (all 2**n sign vectors, used when 2**n ≤ n_samples):
          p = #{s ∈ {-1, +1}^n : |m_s| ≥ |d̄| - ε} / 2**n

  *Why ``+1`` in the sampled form:* the observed assignment is itself one of the permutations,
  so it is counted once in numerator and denominator (Phipson & Smyth 2010). This makes the
  sampled p-value a valid (slightly conservative) p-value that is never 0 — the smallest value it
  can report is ``1 / (N + 1)``, an honest statement of the resolution of ``N`` samples. The exact
  form already contains the observed assignment among its ``2**n``, so it needs no correction;
  it is never below ``2 / 2**n`` (the identity and the all-flipped vector always qualify).
  ``ε = 1e-9 · (1/n) Σ_i |d_i|`` absorbs floating-point rounding: sums of the same values in
  another order must not miss the ``≥`` by an ulp (the identity permutation must always count).
  With identical inputs every ``d_i = 0``, every permutation qualifies and ``p = 1``.

  Sign vectors come from ``numpy.random.default_rng(seed)``, in fixed-size blocks of rows, so
  the p-value is a deterministic function of ``(a, b, n_samples, seed)``.

- **Holm–Bonferroni** (:func:`holm_bonferroni`; Holm 1979). For ``m`` p-values sorted ascending,
  ``p_(1) ≤ … ≤ p_(m)``, the adjusted values are::

      p̃_(j) = min(1, max_{k ≤ j} (m - k + 1) · p_(k))

  They are monotone in the raw p-values, capped at 1, and control the family-wise error rate
  under any dependence between the tests. Rejecting ``p̃ < α`` is Holm's step-down procedure.

Conventions of :func:`compare_to_baseline`:

- Every test is two-sided. "Better" means a larger mean: every measure this toolkit reports
  (nDCG, RR, R, P, AP) is higher-is-better.
- The Holm family is **one model × one measure × one test across all datasets** of the baseline
  (e.g. the t-test p-values of ``nDCG@10`` of model X on the 13 BEIR datasets are corrected
  together). Models and measures are not corrected against each other.
- ``significant`` holds iff **both** corrected p-values are below ``alpha`` (the t-test and the
  randomization test must agree). Requiring both guards against the t-test's normality
  assumption on small or skewed samples, and against the randomization test's resolution limit.

References:
    Smucker, Allan and Carterette, *A Comparison of Statistical Significance Tests for Information
    Retrieval Evaluation*, CIKM 2007. https://doi.org/10.1145/1321440.1321528

    Holm, *A Simple Sequentially Rejective Multiple Test Procedure*, Scandinavian Journal of
    Statistics 6(2), 1979. https://www.jstor.org/stable/4615733

    Phipson and Smyth, *Permutation P-values Should Never Be Zero*, Statistical Applications in
    Genetics and Molecular Biology 9(1), 2010. https://doi.org/10.2202/1544-6115.1585

Example:
    >>> paired_t_test([0.2, 0.4, 0.6], [0.2, 0.4, 0.6])
    1.0
    >>> randomization_test([0.5, 0.6, 0.7, 0.8], [0.4, 0.5, 0.6, 0.7])  # exact: 2 of 16 sign vectors
    0.125
    >>> holm_bonferroni({"a": 0.01, "b": 0.04, "c": 0.03})
    {'a': 0.03, 'b': 0.06, 'c': 0.06}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)

# Sign vectors are drawn this many entries (rows × queries) at a time, bounding memory at ~32 MB
# per block of float64 draws whatever the number of queries (MS MARCO dev has ~7k).
_BLOCK_ENTRIES = 4_000_000
_RELATIVE_EPS = 1e-9


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``a - b`` as a float64 vector of shape ``(n,)``, after checking the inputs can be paired."""
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    if a_arr.ndim != 1 or b_arr.ndim != 1:
        raise ValueError(f"expected two 1-d sequences of per-query scores, got shapes {a_arr.shape} and {b_arr.shape}")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired tests need the same queries on both sides, got {len(a_arr)} and {len(b_arr)} scores")
    if len(a_arr) < 2:
        raise ValueError(f"paired tests need at least 2 queries, got {len(a_arr)}")
    if not (np.isfinite(a_arr).all() and np.isfinite(b_arr).all()):
        raise ValueError("per-query scores must be finite (found NaN or inf)")
    return a_arr - b_arr


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test of ``a`` against ``b``.

    Args:
        a: per-query scores of one system, shape ``(n,)``.
        b: per-query scores of the other system on the same queries, in the same order.

    Returns:
        ``2 · P(T_{n-1} ≥ |t|)`` with ``t = mean(d) / (sd(d) / sqrt(n))``, ``d = a - b``;
        1.0 when every difference is 0.

    Raises:
        ValueError: lengths differ, fewer than 2 queries, or a score is not finite.
    """
    from scipy import stats

    d = _differences(a, b)
    if not d.any():
        return 1.0
    with warnings.catch_warnings():
        # Equal non-zero differences (a few queries, one run a constant step above the other) make scipy
        # warn of "catastrophic cancellation" in the variance; its answer (t infinite, p 0) is the right one.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).pvalue)


def _exact_sign_matrix(n: int) -> np.ndarray:
    """All ``2**n`` sign vectors as a ``(2**n, n)`` matrix of ±1.0; row ``r`` flips the set bits of ``r``."""
    bits = (np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)) & 1  # (2**n, n)
    return 1.0 - 2.0 * bits


def randomization_test(a: Sequence[float], b: Sequence[float], n_samples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomization (sign-flip) test on the mean difference of ``a`` and ``b``.

    When ``2**n ≤ n_samples`` all ``2**n`` sign vectors are enumerated and the exact p-value
    ``#{|m_s| ≥ |d̄| - ε} / 2**n`` is returned (``seed`` is then unused). Otherwise ``n_samples``
    random sign vectors are drawn and ``p = (#{|m_k| ≥ |d̄| - ε} + 1) / (n_samples + 1)``. See the
    module docstring for why the ``+1`` and what ``ε`` is.

    Args:
        a: per-query scores of one system, shape ``(n,)``.
        b: per-query scores of the other system on the same queries, in the same order.
        n_samples: number of random sign vectors (also the threshold for exact enumeration).
        seed: seed of the ``numpy.random.Generator``; equal inputs and seed give an equal p-value.

    Raises:
        ValueError: lengths differ, fewer than 2 queries, a score is not finite, or
            ``n_samples < 1``.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    d = _differences(a, b)
    n = len(d)
    # Compare sums rather than means: same ordering, one division fewer to round.
    observed = abs(float(d.sum()))
    threshold = observed - _RELATIVE_EPS * float(np.abs(d).sum())

    if n < 63 and 2**n <= n_samples:
        sums = _exact_sign_matrix(n) @ d  # (2**n,)
        return int(np.count_nonzero(np.abs(sums) >= threshold)) / 2**n

    rng = np.random.default_rng(seed)
    rows_per_block = max(1, _BLOCK_ENTRIES // n)
    count = 0
    done = 0
    while done < n_samples:
        rows = min(rows_per_block, n_samples - done)
        signs = np.where(rng.random((rows, n)) < 0.5, -1.0, 1.0)  # (rows, n)
        count += int(np.count_nonzero(np.abs(signs @ d) >= threshold))
        done += rows
    return (count + 1) / (n_samples + 1)


def holm_bonferroni(pvalues: Mapping[K, float]) -> dict[K, float]:
    """Holm's step-down adjusted p-values, ``min(1, max_{k ≤ j} (m - k + 1) · p_(k))``.

    Args:
        pvalues: name → raw p-value, one per hypothesis of the family.

    Returns:
        name → adjusted p-value, same keys and key order. Tied raw p-values get equal adjusted values.

    Raises:
        ValueError: a p-value is NaN or outside ``[0, 1]``.

    Example:
        >>> holm_bonferroni({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
        {'a': 0.03, 'b': 0.06, 'c': 0.06, 'd': 0.02}
    """
    for key, p in pvalues.items():
        if not (0.0 <= p <= 1.0):  # also false for NaN
            raise ValueError(f"p-value of {key!r} must be in [0, 1], got {p!r}")
    m = len(pvalues)
    ordered = sorted(pvalues.items(), key=lambda item: item[1])
    adjusted: dict[K, float] = {}
    running = 0.0
    for rank, (key, p) in enumerate(ordered):
        running = min(1.0, max(running, (m - rank) * p))
        adjusted[key] = running
    return {key: adjusted[key] for key in pvalues}


@dataclass(frozen=True)
class Comparison:
    """One model against the baseline on one dataset and one measure.

    Attributes:
        model: the compared model's name.
        baseline: the baseline's name.
        dataset: the dataset's name.
        measure: the measure's name, e.g. ``"nDCG@10"`` (higher is better).
        mean: the model's mean over the paired queries.
        baseline_mean: the baseline's mean over the same queries.
        mean_diff: ``mean - baseline_mean`` (= the mean of the per-query differences).
        num_queries: number of paired queries ``n``.
        p_ttest: raw two-sided paired t-test p-value.
        p_randomization: raw two-sided randomization test p-value.
        p_ttest_holm: ``p_ttest`` after Holm across the datasets (same model, measure and test).
        p_randomization_holm: ``p_randomization`` after Holm across the datasets.
        significant: ``p_ttest_holm < alpha`` **and** ``p_randomization_holm < alpha``.
        alpha: the significance level used for ``significant``.
    """

    model: str
    baseline: str
    dataset: str
    measure: str
    mean: float
    baseline_mean: float
    mean_diff: float
    num_queries: int
    p_ttest: float
    p_randomization: float
    p_ttest_holm: float
    p_randomization_holm: float
    significant: bool
    alpha: float = 0.05

    def mark(self) -> str:
        """``"▲"`` significantly better, ``"▼"`` significantly worse, ``""`` otherwise."""
        if not self.significant or self.mean_diff == 0:
            return ""
        return "▲" if self.mean_diff > 0 else "▼"

    def to_json(self) -> dict[str, Any]:
        """Every field plus ``"mark"``, as JSON-serialisable values."""
        return {**asdict(self), "mark": self.mark()}


PerQuery = Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]


def _preview(ids: set[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in sorted(ids)[:limit])
    return f"[{shown}{', …' if len(ids) > limit else ''}] ({len(ids)} in all)"


def _paired_scores(
    model_scores: Mapping[str, Mapping[str, float]],
    baseline_scores: Mapping[str, Mapping[str, float]],
    measure: str,
    where: str,
) -> tuple[list[float], list[float]]:
    """The two score lists of ``measure``, in the order of the sorted query ids."""
    a: list[float] = []
    b: list[float] = []
    for qid in sorted(baseline_scores):
        for side, scores in (("model", model_scores), ("baseline", baseline_scores)):
            if measure not in scores[qid]:
                raise ValueError(f"{where}: {side} has no {measure!r} for query {qid!r}")
        a.append(float(model_scores[qid][measure]))
        b.append(float(baseline_scores[qid][measure]))
    return a, b


def compare_to_baseline(
    per_query: PerQuery,
    baseline: str,
    measures: Sequence[str],
    *,
    alpha: float = 0.05,
    n_samples: int = 10_000,
    seed: int = 0,
) -> list[Comparison]:
    """Test every model against ``baseline`` on every dataset of the baseline and every measure.

    Queries are paired by id. The p-values of each (model, measure, test) are Holm-corrected
    across the datasets; see the module docstring for every convention.

    Args:
        per_query: model → dataset → query id → measure → value, e.g. built from
            :attr:`~retrodistill.evaluate.metrics.MetricResult.per_query` of each run.
        baseline: the model every other model is compared with.
        measures: the measures to test; each must be present for every query.
        alpha: significance level in ``(0, 1)``.
        n_samples: sign vectors per randomization test.
        seed: seed of every randomization test (each test uses it afresh, so results do not depend
            on the order of models, datasets or measures).

    Returns:
        One :class:`Comparison` per (model, dataset, measure), ordered by model (the order of
        ``per_query``, baseline left out), then dataset (the baseline's order), then measure.
        Datasets that only the model has are not compared.

    Raises:
        ValueError: unknown baseline; a model lacks one of the baseline's datasets; the two sides
            judge different query ids; a measure is missing; fewer than 2 queries; bad ``alpha``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if isinstance(measures, str):
        raise ValueError(f"measures must be a sequence of measure names, got the string {measures!r}")
    if not measures:
        raise ValueError("measures is empty: name at least one measure to test")
    if len(set(measures)) != len(measures):
        raise ValueError(f"measures names a measure twice: {list(measures)}")
    if baseline not in per_query:
        raise ValueError(f"unknown baseline {baseline!r}; available models: {sorted(per_query)}")
    base = per_query[baseline]

    # (model, dataset, measure) → raw values, filled first so Holm can see each whole family.
    raw: dict[tuple[str, str, str], tuple[list[float], list[float], float, float]] = {}
    for model, datasets in per_query.items():
        if model == baseline:
            continue
        for dataset, baseline_scores in base.items():
            where = f"model {model!r} vs baseline {baseline!r} on dataset {dataset!r}"
            if dataset not in datasets:
                raise ValueError(
                    f"model {model!r} has no results for dataset {dataset!r}, which baseline {baseline!r} has; "
                    f"it has: {sorted(datasets)}"
                )
            model_scores = datasets[dataset]
            only_base = set(baseline_scores) - set(model_scores)
            only_model = set(model_scores) - set(baseline_scores)
            if only_base or only_model:
                raise ValueError(
                    f"{where}: the two sides must judge the same queries; missing from the model: "
                    f"{_preview(only_base)}; missing from the baseline: {_preview(only_model)}"
                )
            if len(baseline_scores) < 2:
                raise ValueError(f"{where}: paired tests need at least 2 queries, got {len(baseline_scores)}")
            for measure in measures:
                a, b = _paired_scores(model_scores, baseline_scores, measure, where)
                try:
                    p_t = paired_t_test(a, b)
                    p_r = randomization_test(a, b, n_samples=n_samples, seed=seed)
                except ValueError as error:
                    raise ValueError(f"{where}, measure {measure!r}: {error}") from error
                raw[(model, dataset, measure)] = (a, b, p_t, p_r)

    holm_t: dict[tuple[str, str, str], float] = {}
    holm_r: dict[tuple[str, str, str], float] = {}
    for model in per_query:
        if model == baseline:
            continue
        for measure in measures:
            family = [(model, dataset, measure) for dataset in base]
            holm_t.update(holm_bonferroni({key: raw[key][2] for key in family}))
            holm_r.update(holm_bonferroni({key: raw[key][3] for key in family}))

    comparisons: list[Comparison] = []
    for key, (a, b, p_t, p_r) in raw.items():
        model, dataset, measure = key
        mean, baseline_mean = math.fsum(a) / len(a), math.fsum(b) / len(b)
        comparisons.append(
            Comparison(
                model=model,
                baseline=baseline,
                dataset=dataset,
                measure=measure,
                mean=mean,
                baseline_mean=baseline_mean,
                mean_diff=mean - baseline_mean,
                num_queries=len(a),
                p_ttest=p_t,
                p_randomization=p_r,
                p_ttest_holm=holm_t[key],
                p_randomization_holm=holm_r[key],
                significant=holm_t[key] < alpha and holm_r[key] < alpha,
                alpha=alpha,
            )
        )
    return comparisons
