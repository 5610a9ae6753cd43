"""Teacher-free self-distillation with adaptive relevance margins (Gienapp et al., ICTIR 2025)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from retrodistill.losses.base import LOSSES
from retrodistill.losses.combined import BatchLoss
from retrodistill.losses.normalization import normalize_scores

if TYPE_CHECKING:
    from torch import Tensor

TARGETS = ("adaptive", "distributed")
ERRORS = ("l1", "l2", "soft")


@LOSSES.register("self-distill")  # type: ignore[arg-type]  # LOSSES is typed for score losses
@dataclass(frozen=True)
class AdaptiveMarginSelfDistillation(BatchLoss):
    """The student's positive-negative margin regressed onto a target it computes itself.

    With cosine similarity ``c`` on the student's own embeddings (whatever its training
    similarity), for query ``q_b``, positive ``d+_b`` (column 0) and negatives ``d-_{b,n}``::

        margin[b, n] = c(q_b, d+_b) - c(q_b, d-_{b,n})                 # (B, N)
        loss = mean(error(margin - target))

    with the ``target``:

    ``"adaptive"``     ``target[b, n] = c(d+_b, d-_{b,n}) / 2 + 1/2``: the positive's similarity to
                       the negative, mapped to [0, 1], replaces a teacher's margin: a negative the
                       model finds close to the positive must be pushed further away (implicit hard
                       negative mining).
    ``"distributed"``  every query's margin is regressed onto the adaptive targets of all ``B``
                       positives of the batch: ``mean over i, b, n of error(margin[b, n] -
                       (c(d+_i, d-_{b,n}) / 2 + 1/2))``.
    a number ``m``     a static margin, ``target = m`` (the paper's fixed-margin baseline).

    and ``error`` ``"l2"`` (``x ** 2``), ``"l1"`` (``|x|``) or ``"soft"`` (``log(1 + exp(-x))``).
    With ``in_batch`` every query also takes every other row's negatives (``B * N`` per query):
    ``margin[b, k] = c(q_b, d+_b) - c(q_b, d-_k)``, ``target[b, k] = c(d+_b, d-_k) / 2 + 1/2``
    (``"adaptive"`` or static; ``"distributed"`` is refused, as in the reference code). In-batch
    negatives are the local batch's, never gathered across devices.

    This follows the authors' implementation (github.com/webis-de/adaptive-relevance-margin-loss,
    ``src/loss.py``), generalised from one negative to ``N``: targets are not detached (gradients
    flow through them, as there; ``detach_target`` stops them). One deliberate difference: for
    ``in_batch`` that code computes ``pos.diag() - neg``, which broadcasts to
    ``c(q_k, d+_k) - c(q_b, d-_k)``; we use each query's own positive, ``c(q_b, d+_b)``.

    Inputs:
        +-------------------------+----------------+-------------------------------------------+
        | argument                | shape          | meaning                                   |
        +=========================+================+===========================================+
        | ``query_embeddings``    | ``(B, D)``     | the student's query embeddings            |
        +-------------------------+----------------+-------------------------------------------+
        | ``document_embeddings`` | ``(B, 1+N, D)``| the student's document embeddings; column |
        |                         |                | 0 is the positive, ``N >= 1``             |
        +-------------------------+----------------+-------------------------------------------+

    References:
        Gienapp, Deckers, Potthast and Scells, *Learning Effective Representations for Retrieval
        Using Self-Distillation with Adaptive Relevance Margins*, ICTIR 2025.
        https://arxiv.org/abs/2407.21515

    Example:
        >>> import torch
        >>> query = torch.tensor([[1.0, 0.0]])
        >>> documents = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # c(q, d+) = 1, c(q, d-) = 0, c(d+, d-) = 0
        >>> AdaptiveMarginSelfDistillation()(query, documents)  # (1 - 0 - (0 / 2 + 1 / 2)) ** 2
        tensor(0.2500)
    """

    name: ClassVar[str] = "self-distill"
    inputs: ClassVar[tuple[str, ...]] = ("query_embeddings", "document_embeddings")

    target: str | float = field(
        default="adaptive", metadata={"help": "adaptive | distributed | a number (static margin)"}
    )
    in_batch: bool = field(default=False, metadata={"help": "also use every other row's negatives"})
    error: str = field(default="l2", metadata={"help": "l2 | l1 | soft (log(1 + exp(-x)))"})
    detach_target: bool = field(default=False, metadata={"help": "stop gradients through the target margins"})

    def __post_init__(self) -> None:
        where = "AdaptiveMarginSelfDistillation"
        if isinstance(self.target, bool) or not isinstance(self.target, (str, int, float)):
            raise ValueError(f"{where}: target must be 'adaptive', 'distributed' or a number, got {self.target!r}")
        if isinstance(self.target, str) and self.target not in TARGETS:
            raise ValueError(f"{where}: target must be 'adaptive', 'distributed' or a number, got {self.target!r}")
        if not isinstance(self.target, str) and not math.isfinite(self.target):
            raise ValueError(f"{where}: a static target must be finite, got {self.target}")
        if self.error not in ERRORS:
            raise ValueError(f"{where}: error must be one of {ERRORS}, got {self.error!r}")
        if self.in_batch and self.target == "distributed":
            raise ValueError(f"{where}: distributed targets cannot be combined with in_batch (as in the paper's code)")

    def __call__(self, query_embeddings: Tensor, document_embeddings: Tensor) -> Tensor:
        """The mean error between margins and targets.

        Raises:
            ValueError: If the shapes are not ``(B, D)`` and ``(B, 1+N, D)`` with ``B >= 1``,
                ``N >= 1``, or the embeddings are not floating point.
        """
        import torch
        import torch.nn.functional as F

        got = f"got query {tuple(query_embeddings.shape)} and documents {tuple(document_embeddings.shape)}"
        if (
            query_embeddings.ndim != 2
            or document_embeddings.ndim != 3
            or query_embeddings.shape[0] < 1
            or document_embeddings.shape[0] != query_embeddings.shape[0]
            or document_embeddings.shape[1] < 2
            or document_embeddings.shape[2] != query_embeddings.shape[1]
        ):
            raise ValueError(
                f"AdaptiveMarginSelfDistillation expects query embeddings (B, D) and document embeddings "
                f"(B, 1+N, D) with B >= 1 and N >= 1; {got}"
            )
        if not (query_embeddings.is_floating_point() and document_embeddings.is_floating_point()):
            raise ValueError("AdaptiveMarginSelfDistillation expects floating-point embeddings")
        dtype = torch.promote_types(query_embeddings.dtype, torch.float32)
        query = F.normalize(query_embeddings.to(dtype), dim=-1)  # (B, D)
        documents = F.normalize(document_embeddings.to(dtype), dim=-1)  # (B, 1+N, D)
        positives, negatives = documents[:, 0], documents[:, 1:]  # (B, D), (B, N, D)
        positive_scores = (query * positives).sum(-1)  # (B,)

        if self.in_batch:
            pool = negatives.reshape(-1, negatives.shape[-1])  # (B*N, D), every row's negatives
            negative_scores = query @ pool.T  # (B, B*N)
            adaptive = (positives @ pool.T) / 2 + 0.5  # (B, B*N)
        else:
            negative_scores = torch.einsum("bd,bnd->bn", query, negatives)  # (B, N)
        row = normalize_scores(
            torch.cat([positive_scores[:, None], negative_scores], dim=1), self.student_normalization
        )
        margin = row[:, :1] - row[:, 1:]  # (B, N) or (B, B*N)
        if not self.in_batch:
            if self.target == "distributed":
                # target[i, b, n] = c(d+_i, d-_{b,n}): every positive of the batch against row b's negatives
                adaptive = torch.einsum("id,bnd->ibn", positives, negatives) / 2 + 0.5  # (B, B, N)
                margin = margin[None]  # (1, B, N), broadcast over i
            else:
                adaptive = torch.einsum("bd,bnd->bn", positives, negatives) / 2 + 0.5  # (B, N)

        target = adaptive if isinstance(self.target, str) else torch.full_like(margin, float(self.target))
        if self.detach_target:
            target = target.detach()
        residual = margin - target
        if self.error == "l2":
            return residual.square().mean()
        if self.error == "l1":
            return residual.abs().mean()
        return F.softplus(-residual).mean()  # log(1 + exp(-x)), computed stably

    @property
    def citation(self) -> str:
        """BibTeX for Gienapp et al. (ICTIR 2025)."""
        return """
@inproceedings{gienapp2025learning,
    title={Learning Effective Representations for Retrieval Using Self-Distillation with Adaptive
           Relevance Margins},
    author={Lukas Gienapp and Niklas Deckers and Martin Potthast and Harrisen Scells},
    booktitle={Proceedings of the 2025 International ACM SIGIR Conference on Innovative Concepts and
               Theories in Information Retrieval (ICTIR)},
    pages={275--285},
    year={2025},
    doi={10.1145/3731120.3744594},
    eprint={2407.21515},
    archivePrefix={arXiv}
}
"""
