"""Pairwise KL (PairDistill): the student copies a pairwise teacher's P(doc i more relevant than doc j).

Unlike the other losses, the teacher input is not a ``(B, 1+N)`` score matrix but a
``(B, 1+N, 1+N)`` matrix of pairwise probabilities, most of it NaN: a pairwise reranker scores only
some ordered pairs (typically pairs among a query's top-m candidates). ``pairwise_probabilities``
builds such a matrix from pointwise scores, for tests and when no pairwise teacher exists. The loss
names its inputs ``("student_scores", "teacher_pairwise")`` (:class:`~retrodistill.losses.combined.LossInputs`),
so it can be combined with a pointwise loss; ``train-student`` reads ``teacher_pairwise`` from the
``score-pairwise`` store named by ``pair_store``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from retrodistill.losses.base import LOSSES, DistillationLoss

if TYPE_CHECKING:
    from torch import Tensor


def pairwise_probabilities(teacher_scores: Tensor, temperature: float = 1.0, top_m: int | None = None) -> Tensor:
    """Pairwise teacher probabilities ``p_ij = sigmoid((t_i - t_j) / temperature)`` from pointwise scores.

    Args:
        teacher_scores: ``(B, 1+N)`` pointwise teacher scores; column 0 is the positive.
        temperature: Divides the score differences; > 0.
        top_m: If given, only pairs of two documents both among the row's ``top_m`` highest teacher
            scores are "scored" (ties broken by column order); all other pairs are NaN, as from a
            pairwise reranker run on the top-m candidates only. ``top_m >= 2``.

    Returns:
        ``(B, 1+N, 1+N)`` probabilities in the scores' dtype: ``[b, i, j]`` is the probability that
        document ``i`` is more relevant than document ``j`` for query ``b``; the diagonal, and the
        pairs outside the top-m, are NaN.

    Raises:
        ValueError: If the scores are not 2-D, the temperature is not positive and finite, or
            ``top_m < 2``.

    Example:
        >>> import torch
        >>> pairwise_probabilities(torch.tensor([[0.0, 0.0, 3.0]]), top_m=2)[0]  # pairs among docs 2 and 0
        tensor([[   nan,    nan, 0.0474],
                [   nan,    nan,    nan],
                [0.9526,    nan,    nan]])
    """
    import torch

    if teacher_scores.ndim != 2:
        raise ValueError(f"pairwise_probabilities expects (B, 1+N) scores, got shape {tuple(teacher_scores.shape)}")
    if not 0 < temperature < math.inf:
        raise ValueError(f"pairwise_probabilities: temperature must be a positive finite number, got {temperature}")
    if top_m is not None and top_m < 2:
        raise ValueError(f"pairwise_probabilities: top_m must be at least 2 (one pair), got {top_m}")
    scores = teacher_scores.detach()
    columns = scores.shape[1]
    probabilities = torch.sigmoid((scores[:, :, None] - scores[:, None, :]) / temperature)  # (B, 1+N, 1+N)
    scored = ~torch.eye(columns, dtype=torch.bool, device=scores.device).expand_as(probabilities)
    if top_m is not None and top_m < columns:
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :top_m]  # (B, m)
        in_top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, True)  # (B, 1+N)
        scored = scored & in_top[:, :, None] & in_top[:, None, :]
    return probabilities.masked_fill(~scored, math.nan)


@LOSSES.register("pairwise-kl")
@dataclass(frozen=True)
class PairwiseKL(DistillationLoss):
    """Binary KL divergence from a pairwise teacher's preferences to the student's, over scored pairs.

    For each query ``b`` and each ordered pair ``(i, j)``, ``i != j``, whose teacher probability
    ``p = P[b, i, j]`` is not NaN::

        q = sigmoid((s[b, i] - s[b, j]) / temperature_student)   # = softmax([s_i, s_j] / tau)[0]
        l = p * log(p / q) + (1 - p) * log((1 - p) / (1 - q))   # KL([p, 1-p] || [q, 1-q])
        loss = sum of l over all scored pairs of the batch / number of scored pairs of the batch

    This is the pairwise loss ``L_pair`` of PairDistill as the authors' released code computes it
    (``pair_distill_loss`` in MiuLab/PairDistill): a two-way KL per scored pair between the pairwise
    reranker's ``[p_ij, 1 - p_ij]`` and the softmax of the student's two (temperature-divided)
    scores, averaged over all the batch's scored pairs, not per query. Its gradient is RankNet's
    (``ranknet``); only the value differs, by the targets' binary entropy, so a perfect copy
    scores 0. PairDistill trains with this term *added* to a pointwise distillation loss
    (``L_KD + lambda * L_pair``); combining losses, and choosing which pairs the reranker scores,
    are left to the caller.

    Conventions:
        - Every non-NaN off-diagonal cell is one term, so a teacher that scored both ``(i, j)`` and
          ``(j, i)`` (e.g. both orders, against position bias) gets both terms; a caller wanting a
          symmetrised estimate writes ``(p_ij + 1 - p_ji) / 2`` into one cell and NaN into the other.
        - The diagonal is ignored, whatever it holds.
        - A row (query) with no scored pair contributes nothing and does not dilute the mean. A
          batch with no scored pair at all raises ``ValueError`` (the released code returns 0).
        - ``teacher_normalization`` must be ``"none"``: the teacher's values are probabilities.
          ``student_normalization`` applies to the student's ``(B, 1+N)`` scores as for any loss.

    Inputs:
        +--------------------+-------------------+-------------------------------------------------+
        | argument           | shape             | meaning                                         |
        +====================+===================+=================================================+
        | ``student_scores`` | ``(B, 1+N)``      | the student's ``sim(query, doc_j)``, ``N >= 1`` |
        +--------------------+-------------------+-------------------------------------------------+
        | ``teacher_scores`` | ``(B, 1+N, 1+N)`` | ``[b, i, j]``: P(doc i more relevant than doc j |
        |                    |                   | for query b), in [0, 1]; NaN = not scored       |
        +--------------------+-------------------+-------------------------------------------------+

    References:
        Huang and Chen, *PairDistill: Pairwise Relevance Distillation for Dense Retrieval*,
        EMNLP 2024. https://arxiv.org/abs/2410.01383 (code: https://github.com/MiuLab/PairDistill)

    Example:
        >>> import torch
        >>> nan = float("nan")
        >>> teacher = torch.tensor([[[nan, 0.75], [nan, nan]]])  # only (0, 1) scored: p = 3/4
        >>> student = torch.tensor([[0.0, 0.0]])  # q = 1/2
        >>> PairwiseKL()(student, teacher)  # 3/4 * log((3/4) / (1/2)) + 1/4 * log((1/4) / (1/2))
        tensor(0.1308)
    """

    name: ClassVar[str] = "pairwise-kl"
    inputs: ClassVar[tuple[str, ...]] = ("student_scores", "teacher_pairwise")
    """Called with the student's scores and the pairwise probabilities (``LossInputs.teacher_pairwise``)."""

    temperature_student: float = field(
        default=1.0, metadata={"help": "q_ij = sigmoid((s_i - s_j) / temperature_student); > 0"}
    )

    def __post_init__(self) -> None:
        if not 0 < self.temperature_student < math.inf:
            raise ValueError(
                f"PairwiseKL: temperature_student must be a positive finite number, got {self.temperature_student}"
            )
        if self.teacher_normalization != "none":
            raise ValueError(
                "PairwiseKL: teacher_normalization must be 'none' (the teacher gives pairwise probabilities), "
                f"got {self.teacher_normalization!r}"
            )

    def validate(self, student_scores: Tensor, teacher_scores: Tensor) -> None:
        """Check the ``(B, 1+N)`` student scores and the ``(B, 1+N, 1+N)`` pairwise teacher probabilities.

        Raises:
            ValueError: Naming the expected and received shapes; teacher values outside [0, 1] (inf
                included) other than NaN; or a batch without any scored off-diagonal pair.
        """
        import torch

        student_shape, teacher_shape = tuple(student_scores.shape), tuple(teacher_scores.shape)
        got = f"got student scores {student_shape} and teacher probabilities {teacher_shape}"
        if student_scores.ndim != 2 or teacher_scores.ndim != 3:
            raise ValueError(
                f"PairwiseKL expects student scores (B, 1+N) and pairwise teacher probabilities (B, 1+N, 1+N); {got}"
            )
        batch_size, columns = student_shape
        if teacher_shape != (batch_size, columns, columns):
            expected = (batch_size, columns, columns)
            raise ValueError(f"PairwiseKL expects teacher probabilities of shape (B, 1+N, 1+N) = {expected}; {got}")
        if batch_size < 1 or columns < 2:
            raise ValueError(f"PairwiseKL expects B >= 1 and at least 2 documents per query; {got}")
        if not student_scores.is_floating_point():
            raise ValueError(f"PairwiseKL expects floating-point student scores, got {student_scores.dtype}")
        if not teacher_scores.is_floating_point():
            raise ValueError(f"PairwiseKL expects floating-point teacher probabilities, got {teacher_scores.dtype}")
        scored = ~torch.isnan(teacher_scores)
        invalid = scored & ((teacher_scores < 0) | (teacher_scores > 1))
        if bool(invalid.any()):
            rows = sorted({int(row) for row in invalid.nonzero()[:, 0].tolist()})
            raise ValueError(
                f"PairwiseKL: teacher probabilities must lie in [0, 1] (NaN = pair not scored), "
                f"but rows {rows[:10]} hold other values"
            )
        off_diagonal = ~torch.eye(columns, dtype=torch.bool, device=teacher_scores.device)
        if not bool((scored & off_diagonal).any()):
            raise ValueError(f"PairwiseKL: no scored pair in the batch (every off-diagonal probability is NaN); {got}")

    def compute(self, student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
        """Mean over the batch's scored pairs of ``KL([p, 1-p] || [q, 1-q])``."""
        import torch
        import torch.nn.functional as F

        columns = student_scores.shape[1]
        off_diagonal = ~torch.eye(columns, dtype=torch.bool, device=student_scores.device)
        scored = ~torch.isnan(teacher_scores) & off_diagonal  # (B, 1+N, 1+N)
        targets = teacher_scores[scored]  # (P,)
        logits = (student_scores[:, :, None] - student_scores[:, None, :]) / self.temperature_student
        cross_entropy = F.binary_cross_entropy_with_logits(logits[scored], targets, reduction="none")
        # KL = cross-entropy - binary entropy of p; xlogy makes 0 * log 0 = 0 for certain targets.
        entropy = -(torch.xlogy(targets, targets) + torch.xlogy(1 - targets, 1 - targets))
        return (cross_entropy - entropy).mean()

    @property
    def citation(self) -> str:
        """BibTeX for PairDistill (Huang and Chen, 2024)."""
        return """
@inproceedings{huang2024pairdistill,
    title={PairDistill: Pairwise Relevance Distillation for Dense Retrieval},
    author={Chao-Wei Huang and Yun-Nung Chen},
    booktitle={Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
    year={2024},
    eprint={2410.01383},
    archivePrefix={arXiv}
}
"""
