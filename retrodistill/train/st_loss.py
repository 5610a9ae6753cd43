"""The adapter that lets ``SentenceTransformerTrainer`` train a student with a pure distillation loss.

The trainer tokenizes every text column of the dataset, in column order, and passes the batch's
``label`` column as ``labels``. For distillation the columns are ``query, doc_0, …, doc_N`` and
``label`` holds the teacher's ``1 + N`` scores per row (a list of floats), so ``labels`` is a
``(B, 1+N)`` tensor. ``doc_0`` is the positive. The adapter embeds the columns, scores each document
against its query and hands the ``(B, 1+N)`` scores to the loss; it follows sentence-transformers'
own ``MarginMSELoss``: it stores the model as ``self.model`` (so the trainer can swap in its
DDP-wrapped model) and embeds the columns with the same helper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.merged_forward import embed_columns
from torch import Tensor, nn

from retrodistill.losses.base import DistillationLoss


def _dot(query: Tensor, documents: Tensor) -> Tensor:
    """``(B, D)`` queries and ``(B, 1+N, D)`` documents → ``(B, 1+N)`` dot products."""
    return torch.einsum("bd,bnd->bn", query, documents)


def _cosine(query: Tensor, documents: Tensor) -> Tensor:
    """``(B, D)`` queries and ``(B, 1+N, D)`` documents → ``(B, 1+N)`` cosine similarities."""
    return _dot(F.normalize(query, dim=-1), F.normalize(documents, dim=-1))


SIMILARITIES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"dot": _dot, "cosine": _cosine}


class StudentDistillationLoss(nn.Module):
    """Scores a bi-encoder student on ``(query, doc_0, …, doc_N)`` rows and applies a distillation loss.

    ``student_scores[b, j] = scale * sim(embed(query_b), embed(doc_j_b))``, shape ``(B, 1+N)``, and
    the returned value is ``loss(student_scores, labels)``. Scores are computed in float32 even under
    mixed precision, as sentence-transformers does, so near-equal scores do not round into ties.

    Args:
        model: The student being trained.
        loss: The pure loss, e.g. ``MarginMSE()`` or ``ListwiseKL(temperature_teacher=2.0)``.
        similarity: ``"dot"`` or ``"cosine"``.
        scale: Multiplies the similarities (e.g. 20 turns cosines into logits of a useful range).

    Raises:
        TypeError: If ``loss`` is not a ``DistillationLoss``.
        ValueError: For an unknown ``similarity`` or a ``scale`` that is not positive and finite.

    Example:
        ::

            from datasets import Dataset
            from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

            student = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
            train = Dataset.from_dict({
                "query": ["what is a cat"],
                "doc_0": ["A cat is a small feline."],
                "doc_1": ["Dogs bark."],
                "label": [[9.1, -2.3]],  # the teacher's score for doc_0, doc_1
            })
            loss = StudentDistillationLoss(student, MarginMSE())
            SentenceTransformerTrainer(model=student, train_dataset=train, loss=loss).train()
    """

    def __init__(
        self,
        model: SentenceTransformer,
        loss: DistillationLoss,
        similarity: str = "dot",
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(loss, DistillationLoss):
            raise TypeError(f"loss must be a DistillationLoss, got {type(loss).__name__}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"unknown similarity {similarity!r}; expected one of {sorted(SIMILARITIES)}")
        if not 0 < scale < math.inf:
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        self.model = model
        self.loss = loss
        self.similarity = similarity
        self.scale = scale

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        """The loss of one batch as the trainer passes it.

        Args:
            sentence_features: One tokenized batch per column: the queries, then ``doc_0 … doc_N``.
            labels: ``(B, 1+N)`` teacher scores, one per document column and in the same order.

        Returns:
            The scalar loss.

        Raises:
            ValueError: If there are fewer than two document columns, no labels, or labels whose shape is
                not ``(B, 1+N)``.
        """
        features = list(sentence_features)
        if len(features) < 3:
            raise ValueError(
                f"StudentDistillationLoss expects the columns query, doc_0, …, doc_N with N >= 1; "
                f"got {len(features)} text column(s)"
            )
        if labels is None:
            raise ValueError(
                "StudentDistillationLoss needs the teacher's scores: give the dataset a 'label' column "
                "holding one list of 1+N scores per row"
            )
        columns = len(features) - 1
        if labels.ndim != 2 or labels.shape[1] != columns:
            raise ValueError(
                f"the 'label' column must hold the teacher's 1+N = {columns} scores per row, one per "
                f"document column: expected labels of shape (B, {columns}), got {tuple(labels.shape)}"
            )
        embeddings = embed_columns(self.model, features)  # 1 + (1+N) tensors of (B, D)
        scores = self.student_scores(embeddings[0], torch.stack(embeddings[1:], dim=1))
        return self.loss(scores, labels)

    def student_scores(self, query: Tensor, documents: Tensor) -> Tensor:
        """``(B, D)`` query and ``(B, 1+N, D)`` document embeddings → ``(B, 1+N)`` scaled float32 scores."""
        return self.scale * SIMILARITIES[self.similarity](query.float(), documents.float())

    def get_config_dict(self) -> dict[str, Any]:
        """The loss's name and parameters, the similarity and the scale, for the model card."""
        return {
            "loss": self.loss.name,
            **self.loss.config(),
            "similarity": self.similarity,
            "scale": self.scale,
        }

    @property
    def citation(self) -> str:
        """The wrapped loss's citation."""
        return self.loss.citation
