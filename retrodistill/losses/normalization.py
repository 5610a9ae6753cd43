"""Per-query score normalisation, applied by every loss before it compares student and teacher.

Teachers and students score on different scales: a cross-encoder's logits span roughly −10…10, a
cosine student's scores [−1, 1]. Losses that match score *values* (Margin-MSE's margins) or
softmaxes at one temperature inherit that mismatch. Normalising each query's row first removes it:

    ``"none"``     the scores unchanged (the default)
    ``"zscore"``   ``(x - mean(x)) / max(std(x), eps)``, with the population std (``correction=0``)
    ``"minmax"``   ``(x - min(x)) / max(max(x) - min(x), eps)``, which maps the row onto [0, 1]

Statistics are taken along the last dimension, so a ``(B, 1+N)`` matrix is normalised one query
(row) at a time and rows never mix. ``eps`` (default ``1e-6``) only matters for (nearly) constant
rows: a row whose spread is below ``eps`` is divided by ``eps`` instead, so a constant row maps to
all zeros under both methods and its gradient stays finite. Any other row gets exactly zero mean
and unit std (``zscore``) or exactly minimum 0 and maximum 1 (``minmax``).

``DistillationLoss`` applies these through its ``teacher_normalization`` and
``student_normalization`` parameters; the student's normalisation is differentiated through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

NORMALIZATIONS: tuple[str, ...] = ("none", "zscore", "minmax")
"""The accepted ``method`` names."""

EPSILON = 1e-6
"""The smallest spread a row is divided by (see the module docstring)."""


def check_normalization(method: str, label: str = "method") -> None:
    """Raise unless ``method`` is one of :data:`NORMALIZATIONS`.

    Args:
        method: The name to check.
        label: What the name was given as, for the error message (e.g. ``"teacher_normalization"``).

    Raises:
        ValueError: Naming ``label``, the value received and the accepted names.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"{label} must be one of {', '.join(map(repr, NORMALIZATIONS))}, got {method!r}")


def normalize_scores(scores: Tensor, method: str, eps: float = EPSILON) -> Tensor:
    """Normalise each row (query) of ``scores`` along its last dimension.

    Args:
        scores: ``(..., 1+N)`` floating-point scores, typically ``(B, 1+N)``.
        method: ``"none"``, ``"zscore"`` or ``"minmax"`` (see the module docstring).
        eps: The smallest spread a row is divided by; > 0.

    Returns:
        A tensor of the same shape and dtype; ``scores`` itself for ``"none"``.

    Raises:
        ValueError: If ``method`` is unknown or ``eps`` is not positive.

    Example:
        >>> import torch
        >>> normalize_scores(torch.tensor([[1.0, 3.0], [2.0, 2.0]]), "zscore")  # mean 2, std 1; constant row
        tensor([[-1.,  1.],
                [ 0.,  0.]])
        >>> normalize_scores(torch.tensor([[1.0, 5.0, 2.0]]), "minmax")  # (x - 1) / (5 - 1)
        tensor([[0.0000, 1.0000, 0.2500]])
    """
    check_normalization(method)
    if not eps > 0:
        raise ValueError(f"normalize_scores: eps must be positive, got {eps}")
    if method == "none":
        return scores
    if method == "zscore":
        centred = scores - scores.mean(dim=-1, keepdim=True)
        variance = centred.pow(2).mean(dim=-1, keepdim=True)  # population variance
        # Clamping the variance (not the std) keeps sqrt's gradient finite on constant rows.
        return centred / variance.clamp_min(eps**2).sqrt()
    low = scores.amin(dim=-1, keepdim=True)
    spread = scores.amax(dim=-1, keepdim=True) - low
    return (scores - low) / spread.clamp_min(eps)
