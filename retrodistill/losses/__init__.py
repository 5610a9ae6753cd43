"""Distillation losses: pure functions of student and teacher scores (or embeddings) of one batch.

Each loss lives in its own module and registers itself in ``LOSSES`` under the name that configs
use: the score losses ``margin-mse``, ``listwise-kl``, ``listnet``, ``ranknet``, ``pairwise-kl``,
``lambdaloss`` (``(B, 1+N)`` student and teacher scores); the in-batch losses ``infonce`` and
``in-batch-kl``; ``embedding`` (student vs teacher embeddings); ``self-distill`` (teacher-free);
and ``combined``, a weighted sum of any of them. Importing this package registers them all.
``base`` holds the contract of the score losses, ``normalization`` the per-query score
normalisation they can apply to either side, and ``combined`` the :class:`LossInputs` from which
every loss takes the inputs it names.
"""

from __future__ import annotations

from retrodistill.losses.base import LOSSES, DistillationLoss
from retrodistill.losses.combined import CombinedLoss, LossInputs, apply_loss, loss_terms, required_inputs
from retrodistill.losses.embedding import EmbeddingDistillation
from retrodistill.losses.in_batch import InBatchKL, InfoNCE
from retrodistill.losses.lambdaloss import LambdaLoss
from retrodistill.losses.listnet import ListNet
from retrodistill.losses.listwise_kl import ListwiseKL
from retrodistill.losses.margin_mse import MarginMSE
from retrodistill.losses.normalization import NORMALIZATIONS, normalize_scores
from retrodistill.losses.pairwise_kl import PairwiseKL, pairwise_probabilities
from retrodistill.losses.ranknet import RankNet
from retrodistill.losses.self_distill import AdaptiveMarginSelfDistillation

__all__ = [
    "LOSSES",
    "NORMALIZATIONS",
    "AdaptiveMarginSelfDistillation",
    "CombinedLoss",
    "DistillationLoss",
    "EmbeddingDistillation",
    "InBatchKL",
    "InfoNCE",
    "LambdaLoss",
    "ListNet",
    "ListwiseKL",
    "LossInputs",
    "MarginMSE",
    "PairwiseKL",
    "RankNet",
    "apply_loss",
    "loss_terms",
    "normalize_scores",
    "pairwise_probabilities",
    "required_inputs",
]
