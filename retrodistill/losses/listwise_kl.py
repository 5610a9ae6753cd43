"""Listwise KL: the student's softmax over the candidates copies the teacher's softmax."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from retrodistill.losses.base import LOSSES, DistillationLoss

if TYPE_CHECKING:
    from torch import Tensor


@LOSSES.register("listwise-kl")
@dataclass(frozen=True)
class ListwiseKL(DistillationLoss):
    """KL divergence from the teacher's to the student's distribution over the ``1 + N`` documents.

    For a batch of ``B`` queries::

        p = softmax(t / temperature_teacher)          # (B, 1+N), the target
        q = softmax(s / temperature_student)          # (B, 1+N)
        loss = 1 / B * sum_b sum_j p[b, j] * (log p[b, j] - log q[b, j])     # KL(p || q), "batchmean"
        loss = loss * temperature_student ** 2        # only if scale_by_temperature_squared

    where ``s`` are the student's scores and ``t`` the teacher's. The positive (column 0) plays no
    special role: the whole ranking is distilled. The KL is summed over the documents and averaged
    over the queries, as in ``torch.nn.KLDivLoss(reduction="batchmean")``.

    A temperature above 1 softens its distribution. Set ``temperature_teacher`` to the spread of the
    teacher's raw scores: a float32 softmax underflows to exact zeros once a row's spread divided by
    the temperature exceeds about 100, and such candidates then carry no gradient.
    ``scale_by_temperature_squared`` multiplies by ``temperature_student ** 2`` (Hinton et al.'s
    correction, which keeps gradient magnitudes comparable across temperatures); sentence-transformers'
    ``DistillKLDivLoss`` always applies it.

    Inputs:
        +--------------------+--------------+-------------------------------------------------+
        | argument           | shape        | meaning                                         |
        +====================+==============+=================================================+
        | ``student_scores`` | ``(B, 1+N)`` | the student's ``sim(query, doc_j)``, ``N >= 1`` |
        +--------------------+--------------+-------------------------------------------------+
        | ``teacher_scores`` | ``(B, 1+N)`` | the teacher's raw scores (logits), same order   |
        +--------------------+--------------+-------------------------------------------------+

    References:
        - Ren et al., *RocketQAv2: A Joint Training Method for Dense Passage Retrieval and Passage
          Re-ranking*, 2021. https://arxiv.org/abs/2110.07367
        - Lin et al., *Distilling Dense Representations for Ranking using Tightly-Coupled Teachers*,
          2020. https://arxiv.org/abs/2010.11386

    Example:
        >>> import torch
        >>> loss = ListwiseKL()
        >>> student = torch.tensor([[0.0, 0.0]])  # q = [1/2, 1/2]
        >>> teacher = torch.log(torch.tensor([[3.0, 1.0]]))  # p = [3/4, 1/4]
        >>> loss(student, teacher)  # 3/4 * log((3/4) / (1/2)) + 1/4 * log((1/4) / (1/2))
        tensor(0.1308)
    """

    name: ClassVar[str] = "listwise-kl"

    temperature_teacher: float = field(
        default=1.0, metadata={"help": "divides the teacher's scores before the softmax; > 0"}
    )
    temperature_student: float = field(
        default=1.0, metadata={"help": "divides the student's scores before the softmax; > 0"}
    )
    scale_by_temperature_squared: bool = field(
        default=False, metadata={"help": "multiply the loss by temperature_student ** 2 (Hinton et al.)"}
    )

    def __post_init__(self) -> None:
        self.require_positive("temperature_teacher", "temperature_student")

    def compute(self, student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
        """``KL(softmax(t / tau_t) || softmax(s / tau_s))`` summed over documents, averaged over queries."""
        import torch
        import torch.nn.functional as F

        student_log_probs = torch.log_softmax(student_scores / self.temperature_student, dim=1)  # (B, 1+N)
        teacher_log_probs = torch.log_softmax(teacher_scores / self.temperature_teacher, dim=1)  # (B, 1+N)
        # Log-space target: a teacher probability that underflows to 0 contributes exactly 0, not NaN.
        loss = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
        if self.scale_by_temperature_squared:
            loss = loss * self.temperature_student**2
        return loss

    @property
    def citation(self) -> str:
        """BibTeX for RocketQAv2 (Ren et al., 2021) and TCT-ColBERT (Lin et al., 2020)."""
        return """
@inproceedings{ren2021rocketqav2,
    title={RocketQAv2: A Joint Training Method for Dense Passage Retrieval and Passage Re-ranking},
    author={Ruiyang Ren and Yingqi Qu and Jing Liu and Wayne Xin Zhao and Qiaoqiao She and Hua Wu
            and Haifeng Wang and Ji-Rong Wen},
    booktitle={Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing},
    year={2021},
    eprint={2110.07367},
    archivePrefix={arXiv}
}

@misc{lin2020distilling,
    title={Distilling Dense Representations for Ranking using Tightly-Coupled Teachers},
    author={Sheng-Chieh Lin and Jheng-Hong Yang and Jimmy Lin},
    year={2020},
    eprint={2010.11386},
    archivePrefix={arXiv},
    primaryClass={cs.IR}
}
"""
