"""LambdaLoss (LambdaRank weighting): pairwise logistic loss weighted by the NDCG change of a swap."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from retrodistill.losses.base import LOSSES, DistillationLoss

if TYPE_CHECKING:
    from torch import Tensor


@LOSSES.register("lambdaloss")
@dataclass(frozen=True)
class LambdaLoss(DistillationLoss):
    """ΔNDCG-weighted RankNet: the LambdaRank loss of the LambdaLoss framework, with teacher gains.

    The teacher defines relevance, the student's current ranking the discounts. For one query with
    student scores ``s`` and teacher scores ``t`` over ``M = 1 + N`` documents::

        G_i    = softmax(t / temperature_teacher)_i            # gain of doc i (the teacher's)
        IDCG   = sum_k G_(k) / log2(1 + k)                      # G sorted descending, k = 1..M
        r_i    = rank of doc i when sorted by s, descending     # 1..M, ties by column order
        w_ij   = |G_i - G_j| * |1 / log2(1 + r_i) - 1 / log2(1 + r_j)| / IDCG     # = |ΔNDCG_ij|
        l_ij   = w_ij * log2(1 + exp(-(s_i - s_j) / temperature_student))        # = -w_ij log2 sigmoid(.)
        loss   = sum of l_ij over all (b, i, j) with G_i > G_j / number of such (b, i, j)

    ``w_ij`` is the absolute change of NDCG (over the whole list, no cutoff) when documents ``i``
    and ``j`` swap places in the student's ranking: the "LambdaRank" weighting scheme of Wang et al.'s
    LambdaLoss framework, in which LambdaRank's heuristic gradients get a well-defined loss.
    Each ordered pair in which the teacher prefers ``i`` (``G_i > G_j``) is one term, so every
    unordered pair with distinct gains counts once and teacher ties contribute nothing; the sum is
    divided by the number of such pairs in the whole batch. The weights (ranks, ``IDCG``) carry no
    gradient; the logarithm is base 2, as in the paper.

    Gains: with graded labels NDCG uses ``G = 2^rel - 1``. Here ``rel_i = log2(1 + softmax(t/τ)_i)``,
    so ``G_i`` is the teacher's softmax probability: positive, summing to 1 per query, invariant to
    shifts of the teacher's scores, and sharpened (towards the teacher's top document alone) by a
    smaller ``temperature_teacher``. The ideal ranking is the teacher's ranking.

    This equals sentence-transformers' cross-encoder ``LambdaLoss(weighting_scheme=LambdaRankScheme(),
    sigma=1/temperature_student, k=None, reduction_log="binary")`` with labels ``log2(1 + G)``, on
    scores without ties (tested).

    Inputs:
        +--------------------+--------------+-------------------------------------------------+
        | argument           | shape        | meaning                                         |
        +====================+==============+=================================================+
        | ``student_scores`` | ``(B, 1+N)`` | the student's ``sim(query, doc_j)``, ``N >= 1`` |
        +--------------------+--------------+-------------------------------------------------+
        | ``teacher_scores`` | ``(B, 1+N)`` | the teacher's raw scores (logits), same order   |
        +--------------------+--------------+-------------------------------------------------+

    References:
        - Wang et al., *The LambdaLoss Framework for Ranking Metric Optimization*, CIKM 2018.
          https://doi.org/10.1145/3269206.3271784
        - Burges et al., *Learning to Rank with Nonsmooth Cost Functions* (LambdaRank), NIPS 2006.

    Example:
        >>> import math, torch
        >>> loss = LambdaLoss()
        >>> teacher = torch.log(torch.tensor([[3.0, 1.0]]))  # G = [3/4, 1/4], IDCG = 3/4 + 1/4 / log2(3)
        >>> student = torch.tensor([[0.0, 1.0]])  # the student ranks doc 1 first: r = [2, 1]
        >>> weight = (3/4 - 1/4) * (1 - 1 / math.log2(3)) / (3/4 + 1/4 / math.log2(3))
        >>> round(weight * math.log2(1 + math.e), 4)  # one pair: the teacher prefers doc 0
        0.3852
        >>> loss(student, teacher)
        tensor(0.3852)
    """

    name: ClassVar[str] = "lambdaloss"

    temperature_teacher: float = field(
        default=1.0, metadata={"help": "gains G = softmax(t / temperature_teacher); > 0"}
    )
    temperature_student: float = field(
        default=1.0, metadata={"help": "pair probability sigmoid((s_i - s_j) / temperature_student); > 0"}
    )

    def __post_init__(self) -> None:
        self.require_positive("temperature_teacher", "temperature_student")

    def compute(self, student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
        """``|ΔNDCG|``-weighted pairwise logistic loss (log base 2), mean over preferred pairs."""
        import torch
        import torch.nn.functional as F

        columns = student_scores.shape[1]
        gains = torch.softmax(teacher_scores / self.temperature_teacher, dim=1)  # (B, M)
        positions = torch.arange(1, columns + 1, device=student_scores.device, dtype=student_scores.dtype)
        inverse_discounts = 1.0 / torch.log2(1.0 + positions)  # (M,), 1 / log2(1 + k)
        ideal = (torch.sort(gains, dim=1, descending=True).values * inverse_discounts).sum(dim=1)  # (B,)

        with torch.no_grad():  # ranks are piecewise constant: the weights carry no gradient
            order = torch.sort(student_scores, dim=1, descending=True, stable=True).indices  # (B, M)
            positions_taken = torch.arange(columns, device=order.device).expand_as(order)
            ranks = torch.empty_like(order).scatter_(1, order, positions_taken)  # (B, M): r_i - 1
            rank_inverse_discounts = inverse_discounts[ranks]  # (B, M): 1 / log2(1 + r_i)
            gain_differences = gains[:, :, None] - gains[:, None, :]  # (B, M, M): G_i - G_j
            weights = (
                gain_differences.abs()
                * (rank_inverse_discounts[:, :, None] - rank_inverse_discounts[:, None, :]).abs()
                / ideal[:, None, None]
            )
            preferred = gain_differences > 0  # the teacher prefers i over j

        logits = (student_scores[:, :, None] - student_scores[:, None, :]) / self.temperature_student  # (B, M, M)
        pair_losses = weights * F.softplus(-logits) / math.log(2)  # -w * log2 sigmoid(logits)
        count = int(preferred.sum())
        # A batch whose teacher ties every document has no preference to learn: loss 0, kept in the graph.
        return pair_losses[preferred].sum() / max(count, 1)

    @property
    def citation(self) -> str:
        """BibTeX for Wang et al. (2018)."""
        return """
@inproceedings{wang2018lambdaloss,
    title={The LambdaLoss Framework for Ranking Metric Optimization},
    author={Xuanhui Wang and Cheng Li and Nadav Golbandi and Michael Bendersky and Marc Najork},
    booktitle={Proceedings of the 27th ACM International Conference on Information and Knowledge Management (CIKM)},
    pages={1313--1322},
    year={2018},
    doi={10.1145/3269206.3271784}
}
"""
