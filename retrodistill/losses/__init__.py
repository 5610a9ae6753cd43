"""Distillation losses: pure functions of student and teacher scores of shape ``(B, 1+N)``.

Each loss lives in its own module and registers itself in ``LOSSES`` under the name that configs
use (``margin-mse``, ``listwise-kl``); importing this package registers them all. ``base`` holds
the contract every loss follows.
"""

from __future__ import annotations

from retrodistill.losses.base import LOSSES, DistillationLoss
from retrodistill.losses.listwise_kl import ListwiseKL
from retrodistill.losses.margin_mse import MarginMSE

__all__ = ["LOSSES", "DistillationLoss", "ListwiseKL", "MarginMSE"]
