"""RankNet distillation: the student's pairwise preferences copy the teacher's soft ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from retrodistill.losses.base import LOSSES, DistillationLoss

if TYPE_CHECKING:
    from torch import Tensor

PAIRS = ("all", "positive")


@LOSSES.register("ranknet")
@dataclass(frozen=True)
class RankNet(DistillationLoss):
    """Binary cross-entropy between the teacher's and the student's pairwise preference probabilities.

    For a query with scores ``s`` (student) and ``t`` (teacher) over ``1 + N`` documents, and each
    pair ``(i, j)`` of the chosen set::

        p_ij = sigmoid((t_i - t_j) / temperature_teacher)     # target: P(doc i above doc j)
        q_ij = sigmoid((s_i - s_j) / temperature_student)     # the student's prediction
        l_ij = -(p_ij * log q_ij + (1 - p_ij) * log(1 - q_ij))
        loss = mean over the B queries of (mean over the query's pairs of l_ij)

    ``pairs="all"`` uses every ``i < j`` (``(1+N) * N / 2`` pairs per query); ``pairs="positive"``
    only the ``N`` pairs ``(0, j)`` of the positive against each negative. Every query has the same
    number of pairs, so this is also the mean over all ``B * P`` pair terms. Listing ``(j, i)`` as
    well would change nothing: its term equals that of ``(i, j)``.

    This is Burges et al.'s RankNet cost with *soft* targets ``P̄_ij`` (which their paper allows),
    here the teacher's. Scale convention: RankNet models ``P(i > j) = sigmoid(sigma * (s_i - s_j))``;
    ``1 / temperature_student`` is that ``sigma`` and ``1 / temperature_teacher`` the teacher's, so
    with both at 1 raw score differences are read as logits. Pairs the teacher ties
    (``p_ij = 1/2``) are kept and pull the student towards a tie. The loss is not 0 at its minimum
    (``q = p``) but the mean binary entropy of the targets; it is 0 only where the teacher's
    preferences are certain. PairDistill's pairwise loss (``pairwise-kl``) is the same objective up
    to that entropy constant, with targets from a pairwise reranker instead of score differences.

    Inputs:
        +--------------------+--------------+-------------------------------------------------+
        | argument           | shape        | meaning                                         |
        +====================+==============+=================================================+
        | ``student_scores`` | ``(B, 1+N)`` | the student's ``sim(query, doc_j)``, ``N >= 1`` |
        +--------------------+--------------+-------------------------------------------------+
        | ``teacher_scores`` | ``(B, 1+N)`` | the teacher's raw scores (logits), same order   |
        +--------------------+--------------+-------------------------------------------------+

    References:
        - Burges et al., *Learning to Rank using Gradient Descent*, ICML 2005.
          https://doi.org/10.1145/1102351.1102363
        - Huang and Chen, *PairDistill: Pairwise Relevance Distillation for Dense Retrieval*,
          EMNLP 2024 (the same pairwise cross-entropy, as a binary KL, for distillation).
          https://arxiv.org/abs/2410.01383

    Example:
        >>> import torch
        >>> loss = RankNet()
        >>> student = torch.tensor([[0.0, 0.0]])  # q_01 = 1/2
        >>> teacher = torch.tensor([[1.0, 1.0]])  # p_01 = 1/2
        >>> loss(student, teacher)  # -(1/2 * log(1/2) + 1/2 * log(1/2)) = log 2
        tensor(0.6931)
    """

    name: ClassVar[str] = "ranknet"

    temperature_teacher: float = field(
        default=1.0, metadata={"help": "p_ij = sigmoid((t_i - t_j) / temperature_teacher); > 0"}
    )
    temperature_student: float = field(
        default=1.0, metadata={"help": "q_ij = sigmoid((s_i - s_j) / temperature_student); > 0"}
    )
    pairs: str = field(
        default="all", metadata={"help": "'all' pairs i < j, or 'positive': only (0, j), positive vs negative"}
    )

    def __post_init__(self) -> None:
        self.require_positive("temperature_teacher", "temperature_student")
        if self.pairs not in PAIRS:
            raise ValueError(f"RankNet: pairs must be one of {', '.join(map(repr, PAIRS))}, got {self.pairs!r}")

    def compute(self, student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
        """Mean over queries of the mean pairwise binary cross-entropy."""
        import torch
        import torch.nn.functional as F

        columns = student_scores.shape[1]
        if self.pairs == "all":
            first, second = torch.triu_indices(columns, columns, offset=1, device=student_scores.device)
        else:
            second = torch.arange(1, columns, device=student_scores.device)
            first = torch.zeros_like(second)
        student_logits = (student_scores[:, first] - student_scores[:, second]) / self.temperature_student  # (B, P)
        targets = torch.sigmoid((teacher_scores[:, first] - teacher_scores[:, second]) / self.temperature_teacher)
        # The with-logits form is exact where sigmoid(student_logits) would round to 0 or 1.
        return F.binary_cross_entropy_with_logits(student_logits, targets, reduction="mean")

    @property
    def citation(self) -> str:
        """BibTeX for Burges et al. (2005) and PairDistill (Huang and Chen, 2024)."""
        return """
@inproceedings{burges2005learning,
    title={Learning to Rank using Gradient Descent},
    author={Chris Burges and Tal Shaked and Erin Renshaw and Ari Lazier and Matt Deeds
            and Nicole Hamilton and Greg Hullender},
    booktitle={Proceedings of the 22nd International Conference on Machine Learning (ICML)},
    pages={89--96},
    year={2005},
    doi={10.1145/1102351.1102363}
}

@inproceedings{huang2024pairdistill,
    title={PairDistill: Pairwise Relevance Distillation for Dense Retrieval},
    author={Chao-Wei Huang and Yun-Nung Chen},
    booktitle={Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
    year={2024},
    eprint={2410.01383},
    archivePrefix={arXiv}
}
"""
