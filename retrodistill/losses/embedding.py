"""Embedding-level distillation: the student's embeddings copy a dense teacher's stored embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from retrodistill.losses.base import LOSSES
from retrodistill.losses.combined import BatchLoss
from retrodistill.losses.normalization import normalize_scores

if TYPE_CHECKING:
    from torch import Tensor

DISTANCES = ("mse", "cosine")
PROJECTIONS = ("auto", "linear", "none")


@LOSSES.register("embedding")  # type: ignore[arg-type]  # LOSSES is typed for score losses
@dataclass(frozen=True)
class EmbeddingDistillation(BatchLoss):
    """MSE or cosine distance between student and teacher embeddings of the same texts.

    For ``K`` texts with student embeddings ``e`` (projected to the teacher's dimension ``D``, see
    below) and teacher embeddings ``f``::

        mse:     loss = 1 / (K * D) * sum_k sum_d (e[k, d] - f[k, d]) ** 2
        cosine:  loss = 1 / K * sum_k (1 - cos(e[k], f[k]))

    sentence-transformers' ``EmbedDistillLoss`` with ``distance_metric`` ``"mse"`` / ``"cosine"``
    (tested equal). The teacher's embeddings are targets (detached). In ``train-student`` the ``K``
    texts are every query and document of the batch (``B * (2 + N)``), or the batch's documents in
    the ``corpus`` stage, and the teacher's embeddings come from a precomputed store (see
    :mod:`retrodistill.train.examples`); ``mse`` fits a teacher whose vectors the student should
    reproduce exactly, ``cosine`` one whose direction alone matters (cosine similarity).

    ``projection`` says how the student reaches the teacher's dimension: ``"auto"`` learns a
    ``Linear(student_dim, teacher_dim)`` only when the dimensions differ (HPD/LEAD-style
    alignment), ``"linear"`` always, ``"none"`` never (differing dimensions are then an error). The
    training adapter owns the projection and trains it with the student; it serves only this loss,
    so the saved student is unchanged by it (``train-student`` keeps its weights beside the model
    as ``teacher_projection.safetensors``).

    ``student_normalization`` / ``teacher_normalization`` normalise each embedding along its ``D``
    dimensions before the distance (``zscore`` standardises every vector), the student's after the
    projection and differentiably.

    Inputs:
        +------------+-------------+----------------------------------------------------+
        | argument   | shape       | meaning                                            |
        +============+=============+====================================================+
        | ``student``| ``(K, D)``  | the student's (projected) embeddings, ``K >= 1``   |
        +------------+-------------+----------------------------------------------------+
        | ``teacher``| ``(K, D)``  | the teacher's embeddings of the same texts         |
        +------------+-------------+----------------------------------------------------+

    References:
        - Kim et al., *EmbedDistill: A Geometric Knowledge Distillation for Information
          Retrieval*, 2023. https://arxiv.org/abs/2301.12005
        - Sun et al., *LEAD: Liberal Feature-based Distillation for Dense Retrieval*, WSDM 2024.
          https://arxiv.org/abs/2212.05225

    Example:
        >>> import torch
        >>> EmbeddingDistillation()(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]))  # (1 + 0) / 2
        tensor(0.5000)
        >>> EmbeddingDistillation("cosine")(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]))  # 1 - 0
        tensor(1.)
    """

    name: ClassVar[str] = "embedding"
    inputs: ClassVar[tuple[str, ...]] = ("student_embeddings", "teacher_embeddings")

    distance: str = field(default="mse", metadata={"help": f"{' | '.join(DISTANCES)}"})
    projection: str = field(
        default="auto",
        metadata={"help": "student -> teacher dimension: auto (Linear if they differ) | linear | none"},
    )

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise ValueError(f"EmbeddingDistillation: distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"EmbeddingDistillation: projection must be one of {PROJECTIONS}, got {self.projection!r}")

    def __call__(self, student: Tensor, teacher: Tensor) -> Tensor:
        """The mean distance between the ``K`` pairs of embeddings.

        Raises:
            ValueError: If the shapes are not one ``(K, D)`` with ``K >= 1``, the student's are not
                floating point, or a teacher embedding holds NaN or inf.
        """
        import torch
        import torch.nn.functional as F

        got = f"got student {tuple(student.shape)} and teacher {tuple(teacher.shape)}"
        if student.ndim != 2 or student.shape != teacher.shape or student.shape[0] < 1 or student.shape[1] < 1:
            raise ValueError(f"EmbeddingDistillation expects embeddings of one shape (K, D) with K >= 1; {got}")
        if not student.is_floating_point():
            raise ValueError(f"EmbeddingDistillation expects floating-point student embeddings, got {student.dtype}")
        finite = torch.isfinite(teacher)
        if not bool(finite.all()):
            rows = sorted({int(row) for row in (~finite).nonzero()[:, 0].tolist()})
            raise ValueError(f"EmbeddingDistillation: teacher embeddings {rows[:10]} hold NaN or inf")
        dtype = torch.promote_types(student.dtype, torch.float32)
        student = normalize_scores(student.to(dtype), self.student_normalization)
        teacher = normalize_scores(teacher.detach().to(device=student.device, dtype=dtype), self.teacher_normalization)
        if self.distance == "mse":
            return F.mse_loss(student, teacher)
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()

    @property
    def citation(self) -> str:
        """BibTeX for EmbedDistill (Kim et al., 2023) and LEAD (Sun et al., 2024)."""
        return """
@misc{kim2023embeddistill,
    title={EmbedDistill: A Geometric Knowledge Distillation for Information Retrieval},
    author={Seungyeon Kim and Ankit Singh Rawat and Manzil Zaheer and Sadeep Jayasumana
            and Veeranjaneyulu Sadhanala and Wittawat Jitkrittum and Aditya Krishna Menon
            and Rob Fergus and Sanjiv Kumar},
    year={2023},
    eprint={2301.12005},
    archivePrefix={arXiv},
    primaryClass={cs.IR}
}

@inproceedings{sun2024lead,
    title={LEAD: Liberal Feature-based Distillation for Dense Retrieval},
    author={Hao Sun and Xiao Liu and Yeyun Gong and Anlei Dong and Jingwen Lu and Yan Zhang
            and Linjun Yang and Rangan Majumder and Nan Duan},
    booktitle={Proceedings of the 17th ACM International Conference on Web Search and Data Mining},
    year={2024},
    eprint={2212.05225},
    archivePrefix={arXiv}
}
"""
