"""Margin-MSE: the student copies the teacher's score margin between the positive and each negative."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from retrodistill.losses.base import LOSSES, DistillationLoss

if TYPE_CHECKING:
    from torch import Tensor


@LOSSES.register("margin-mse")
@dataclass(frozen=True)
class MarginMSE(DistillationLoss):
    """Mean squared error between the student's and the teacher's signed margins.

    For a batch of ``B`` queries, each with a positive (column 0) and ``N`` negatives::

        loss = 1 / (B * N) * sum_b sum_{i=1..N} ((s[b, 0] - s[b, i]) - (t[b, 0] - t[b, i])) ** 2

    where ``s`` are the student's scores and ``t`` the teacher's. Margins are signed: a negative the
    teacher scores above the positive gives a negative target margin, which the student must copy
    (no ``abs``). Only differences between scores are matched, so the student's scores may sit at any
    offset from the teacher's but must share its scale. With several negatives this is the mean over
    all ``B * N`` margins, which is what sentence-transformers' ``MarginMSELoss`` computes when its
    labels are the ``1 + N`` teacher scores (or the ``N`` teacher margins).

    Inputs:
        +--------------------+--------------+-------------------------------------------------+
        | argument           | shape        | meaning                                         |
        +====================+==============+=================================================+
        | ``student_scores`` | ``(B, 1+N)`` | the student's ``sim(query, doc_j)``, ``N >= 1`` |
        +--------------------+--------------+-------------------------------------------------+
        | ``teacher_scores`` | ``(B, 1+N)`` | the teacher's raw scores for the same documents |
        +--------------------+--------------+-------------------------------------------------+

    References:
        Hofstätter et al., *Improving Efficient Neural Ranking Models with Cross-Architecture
        Knowledge Distillation*, 2020. https://arxiv.org/abs/2010.02666

    Example:
        >>> import torch
        >>> loss = MarginMSE()
        >>> loss(torch.tensor([[2.0, 1.0]]), torch.tensor([[3.0, 0.5]]))  # ((2-1) - (3-0.5))**2
        tensor(2.2500)
        >>> loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[3.0, 0.5, 3.0]]))  # (2.25 + 4) / 2
        tensor(3.1250)
    """

    name: ClassVar[str] = "margin-mse"

    def compute(self, student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
        """Mean over the ``(B, N)`` margins of the squared margin difference."""
        import torch.nn.functional as F

        student_margins = student_scores[:, :1] - student_scores[:, 1:]  # (B, N)
        teacher_margins = teacher_scores[:, :1] - teacher_scores[:, 1:]  # (B, N)
        return F.mse_loss(student_margins, teacher_margins, reduction="mean")

    @property
    def citation(self) -> str:
        """BibTeX for Hofstätter et al. (2020)."""
        return """
@misc{hofstatter2020improving,
    title={Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation},
    author={Sebastian Hofstätter and Sophia Althammer and Michael Schröder and Mete Sertkan
            and Allan Hanbury},
    year={2020},
    eprint={2010.02666},
    archivePrefix={arXiv},
    primaryClass={cs.IR}
}
"""
