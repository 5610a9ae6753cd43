"""In-batch objectives: every query is scored against every document of the batch.

For a batch of ``B`` rows ``(query_b, doc_0 … doc_N)`` the training adapter scores each query
against all ``M = W * B * (1+N)`` documents of the batch (``W`` processes under DDP, whose
documents are all-gathered; ``W = 1`` otherwise). Columns are ordered as in sentence-transformers'
``MultipleNegativesRankingLoss``: document column ``j`` of global row ``r`` sits at
``j * W * B + r``, so query ``b`` of rank ``k`` finds its own positive at ``k * B + b``.

* ``infonce``: cross-entropy of the scaled scores against each query's own positive, with its own
  hard negatives and every other document of the batch as negatives (no teacher).
* ``in-batch-kl``: TCT-style distillation: ``listwise-kl`` over the ``M`` in-batch documents, which
  needs the teacher's score of every query against every document of its batch.

Both take ``cached: true`` and ``mini_batch_size``: the batch is then embedded with GradCache
(:mod:`retrodistill.losses.grad_cache`), one mini-batch of activations at a time, for the same loss
and gradients, so that a batch of hundreds of queries times ``1+N`` documents fits one GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from retrodistill.losses.base import LOSSES
from retrodistill.losses.combined import BatchLoss
from retrodistill.losses.grad_cache import cached_field, check_cache_options, mini_batch_size_field
from retrodistill.losses.listwise_kl import ListwiseKL
from retrodistill.losses.normalization import normalize_scores

if TYPE_CHECKING:
    from torch import Tensor


@LOSSES.register("infonce")  # type: ignore[arg-type]  # LOSSES is typed for score losses
@dataclass(frozen=True)
class InfoNCE(BatchLoss):
    """Cross-entropy of each query's in-batch softmax against its own positive.

    For ``B`` queries scored against the ``M`` documents of the batch::

        loss = -1 / B * sum_b log softmax(scale * s[b, :])[p_b]
             = 1 / B * sum_b (logsumexp_m(scale * s[b, m]) - scale * s[b, p_b])

    where ``s`` are the student's scores and ``p_b`` the column of query ``b``'s positive. The
    student's scores are already ``student.scale * sim``; ``scale`` multiplies them once more, so with
    a cosine student at ``student.scale: 1`` this is sentence-transformers'
    ``MultipleNegativesRankingLoss(scale=scale)`` (tested equal), whose default is 20
    (temperature 0.05). Documents that duplicate a query's positive count as negatives, as in MNRL;
    ``train-student`` therefore batches in-batch losses with sentence-transformers'
    ``NO_DUPLICATES`` sampler. ``student_normalization`` normalises each query's row of ``M`` scores
    before the scaling; there is no teacher side.

    Inputs:
        +----------------------+------------------+------------------------------------------------+
        | argument             | shape            | meaning                                        |
        +======================+==================+================================================+
        | ``scores``           | ``(B, M)``       | the student's scores of each query against all |
        |                      |                  | ``M >= 2`` documents of the batch              |
        +----------------------+------------------+------------------------------------------------+
        | ``positive_index``   | ``(B,)`` integer | the column of each query's own positive        |
        +----------------------+------------------+------------------------------------------------+

    References:
        - van den Oord et al., *Representation Learning with Contrastive Predictive Coding*, 2018.
          https://arxiv.org/abs/1807.03748
        - Karpukhin et al., *Dense Passage Retrieval for Open-Domain Question Answering*, EMNLP
          2020 (in-batch negatives for retrieval). https://arxiv.org/abs/2004.04906

    Example:
        >>> import torch
        >>> loss = InfoNCE(scale=1.0)
        >>> loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))  # log(e^2 + 2) - 2
        tensor(0.2395)
    """

    name: ClassVar[str] = "infonce"
    inputs: ClassVar[tuple[str, ...]] = ("student_in_batch", "positive_index")

    scale: float = field(
        default=20.0, metadata={"help": "multiplies the student's scores before the softmax (1 / temperature); > 0"}
    )
    cached: bool = cached_field()
    mini_batch_size: int = mini_batch_size_field()

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not 0 < self.scale < math.inf:
            raise ValueError(f"InfoNCE: scale must be a positive finite number, got {self.scale}")
        check_cache_options("InfoNCE", self.cached, self.mini_batch_size)

    def __call__(self, scores: Tensor, positive_index: Tensor) -> Tensor:
        """The mean over the ``B`` queries of the cross-entropy against their positives.

        Raises:
            ValueError: If ``scores`` is not ``(B, M)`` floating point with ``B >= 1`` and ``M >= 2``,
                or ``positive_index`` is not ``B`` integers in ``[0, M)``.
        """
        import torch
        import torch.nn.functional as F

        shapes = f"got scores {tuple(scores.shape)} and positive_index {tuple(positive_index.shape)}"
        if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 2:
            raise ValueError(f"InfoNCE expects scores of shape (B, M) with B >= 1 and M >= 2; {shapes}")
        if not scores.is_floating_point():
            raise ValueError(f"InfoNCE expects floating-point scores, got {scores.dtype}")
        if positive_index.shape != scores.shape[:1] or positive_index.is_floating_point():
            raise ValueError(f"InfoNCE expects positive_index of B integers, shape ({scores.shape[0]},); {shapes}")
        if bool(((positive_index < 0) | (positive_index >= scores.shape[1])).any()):
            raise ValueError(
                f"InfoNCE: positive_index must lie in [0, {scores.shape[1]}), got {positive_index.tolist()[:10]}"
            )
        student = scores.to(torch.promote_types(scores.dtype, torch.float32))
        logits = self.scale * normalize_scores(student, self.student_normalization)  # (B, M)
        return F.cross_entropy(logits, positive_index.to(device=scores.device, dtype=torch.long))

    @property
    def citation(self) -> str:
        """BibTeX for van den Oord et al. (2018) and DPR (Karpukhin et al., 2020)."""
        return """
