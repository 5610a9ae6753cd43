"""The synthetic vectors of ``ann.py``: Gaussian mixtures fitted to real embeddings, chosen by the
likelihood of held-out vectors; the local intrinsic dimension that tells how hard their neighbours are
to find; and a check of how a mixture extrapolates to more vectors than it was fitted to (see ``ann.py``'s
docstring and ``ann.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass
class Mixture:
    """A Gaussian mixture: ``weights`` (K,), ``means`` (K, d), ``factors`` with covariance_k = F_k F_kᵀ: one
    ``(d, d)`` factor per component (``(K, d, d)``) or one shared by all (``(d, d)``).

    A diagonal mixture's factors are diagonal matrices (the standard deviations); a full one's, and a kernel
    density estimate's shared one, are Cholesky factors of the covariances.
    """

    weights: np.ndarray
    means: np.ndarray
    factors: np.ndarray
    how: str = ""

    def sample(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        """``n`` unit vectors (float32 ``(n, d)``), drawn ``chunk`` at a time (float64 only per chunk)."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.means.shape[1]), np.float32)
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            component = rng.choice(len(self.weights), size=rows, p=self.weights)
            drawn = rng.standard_normal((rows, self.means.shape[1]))
            if self.factors.ndim == 2:  # one covariance for all components
                drawn = self.means[component] + drawn @ self.factors.T
            else:
                for k in np.unique(component):
                    members = component == k
                    drawn[members] = self.means[k] + drawn[members] @ self.factors[k].T
            out[start : start + rows] = unit(drawn)
        return out


#: The mixtures ``--mixture auto`` chooses among, by log-likelihood of held-out vectors: ``diag:K`` and
#: ``full:K`` (K components fitted by EM) and ``kde:H`` (a kernel density estimate: one component per vector,
#: centred on it, all sharing H² × the vectors' covariance).
MIXTURES = (
    *(f"diag:{k}" for k in (16, 64, 256)),
    *(f"full:{k}" for k in (1, 2, 4, 8, 16, 32)),
    *(f"kde:{h}" for h in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)),
)
QUICK_MIXTURES = ("diag:16", "full:4", "kde:0.6")
#: Added to each covariance's diagonal: ~4% of a unit vector's variance per dimension (1/384), it keeps the
#: full covariance of a component with fewer vectors than dimensions invertible.
REG_COVAR = 1e-4


def fit_mixture(x: np.ndarray, spec: str, seed: int) -> Mixture:
    """The mixture ``spec`` (``diag:64``, ``full:16``, ``kde:0.6``) fitted to ``x``; EM by sklearn's GaussianMixture."""
    kind, size = parse_mixture(spec)
    x = x.astype(np.float64)
    if kind == "kde":
        shared = float(size) * np.linalg.cholesky(covariance(x))
        return Mixture(np.full(len(x), 1 / len(x)), x, shared, f"kernel density estimate ({spec})")
    gm = gaussian_mixture(spec, seed).fit(x)
    if kind == "diag":
        factors = np.stack([np.diag(np.sqrt(v)) for v in gm.covariances_])
    else:
        factors = np.linalg.cholesky(gm.covariances_)
    return Mixture(gm.weights_ / gm.weights_.sum(), gm.means_, factors, f"sklearn GaussianMixture ({spec})")


def covariance(x: np.ndarray) -> np.ndarray:
    """The vectors' covariance with :data:`REG_COVAR` on its diagonal, as EM's components have it."""
    return np.asarray(np.cov(x.T) + REG_COVAR * np.eye(x.shape[1]))


def gaussian_mixture(spec: str, seed: int) -> Any:
    """An unfitted sklearn ``GaussianMixture`` of ``spec`` (sklearn comes with sentence-transformers)."""
    from sklearn.mixture import GaussianMixture

    kind, components = parse_mixture(spec)
    return GaussianMixture(int(components), covariance_type=kind, reg_covar=REG_COVAR, random_state=seed, max_iter=200)


