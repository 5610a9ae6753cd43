"""Per-query score normalisation: the one definition the losses and the teacher ensembles share.

Teachers and students score on different scales: a cross-encoder's logits span roughly −10…10, a
cosine student's scores [−1, 1]. Losses that match score *values* (Margin-MSE's margins) or
softmaxes at one temperature inherit that mismatch, and so does an ensemble that averages two
teachers. Normalising each query's scores first removes it. For one query's ``n`` scores ``x``:

    ``"none"``     the scores unchanged (the default)
    ``"zscore"``   ``(x − mean(x)) / max(std(x), eps)``, with the population std (``correction=0``)
    ``"minmax"``   ``(x − min(x)) / max(max(x) − min(x), eps)``, which maps the query onto [0, 1]
    ``"rank"``     ``1 − (r − 1) / (n − 1)`` with ``r`` the 1-based rank by descending score, tied
                   scores sharing the mean of their ranks: 1 for the top candidate, 0 for the last

**Constant queries.** A query whose scores are all exactly equal (a single candidate included) has
no spread to normalise by; it gets the middle of the method's range, the value ties get anyway
under ``rank``: 0 for ``zscore``, 0.5 for ``minmax`` and ``rank`` (:data:`CONSTANT_VALUE`). Never
NaN. ``eps`` (default ``1e-6``) only matters for nearly constant queries: a spread below ``eps``
is divided by ``eps`` instead, so the values stay small and the gradient finite. Any other query
gets exactly zero mean and unit std (``zscore``) or exactly minimum 0 and maximum 1 (``minmax``).

Two layouts, one definition:

* :func:`normalize_scores` — a ``(..., n)`` torch tensor, one query per row (the losses; their
  ``teacher_normalization`` and ``student_normalization`` parameters). The student's side is
  differentiated through, so it may not be ``rank`` (piecewise constant: no gradient).
* :func:`normalize_per_query` — a flat ``(n_rows,)`` numpy array whose rows are grouped by query
  (the teacher ensembles, :mod:`retrodistill.stages.ensemble`), queries of any size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

NORMALIZATIONS: tuple[str, ...] = ("none", "zscore", "minmax", "rank")
"""The accepted ``method`` names."""

CONSTANT_VALUE: dict[str, float] = {"zscore": 0.0, "minmax": 0.5, "rank": 0.5}
"""What every score of a constant query becomes, by method (``none`` leaves it unchanged)."""

EPSILON = 1e-6
"""The smallest spread a query is divided by (see the module docstring)."""


def check_normalization(method: str, label: str = "method", *, differentiable: bool = False) -> None:
    """Raise unless ``method`` is one of :data:`NORMALIZATIONS` (and has a gradient, if one is needed).

    Args:
        method: The name to check.
        label: What the name was given as, for the error message (e.g. ``"teacher_normalization"``).
        differentiable: The result is differentiated through (a student's scores): refuses ``rank``.

    Raises:
        ValueError: Naming ``label``, the value received and the accepted names.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"{label} must be one of {', '.join(map(repr, NORMALIZATIONS))}, got {method!r}")
    if differentiable and method == "rank":
        raise ValueError(f"{label} cannot be 'rank': ranks have no gradient, so the student would not learn")


def normalize_scores(scores: Tensor, method: str, eps: float = EPSILON) -> Tensor:
    """Normalise each row (query) of ``scores`` along its last dimension.

    Args:
        scores: ``(..., n)`` floating-point scores, typically ``(B, 1+N)``.
        method: ``"none"``, ``"zscore"``, ``"minmax"`` or ``"rank"`` (see the module docstring).
        eps: The smallest spread a row is divided by; > 0.

    Returns:
        A tensor of the same shape and dtype; ``scores`` itself for ``"none"``. ``"rank"`` values
        carry no gradient.

    Raises:
        ValueError: If ``method`` is unknown or ``eps`` is not positive.

    Example:
        >>> import torch
        >>> normalize_scores(torch.tensor([[1.0, 3.0], [2.0, 2.0]]), "zscore")  # mean 2, std 1; constant row
        tensor([[-1.,  1.],
                [ 0.,  0.]])
        >>> normalize_scores(torch.tensor([[1.0, 5.0, 2.0], [4.0, 4.0, 4.0]]), "minmax")  # (x - 1) / (5 - 1)
        tensor([[0.0000, 1.0000, 0.2500],
                [0.5000, 0.5000, 0.5000]])
        >>> normalize_scores(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), "rank")  # ranks 4, 1.5, 1.5, 3 of 4
        tensor([[0.0000, 0.8333, 0.8333, 0.3333]])
    """
    import torch

    check_normalization(method)
    if not eps > 0:
        raise ValueError(f"normalize_scores: eps must be positive, got {eps}")
    if method == "none":
        return scores
    low, high = scores.amin(dim=-1, keepdim=True), scores.amax(dim=-1, keepdim=True)
    constant = high == low  # exact: a mean of equal floats need not equal them
    if method == "zscore":
        centred = scores - scores.mean(dim=-1, keepdim=True)
        variance = centred.pow(2).mean(dim=-1, keepdim=True)  # population variance
        # Clamping the variance (not the std) keeps sqrt's gradient finite on constant rows.
        out = centred / variance.clamp_min(eps**2).sqrt()
    elif method == "minmax":
        out = (scores - low) / (high - low).clamp_min(eps)
    else:
        n = scores.shape[-1]
        x = scores.detach()
        above = (x.unsqueeze(-2) > x.unsqueeze(-1)).sum(dim=-1)  # (..., n): scores above each one
        tied = (x.unsqueeze(-2) == x.unsqueeze(-1)).sum(dim=-1)  # itself included
        rank = 1.0 + above.to(scores.dtype) + (tied.to(scores.dtype) - 1.0) / 2.0
        out = 1.0 - (rank - 1.0) / max(n - 1, 1)
    # torch.where's other branch is finite, so the gradient of a constant row is 0, never NaN.
    return torch.where(constant, torch.full_like(out, CONSTANT_VALUE[method]), out)