@misc{oord2018representation,
    title={Representation Learning with Contrastive Predictive Coding},
    author={Aaron van den Oord and Yazhe Li and Oriol Vinyals},
    year={2018},
    eprint={1807.03748},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}

@inproceedings{karpukhin2020dense,
    title={Dense Passage Retrieval for Open-Domain Question Answering},
    author={Vladimir Karpukhin and Barlas Oguz and Sewon Min and Patrick Lewis and Ledell Wu
            and Sergey Edunov and Danqi Chen and Wen-tau Yih},
    booktitle={Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing},
    year={2020},
    eprint={2004.04906},
    archivePrefix={arXiv}
}
"""


@LOSSES.register("in-batch-kl")
@dataclass(frozen=True)
class InBatchKL(ListwiseKL):
    """TCT in-batch distillation: ``listwise-kl`` over all ``M`` documents of the batch.

    For ``B`` queries, each scored by student and teacher against the ``M`` documents of the batch
    (its own ``1 + N`` and every other row's)::

        p = softmax(t / temperature_teacher)          # (B, M), the target
        q = softmax(s / temperature_student)          # (B, M)
        loss = 1 / B * sum_b KL(p[b] || q[b])         # times temperature_student ** 2 if asked

    exactly :class:`~retrodistill.losses.listwise_kl.ListwiseKL` on ``(B, M)`` matrices, with its
    parameters, normalisations and checks. The teacher must have scored every query against every
    document of its batch. ``train-student`` looks those pairs up in the teacher-score store and
    stops with a ``ValueError`` naming the missing pairs when the store lacks them: score the teacher
    over a candidates file holding every (training query, training document) pair the batches can
    combine. Combine with ``infonce`` (the hard-label term of TCT's objective) through ``combined``.

    Inputs:
        +--------------------+------------+---------------------------------------------------+
        | argument           | shape      | meaning                                           |
        +====================+============+===================================================+
        | ``student_scores`` | ``(B, M)`` | the student's scores against every batch document |
        +--------------------+------------+---------------------------------------------------+
        | ``teacher_scores`` | ``(B, M)`` | the teacher's raw scores for the same pairs       |
        +--------------------+------------+---------------------------------------------------+

    References:
        Lin et al., *In-Batch Negatives for Knowledge Distillation with Tightly-Coupled Teachers for
        Dense Retrieval*, RepL4NLP 2021. https://aclanthology.org/2021.repl4nlp-1.17

    Example:
        >>> import torch
        >>> loss = InBatchKL()
        >>> student = torch.tensor([[0.0, 0.0, 0.0, 0.0]])  # q = 1/4 each
        >>> teacher = torch.log(torch.tensor([[1.0, 1.0, 1.0, 1.0]]))  # p = 1/4 each
        >>> loss(student, teacher)  # KL(p || q) = 0
        tensor(0.)
    """

    name: ClassVar[str] = "in-batch-kl"
    inputs: ClassVar[tuple[str, ...]] = ("student_in_batch", "teacher_in_batch")

    cached: bool = cached_field()
    mini_batch_size: int = mini_batch_size_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_cache_options("InBatchKL", self.cached, self.mini_batch_size)

    @property
    def citation(self) -> str:
        """BibTeX for TCT in-batch distillation (Lin et al., 2021)."""
        return """
@inproceedings{lin2021batch,
    title={In-Batch Negatives for Knowledge Distillation with Tightly-Coupled Teachers for Dense Retrieval},
    author={Sheng-Chieh Lin and Jheng-Hong Yang and Jimmy Lin},
    booktitle={Proceedings of the 6th Workshop on Representation Learning for NLP (RepL4NLP-2021)},
    pages={163--173},
    year={2021},
    url={https://aclanthology.org/2021.repl4nlp-1.17}
}
"""