def parse_mixture(spec: str, option: str = "--mixture") -> tuple[str, float]:
    """``"full:16"`` → ``("full", 16)``, ``"kde:0.5"`` → ``("kde", 0.5)``; a clear error for anything else.

    Example:
        >>> parse_mixture("diag:64"), parse_mixture("kde:0.5")
        (('diag', 64), ('kde', 0.5))
    """
    kind, _, size = spec.partition(":")
    try:
        value: float = int(size) if kind in ("diag", "full") else float(size)
    except ValueError:
        value = 0
    if kind not in ("diag", "full", "kde") or not value > 0:
        raise SystemExit(
            f"{option} {spec!r}: expected auto, diag:K or full:K (K components ≥ 1) or kde:H (bandwidth H > 0)"
        )
    return kind, value


def held_out_loglik(train: np.ndarray, rest: np.ndarray, spec: str, seed: int) -> float:
    """Mean log-likelihood of ``rest`` (nats per vector) under the mixture ``spec`` fitted to ``train``.

    A kernel density estimate is scored by :func:`kde_loglik` on vectors whitened by the training
    covariance, plus the log-determinant of the whitening (densities change with the variables).
    """
    kind, size = parse_mixture(spec)
    if kind != "kde":
        return float(gaussian_mixture(spec, seed).fit(train).score(rest))
    values, vectors = np.linalg.eigh(covariance(train))
    whiten = vectors / np.sqrt(values)
    centre = train.mean(0)
    return kde_loglik((train - centre) @ whiten, (rest - centre) @ whiten, float(size)) - 0.5 * np.log(values).sum()


def kde_loglik(train: np.ndarray, rest: np.ndarray, bandwidth: float, chunk: int = 512) -> float:
    """Mean log-density of ``rest`` under kernels N(t, bandwidth² I), one per row t of ``train``: the exact
    log-sum-exp over every kernel, ``chunk`` rows of ``rest`` at a time.

    Written here, not taken from sklearn's ``KernelDensity``: in many dimensions its tree-based sums come out
    too high (by 28 nats per vector in 50 dimensions at bandwidth 0.6, by ~190 in 384; scikit-learn issue
    #7492), which once made a kernel density estimate look likelier than the mixtures it loses to.
    """
    from scipy.special import logsumexp

    dim = train.shape[1]
    norms = (train**2).sum(1)
    total = 0.0
    for start in range(0, len(rest), chunk):
        part = rest[start : start + chunk]
        squared = np.maximum((part**2).sum(1)[:, None] + norms[None, :] - 2 * part @ train.T, 0.0)
        total += float(logsumexp(-0.5 * squared / bandwidth**2, axis=1).sum())
    return total / len(rest) - np.log(len(train)) - 0.5 * dim * np.log(2 * np.pi * bandwidth**2)


def select_mixture(
    x: np.ndarray, candidates: tuple[str, ...], seed: int, held_out: float = 0.2
) -> tuple[str, dict[str, float]]:
    """The candidate whose fit to a seeded ``1 − held_out`` of ``x`` gives the held-out rest the highest mean
    log-likelihood, and every candidate's held-out figure (nats per vector)."""
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * (1 - held_out))
    train, rest = x[order[:cut]].astype(np.float64), x[order[cut:]].astype(np.float64)
    scores = {}
    for spec in candidates:
        scores[spec] = held_out_loglik(train, rest, spec, seed)
        print(f"  mixture {spec}: held-out log-likelihood {scores[spec]:.1f} per vector", flush=True)
    return max(scores, key=lambda s: scores[s]), scores


