"""Distillation losses: pure functions of student and teacher scores of shape ``(B, 1+N)``.

Each loss lives in its own module and registers itself in ``LOSSES`` under the name that configs
use (``margin-mse``, ``listwise-kl``, ``listnet``, ``ranknet``, ``pairwise-kl``, ``lambdaloss``);
importing this package registers them all. ``base`` holds the contract every loss follows and
``normalization`` the per-query score normalisation every loss can apply to either side.
"""

from __future__ import annotations

from retrodistill.losses.base import LOSSES, DistillationLoss
from retrodistill.losses.lambdaloss import LambdaLoss
from retrodistill.losses.listnet import ListNet
from retrodistill.losses.listwise_kl import ListwiseKL
from retrodistill.losses.margin_mse import MarginMSE
from retrodistill.losses.normalization import NORMALIZATIONS, normalize_scores
from retrodistill.losses.pairwise_kl import PairwiseKL, pairwise_probabilities
from retrodistill.losses.ranknet import RankNet

__all__ = [
    "LOSSES",
    "NORMALIZATIONS",
    "DistillationLoss",
    "LambdaLoss",
    "ListNet",
    "ListwiseKL",
    "MarginMSE",
    "PairwiseKL",
    "RankNet",
    "normalize_scores",
    "pairwise_probabilities",
]