class QueryRows(Protocol):
    """Rows grouped by query, each query's rows contiguous (``ensemble_calibration.QueryGroups``)."""

    @property
    def index(self) -> np.ndarray:
        """``(n_rows,)`` the query of each row, 0, 1, ... in row order."""

    @property
    def starts(self) -> np.ndarray:
        """``(n_queries,)`` the first row of each query."""

    @property
    def sizes(self) -> np.ndarray:
        """``(n_queries,)`` rows per query."""


def normalize_per_query(scores: np.ndarray, groups: QueryRows, method: str, eps: float = EPSILON) -> np.ndarray:
    """Normalise ``scores`` within each query, as :func:`normalize_scores` does one row.

    Args:
        scores: ``(n_rows,)`` scores, rows grouped by query as ``groups`` says.
        groups: the query of each row.
        method: one of :data:`NORMALIZATIONS`.
        eps: The smallest spread a query is divided by; > 0.

    Returns:
        ``(n_rows,)`` float64 normalised scores (a copy for ``"none"``).

    Example:
        >>> from types import SimpleNamespace
        >>> import numpy as np
        >>> groups = SimpleNamespace(index=np.array([0, 0, 0, 1]), starts=np.array([0, 3]), sizes=np.array([3, 1]))
        >>> normalize_per_query(np.array([1.0, 3.0, 2.0, 5.0]), groups, "rank").tolist()
        [0.0, 1.0, 0.5, 0.5]
    """
    import numpy as np

    if method not in NORMALIZATIONS:
        raise ValueError(f"normalization {method!r} is not one of {', '.join(NORMALIZATIONS)}")
    if not eps > 0:
        raise ValueError(f"normalize_per_query: eps must be positive, got {eps}")
    x = np.asarray(scores, dtype=np.float64)
    if method == "none" or len(x) == 0:
        return x.copy()
    lo, hi = np.minimum.reduceat(x, groups.starts), np.maximum.reduceat(x, groups.starts)
    constant = (hi == lo)[groups.index]
    if method == "zscore":
        mean = np.add.reduceat(x, groups.starts) / groups.sizes
        centred = x - mean[groups.index]
        variance = np.add.reduceat(centred * centred, groups.starts) / groups.sizes
        out = centred / np.sqrt(np.maximum(variance, eps**2))[groups.index]
    elif method == "minmax":
        out = (x - lo[groups.index]) / np.maximum(hi - lo, eps)[groups.index]
    else:
        out = 1.0 - (_mean_ranks(x, groups) - 1.0) / np.maximum(groups.sizes - 1, 1)[groups.index]
    return np.where(constant, CONSTANT_VALUE[method], out)


def _mean_ranks(x: np.ndarray, groups: QueryRows) -> np.ndarray:
    """1-based rank of each row within its query by descending score; ties get their mean rank."""
    import numpy as np

    order = np.lexsort((-x, groups.index))  # by query, then score descending
    g, v = groups.index[order], x[order]
    position = np.arange(len(x)) - groups.starts[g]  # 0-based rank in the query
    new_run = np.ones(len(x), dtype=bool)
    new_run[1:] = (g[1:] != g[:-1]) | (v[1:] != v[:-1])
    run_starts = np.flatnonzero(new_run)
    run_index = np.cumsum(new_run) - 1
    mean_position = (np.minimum.reduceat(position, run_starts) + np.maximum.reduceat(position, run_starts)) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_position[run_index] + 1.0
    return ranks