def intrinsic_dimension(flat: Any, docs: np.ndarray, seed: int, k: int = 20, sample: int = 1000) -> float:
    """The documents' local intrinsic dimension: the median over ``sample`` of them of the maximum-likelihood
    estimate from the distances to their ``k`` nearest neighbours (Levina & Bickel, NIPS 2004), found by
    ``flat`` (exact inner-product search over ``docs``, unit vectors: distance² = 2 − 2·⟨x, y⟩).

    Neighbours among few dimensions (real embeddings lie near a low-dimensional surface) are easy for an
    index; neighbours in many dimensions are near-ties. Example, points filling a plane inside 3 dimensions:

    >>> from retrodistill.index.faiss_flat import FaissFlatIP
    >>> rng = np.random.default_rng(0)
    >>> plane = unit(np.c_[rng.uniform(-1, 1, (5000, 2)), np.full(5000, 3.0)])
    >>> flat = FaissFlatIP(use_gpu=False)
    >>> flat.add(plane)
    >>> round(intrinsic_dimension(flat, plane, seed=0))
    2
    """
    picked = np.random.default_rng(seed).choice(len(docs), size=min(sample, len(docs)), replace=False)
    scores, _ = flat.search(docs[picked], k + 1)  # the first is the document itself
    distances = np.sqrt(np.maximum(2 - 2 * scores[:, 1:].astype(np.float64), 1e-12))
    estimates = (k - 1) / np.log(distances[:, -1:] / distances[:, :-1]).sum(axis=1)
    return float(np.median(estimates))


def recall_at(ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |ids ∩ exact_ids| / k (padding ids, -1, never match).

    Example:
        >>> recall_at(np.array([[1, 2, -1]]), np.array([[2, 1, 3]]))  # 2 of 3
        0.6666666666666666
    """
    k = exact_ids.shape[1]
    found = [len(set(row) & set(exact)) for row, exact in zip(ids.tolist(), exact_ids.tolist(), strict=True)]
    return float(np.mean(found)) / k


def scale_check(
    docs: np.ndarray,
    queries: np.ndarray,
    spec: str,
    seed: int,
    fraction: float = 0.2,
    ef_search: tuple[int, ...] = (64, 128),
    real: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """How the mixture ``spec`` extrapolates, checked where real vectors can answer: fitted to a seeded
    ``fraction`` of the real ``docs``, it draws as many vectors as there are real ones (1/``fraction`` times the
    density it saw, as the 1M set draws ~100 times that of the ~10k real vectors). Drawn and real documents
    are then compared by their local intrinsic dimension and by the recall@100 of one HNSW graph
    (``HNSW32,Flat``) at each ``ef_search`` for the same 1,000 real ``queries``: a generator whose drawn
    vectors are harder to search than the real ones at 5× is likely to make the 1M set harder than real data too.

    ``real``: the real documents' side, as an earlier check with the same arguments returned it (it does not
    depend on ``spec``); measured when ``None``.
    """
    fitted_on, asked = _scale_samples(docs, queries, seed, fraction)
    drawn = fit_mixture(docs[fitted_on], spec, seed).sample(len(docs), seed)
    return {
        "mixture": spec,
        "fitted_on": len(fitted_on),
        "draws": len(drawn),
        "queries": len(queries),
        "real": real if real is not None else _searched(docs.astype(np.float32), asked, seed, ef_search),
        "synthetic": _searched(drawn, asked, seed, ef_search),
    }


def _scale_samples(docs: np.ndarray, queries: np.ndarray, seed: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The seeded documents a scale check fits to and the (at most 1,000) queries it asks."""
    rng = np.random.default_rng(seed)
    fitted_on = rng.choice(len(docs), size=max(int(len(docs) * fraction), 2), replace=False)
    asked = queries[rng.choice(len(queries), size=min(1000, len(queries)), replace=False)].astype(np.float32)
    return fitted_on, asked


def _searched(vectors: np.ndarray, asked: np.ndarray, seed: int, ef_search: tuple[int, ...]) -> dict[str, Any]:
    """The intrinsic dimension of ``vectors`` and an HNSW graph's recall@100 over them for ``asked``."""
    from retrodistill.index.faiss_factory import FaissFactory
    from retrodistill.index.faiss_flat import FaissFlatIP

    flat = FaissFlatIP(use_gpu=False)
    flat.add(vectors)
    _, exact = flat.search(asked, 100)
    graph = FaissFactory("HNSW32,Flat", use_gpu=False, seed=seed)
    graph.add(vectors)
    recalls = {}
    for ef in ef_search:
        graph.set_search_params(efSearch=ef)
        recalls[ef] = round(recall_at(graph.search(asked, 100)[1], exact), 4)
    return {"lid": round(intrinsic_dimension(flat, vectors, seed), 1), "hnsw_recall": recalls}
