"""ListNet: cross-entropy from the teacher's softmax over the candidates to the student's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from retrodistill.losses.base import LOSSES, DistillationLoss

if TYPE_CHECKING:
    from torch import Tensor


@LOSSES.register("listnet")
@dataclass(frozen=True)
class ListNet(DistillationLoss):
    """Soft-label cross-entropy between the teacher's and the student's top-one probabilities.

    For a batch of ``B`` queries::

        p = softmax(t / temperature_teacher)          # (B, 1+N), the target
        q = softmax(s / temperature_student)          # (B, 1+N)
        loss = -1 / B * sum_b sum_j p[b, j] * log q[b, j]

    where ``s`` are the student's scores and ``t`` the teacher's: ListNet's top-one probability
    model with ``phi = exp`` (Cao et al., 2007), the teacher's distribution standing in for the
    labels. The cross-entropy is summed over the ``1 + N`` documents and averaged over the queries.

    Relation to ``listwise-kl``: ``CE(p, q) = KL(p || q) + H(p)`` with ``H(p) = -sum_j p_j log p_j``
    the teacher distribution's entropy, which does not depend on the student. So with the same
    temperatures ``ListNet`` equals ``ListwiseKL`` (without ``scale_by_temperature_squared``) plus
    the batch mean of ``H(p)``, and both give the student exactly the same gradient,
    ``(q - p) / (temperature_student * B)``. Only the reported value differs: ListNet's minimum is
    ``H(p)``, not 0, so its curve does not show how close the student is to the teacher.

    Inputs:
        +--------------------+--------------+-------------------------------------------------+
        | argument           | shape        | meaning                                         |
        +====================+==============+=================================================+
        | ``student_scores`` | ``(B, 1+N)`` | the student's ``sim(query, doc_j)``, ``N >= 1`` |
        +--------------------+--------------+-------------------------------------------------+
        | ``teacher_scores`` | ``(B, 1+N)`` | the teacher's raw scores (logits), same order   |
        +--------------------+--------------+-------------------------------------------------+

    References:
        Cao et al., *Learning to Rank: From Pairwise Approach to Listwise Approach*, ICML 2007.
        https://doi.org/10.1145/1273496.1273513

    Example:
        >>> import torch
        >>> loss = ListNet()
        >>> student = torch.tensor([[0.0, 0.0]])  # q = [1/2, 1/2]
        >>> teacher = torch.log(torch.tensor([[3.0, 1.0]]))  # p = [3/4, 1/4]
        >>> loss(student, teacher)  # -(3/4 * log(1/2) + 1/4 * log(1/2)) = log 2
        tensor(0.6931)
    """

    name: ClassVar[str] = "listnet"

    temperature_teacher: float = field(
        default=1.0, metadata={"help": "divides the teacher's scores before the softmax; > 0"}
    )
    temperature_student: float = field(
        default=1.0, metadata={"help": "divides the student's scores before the softmax; > 0"}
    )

    def __post_init__(self) -> None:
        self.require_positive("temperature_teacher", "temperature_student")

    def compute(self, student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
        """``-sum_j softmax(t / tau_t)_j * log softmax(s / tau_s)_j``, averaged over queries."""
        import torch

        student_log_probs = torch.log_softmax(student_scores / self.temperature_student, dim=1)  # (B, 1+N)
        teacher_probs = torch.softmax(teacher_scores / self.temperature_teacher, dim=1)  # (B, 1+N)
        return -(teacher_probs * student_log_probs).sum(dim=1).mean()

    @property
    def citation(self) -> str:
        """BibTeX for Cao et al. (2007)."""
        return """
@inproceedings{cao2007learning,
    title={Learning to Rank: From Pairwise Approach to Listwise Approach},
    author={Zhe Cao and Tao Qin and Tie-Yan Liu and Ming-Feng Tsai and Hang Li},
    booktitle={Proceedings of the 24th International Conference on Machine Learning (ICML)},
    pages={129--136},
    year={2007},
    doi={10.1145/1273496.1273513}
}
"""
