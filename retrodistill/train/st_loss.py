"""The adapter that lets ``SentenceTransformerTrainer`` train a student with a pure distillation loss.

The trainer tokenizes every text column of the dataset, in column order, and passes the batch's
``label`` column as ``labels``. For distillation the text columns are ``query, doc_0, …, doc_N``
(``doc_0`` the positive); the ``corpus`` stage has one column of documents. ``label`` is one of:

============  ================================  ==================================================
layout        ``labels``                        use
============  ================================  ==================================================
none          ``None`` (no ``label`` column)    teacher-free losses (``infonce``, ``self-distill``)
scores        ``(B, 1+N)`` float                the teacher's scores of the row's documents
ids           ``(B, 2+N)`` int64 (``(B, 1)``    row numbers of the query and each document in the
              in the corpus stage)              adapter's :class:`~retrodistill.train.examples.TeacherTable`
============  ================================  ==================================================

The ids layout exists because the collator would tokenize an id column as text; the adapter looks
the teacher's scores (of any in-batch pair), embeddings and pairwise probabilities (the
``(B, 1+N, 1+N)`` ``teacher_pairwise`` of ``pairwise-kl``, read from the table's pair store with
the row's documents in column order, NaN where unscored) up in its table. The adapter embeds the
columns and computes the :class:`~retrodistill.losses.combined.LossInputs` its loss names (scores,
in-batch scores, embeddings), then applies the loss; a ``combined`` loss returns a dict of named
terms, which the trainer sums and logs one by one. Like sentence-transformers' own losses it stores
the model as ``self.model`` (so the trainer can swap in its DDP-wrapped model) and embeds the
columns with the same helper.

Under ``torch.distributed`` the in-batch documents (and their ids) of every rank are all-gathered,
the local part keeping its gradient (the collective sentence-transformers' ``all_gather_with_grad``
uses), so each query is scored against the global batch. The embedding projection lives here,
outside DDP's wrapper, so a gradient hook averages its gradients over the ranks as DDP does for the
student's. sentence-transformers itself is imported only when a batch is embedded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from retrodistill.losses.base import DistillationLoss
from retrodistill.losses.combined import (
    TEACHER_INPUTS,
    CombinedLoss,
    LossInputs,
    apply_loss,
    loss_terms,
    required_inputs,
)
from retrodistill.losses.grad_cache import cache_mini_batch_size, cached_embed_columns

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from retrodistill.train.examples import TeacherTable


def _dot(query: Tensor, documents: Tensor) -> Tensor:
    """``(B, D)`` queries and ``(B, 1+N, D)`` documents → ``(B, 1+N)`` dot products."""
    return torch.einsum("bd,bnd->bn", query, documents)


def _cosine(query: Tensor, documents: Tensor) -> Tensor:
    """``(B, D)`` queries and ``(B, 1+N, D)`` documents → ``(B, 1+N)`` cosine similarities."""
    return _dot(F.normalize(query, dim=-1), F.normalize(documents, dim=-1))


SIMILARITIES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"dot": _dot, "cosine": _cosine}

_TABLE_INPUTS = frozenset({"teacher_in_batch", "teacher_embeddings", "teacher_pairwise"})
_CORPUS_INPUTS = frozenset({"student_embeddings", "teacher_embeddings"})


def world_size() -> int:
    """The number of processes in the default group; 1 when not distributed."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group; 0 when not distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_across_ranks(tensor: Tensor, *, with_grad: bool) -> Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order; ``tensor`` itself when not distributed.

    With ``with_grad`` the local part keeps its gradient and the backward pass sums every rank's
    gradient for it (``torch.distributed.nn.all_gather``, the collective sentence-transformers'
    ``all_gather_with_grad`` calls); without, the gathered copies carry none. Every rank must pass a
    contiguous tensor of one shape (training drops an incomplete last global batch:
    ``dataloader_drop_last`` in :mod:`retrodistill.train.distributed`).
    """
    if world_size() == 1:
        return tensor
    if with_grad:
        from torch.distributed.nn import all_gather

        return torch.cat(all_gather(tensor), dim=0)
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts, dim=0)


def in_batch_scores(
    query: Tensor, documents: Tensor, similarity: str = "dot", scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Score each local query against every document of the (global) batch.

    Args:
        query: ``(B, D)`` query embeddings of this rank.
        documents: ``(B, 1+N, D)`` document embeddings of this rank; column 0 the positives.
        similarity: ``"dot"`` or ``"cosine"``.
        scale: Multiplies the similarities, as for the row scores.

    Returns:
        ``(B, M)`` float32 scores with ``M = W * B * (1+N)``, document column ``j`` of global row
        ``r`` at ``j * W * B + r`` (sentence-transformers' MNRL order), and the ``(B,)`` column of
        each query's own positive, ``rank * B + b``.
    """
    batch = query.shape[0]
    # One gather per document column, concatenated (as MNRL does): the gradients that flow back
    # into each gather are then contiguous slices, which the gloo backend's all-to-all requires.
    columns = [gather_across_ranks(documents[:, j].contiguous(), with_grad=True) for j in range(documents.shape[1])]
    pool = torch.cat(columns, dim=0).float()  # (M, D), column j of global row r at j * W * B + r
    queries = query.float()
    if similarity == "cosine":
        queries, pool = F.normalize(queries, dim=-1), F.normalize(pool, dim=-1)
    scores = scale * queries @ pool.T  # (B, M)
    positive = torch.arange(batch, device=query.device) + rank() * batch
    return scores, positive


def in_batch_rows(doc_rows: Tensor) -> Tensor:
    """``(B, 1+N)`` document row ids of this rank → ``(M,)`` ids of the batch, in :func:`in_batch_scores` order."""
    return gather_across_ranks(doc_rows.contiguous(), with_grad=False).transpose(0, 1).reshape(-1)


def average_over_ranks(grad: Tensor) -> Tensor:
    """Gradient hook: the mean of ``grad`` over the ranks, as DDP averages the student's."""
    world = world_size()
    if world == 1:
        return grad
    summed = grad.clone()
    dist.all_reduce(summed)
    return summed / world


def full_precision(tensor: Tensor) -> Any:
    """Autocast off for what follows on ``tensor``'s device: scores, temperatures and the loss in fp32.

    Under mixed precision (CPU bf16 autocast, GPU fp16/bf16) the student's score matrices would be
    computed in 16 bits: bf16 keeps 8 significant bits, which rounds the small score differences
    Margin-MSE and the KL losses learn from. The encoder keeps its mixed precision; its embeddings are
    cast to fp32 before they are scored (:mod:`retrodistill.train.precision`).
    """
    return torch.autocast(device_type=tensor.device.type, enabled=False)


class StudentDistillationLoss(nn.Module):
    """Scores a bi-encoder student on ``(query, doc_0, …, doc_N)`` rows and applies a distillation loss.

    ``student_scores[b, j] = scale * sim(embed(query_b), embed(doc_j_b))``, shape ``(B, 1+N)``, and
    the returned value is ``loss(student_scores, labels)`` for a score loss; other losses get the
    inputs they name (module docstring). Scores are computed in float32 even under mixed precision,
    as sentence-transformers does, so near-equal scores do not round into ties.

    Args:
        model: The student being trained.
        loss: A loss of :mod:`retrodistill.losses`, e.g. ``MarginMSE()``, ``InfoNCE(scale=20)`` or
            ``CombinedLoss(terms=[...])``.
        similarity: ``"dot"`` or ``"cosine"``.
        scale: Multiplies the similarities (e.g. 20 turns cosines into logits of a useful range).
        teacher: The table that ids labels address; required by losses that need the teacher's
            in-batch scores, embeddings or pairwise probabilities (its ``pairs`` store).

    Raises:
        TypeError: If ``loss`` is not a loss of :mod:`retrodistill.losses`.
        ValueError: For an unknown ``similarity``, a ``scale`` that is not positive and finite, or a
            loss that needs a teacher table (or embeddings) it was not given.

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
        loss: Any,
        similarity: str = "dot",
        scale: float = 1.0,
        *,
        teacher: TeacherTable | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(loss, DistillationLoss) and not (hasattr(loss, "inputs") and hasattr(loss, "config")):
            raise TypeError(
                f"loss must be a DistillationLoss or another loss of retrodistill.losses, got {type(loss).__name__}"
            )
        if similarity not in SIMILARITIES:
            raise ValueError(f"unknown similarity {similarity!r}; expected one of {sorted(SIMILARITIES)}")
        if not 0 < scale < math.inf:
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        self.model = model
        self.loss = loss
        self.similarity = similarity
        self.scale = scale
        self.needs = frozenset(required_inputs(loss))
        needs_table = sorted(self.needs & _TABLE_INPUTS)
        if needs_table and teacher is None:
            raise ValueError(
                f"loss {loss.name!r} needs {', '.join(needs_table)}, which come from a TeacherTable: pass "
                "teacher=build_teacher_table(...) and give the dataset id labels (Examples.to_id_columns)"
            )
        if "teacher_embeddings" in self.needs and (teacher is None or teacher.embedding_dim is None):
            raise ValueError(f"loss {loss.name!r} needs teacher embeddings, but the TeacherTable holds none")
        if "teacher_pairwise" in self.needs and (teacher is None or teacher.pairs is None):
            raise ValueError(
                f"loss {loss.name!r} needs pairwise teacher probabilities, but the TeacherTable holds no pair "
                "store: run `retrodistill score-pairwise` and build the table with build_teacher_table(pairs=...)"
            )
        self.teacher = teacher
        self.projection = self._projection() if "student_embeddings" in self.needs else None

    def _projection(self) -> nn.Linear | None:
        """The learned student → teacher map the embedding terms ask for, or ``None``."""
        terms = [t for t in loss_terms(self.loss) if "student_embeddings" in required_inputs(t)]
        modes = {getattr(t, "projection", "auto") for t in terms}
        if len(modes) != 1:
            raise ValueError(f"the embedding terms of one loss must share one projection setting, got {sorted(modes)}")
        (mode,) = modes
        assert self.teacher is not None and self.teacher.embedding_dim is not None  # checked in __init__
        teacher_dim = self.teacher.embedding_dim
        student_dim = self.model.get_embedding_dimension()
        if student_dim is None:
            raise ValueError("the student does not report its embedding dimension; embedding distillation needs it")
        if mode == "none" or (mode == "auto" and student_dim == teacher_dim):
            if student_dim != teacher_dim:
                raise ValueError(
                    f"student embeddings have {student_dim} dimensions, the teacher's {teacher_dim}: "
                    "set the embedding loss's projection to 'auto' or 'linear' to learn a map between them"
                )
            return None
        projection = nn.Linear(student_dim, teacher_dim)
        for parameter in projection.parameters():
            parameter.register_hook(average_over_ranks)
        return projection

    def forward(
        self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None
    ) -> Tensor | dict[str, Tensor]:
        """The loss of one batch as the trainer passes it.

        Args:
            sentence_features: One tokenized batch per column: the queries, then ``doc_0 … doc_N``;
                or one column of documents (the ``corpus`` stage).
            labels: ``None``, ``(B, 1+N)`` teacher scores, or ``(B, 2+N)`` int64 table rows (see
                the module docstring).

        Returns:
            The scalar loss, or for a ``combined`` loss a dict ``{"loss_<label>": weighted term}``.

        Raises:
            ValueError: If there are not 1 or at least 3 text columns, the labels do not fit the
                layout the loss needs, or the teacher lacks a score the loss needs.
        """
        features = list(sentence_features)
        if len(features) == 1:
            return self._documents_only(features[0], labels)
        if len(features) < 3:
            raise ValueError(
                f"StudentDistillationLoss expects the columns query, doc_0, …, doc_N with N >= 1; "
                f"got {len(features)} text column(s)"
            )
        from sentence_transformers.base.losses.merged_forward import embed_columns

        columns = len(features) - 1
        layout = self._label_layout(labels, columns)
        mini_batch_size = cache_mini_batch_size(self.loss)  # None unless the loss says cached: true
        if mini_batch_size is None:
            embeddings = embed_columns(self.model, features)  # 1 + (1+N) tensors of (B, D)
        else:  # GradCache: same loss and gradients, one mini-batch of activations at a time
            embeddings = cached_embed_columns(self.model, features, mini_batch_size)
        query, documents = embeddings[0], torch.stack(embeddings[1:], dim=1)  # (B, D), (B, 1+N, D)
        with full_precision(query):
            return self._evaluate(self._inputs(query.float(), documents.float(), labels, layout))

    def _label_layout(self, labels: Tensor | None, columns: int) -> str:
        name = self.loss.name
        if labels is None:
            missing = sorted(self.needs & TEACHER_INPUTS)
            if missing:
                raise ValueError(
                    f"StudentDistillationLoss needs the teacher's scores for loss {name!r} ({', '.join(missing)}): "
                    "give the dataset a 'label' column holding one list of 1+N scores per row"
                )
            return "none"
        if not labels.is_floating_point():
            if self.teacher is None:
                raise ValueError("integer labels are row ids into a TeacherTable, but the adapter was given none")
            if labels.ndim != 2 or labels.shape[1] != columns + 1:
                raise ValueError(
                    f"id labels must hold 2+N = {columns + 1} row numbers per row (the query's, then one per "
                    f"document column): expected labels of shape (B, {columns + 1}), got {tuple(labels.shape)}"
                )
            return "ids"
        if labels.ndim != 2 or labels.shape[1] != columns:
            raise ValueError(
                f"the 'label' column must hold the teacher's 1+N = {columns} scores per row, one per "
                f"document column: expected labels of shape (B, {columns}), got {tuple(labels.shape)}"
            )
        needs_table = sorted(self.needs & _TABLE_INPUTS)
        if needs_table:
            raise ValueError(
                f"loss {name!r} needs {', '.join(needs_table)}, which score labels cannot carry: build the "
                "dataset with id labels (Examples.to_id_columns) and a TeacherTable"
            )
        return "scores"

    def _inputs(self, query: Tensor, documents: Tensor, labels: Tensor | None, layout: str) -> LossInputs:
        """The :class:`LossInputs` fields the loss names, and only those."""
        needs = self.needs
        fields_: dict[str, Tensor] = {}
        if "student_scores" in needs:
            fields_["student_scores"] = self.student_scores(query, documents)
        if {"student_in_batch", "positive_index"} & needs:
            fields_["student_in_batch"], fields_["positive_index"] = in_batch_scores(
                query, documents, self.similarity, self.scale
            )
        if {"query_embeddings", "document_embeddings"} & needs:
            fields_["query_embeddings"], fields_["document_embeddings"] = query.float(), documents.float()
        if "teacher_scores" in needs:
            assert labels is not None  # layout "none" only when no teacher input is needed
            fields_["teacher_scores"] = labels if layout == "scores" else self._own_teacher_scores(labels)
        if layout == "ids":
            assert labels is not None and self.teacher is not None
            query_rows, doc_rows = labels[:, 0], labels[:, 1:]  # (B,), (B, 1+N)
            if "teacher_in_batch" in needs:
                fields_["teacher_in_batch"] = self._in_batch_teacher_scores(query_rows, doc_rows, query.device)
            if "teacher_pairwise" in needs:
                rows = labels.cpu().numpy()
                pairwise = self.teacher.pairwise(rows[:, 0], rows[:, 1:])  # (B, 1+N, 1+N), NaN = unscored
                fields_["teacher_pairwise"] = torch.from_numpy(pairwise).to(query.device)
            if "teacher_embeddings" in needs:
                student = torch.cat([query[:, None], documents], dim=1).flatten(0, 1)  # (B*(2+N), D)
                fields_["student_embeddings"] = self._project(student)
                fields_["teacher_embeddings"] = self._teacher_embeddings(labels, query.device)
        return LossInputs(**fields_)

    def _evaluate(self, inputs: LossInputs) -> Tensor | dict[str, Tensor]:
        if isinstance(self.loss, CombinedLoss):
            return self.loss.components(inputs)
        return apply_loss(self.loss, inputs)

    def _documents_only(self, features: dict[str, Tensor], labels: Tensor | None) -> Tensor | dict[str, Tensor]:
        """The ``corpus`` stage: one column of documents and ``(B, 1)`` id labels."""
        extra = sorted(self.needs - _CORPUS_INPUTS)
        if extra:
            raise ValueError(
                f"a dataset with one text column (the corpus stage) holds documents only, but loss "
                f"{self.loss.name!r} needs {', '.join(extra)}; use an embedding loss there"
            )
        if labels is None or labels.is_floating_point() or labels.ndim != 2 or labels.shape[1] != 1:
            got = None if labels is None else (tuple(labels.shape), labels.dtype)
            raise ValueError(f"the corpus stage needs id labels of shape (B, 1), one document row each; got {got}")
        from sentence_transformers.base.losses.merged_forward import embed_columns

        (embeddings,) = embed_columns(self.model, [features])  # (B, D)
        assert self.teacher is not None and self.teacher.doc_embeddings is not None  # checked in __init__
        rows = labels[:, 0].cpu().numpy()
        teacher = torch.from_numpy(self.teacher.doc_embeddings[rows]).to(embeddings.device)
        with full_precision(embeddings):
            student = self._project(embeddings.float())
            return self._evaluate(LossInputs(student_embeddings=student, teacher_embeddings=teacher))

    def _project(self, embeddings: Tensor) -> Tensor:
        return embeddings if self.projection is None else self.projection(embeddings)

    def _own_teacher_scores(self, labels: Tensor) -> Tensor:
        """``(B, 1+N)`` teacher scores of each row's own documents, looked up by id."""
        assert self.teacher is not None
        rows = labels.cpu().numpy()
        scores = self.teacher.scores(rows[:, 0], rows[:, 1:])
        self._refuse_missing(scores, rows[:, 0], rows[:, 1:], "the row's own documents")
        return torch.from_numpy(scores).to(labels.device)

    def _in_batch_teacher_scores(self, query_rows: Tensor, doc_rows: Tensor, device: torch.device) -> Tensor:
        """``(B, M)`` teacher scores of each query against every document of the (global) batch."""
        assert self.teacher is not None
        pool = in_batch_rows(doc_rows).cpu().numpy()  # (M,)
        queries = query_rows.cpu().numpy()  # (B,)
        everything = np.broadcast_to(pool, (len(queries), len(pool)))  # (B, M)
        scores = self.teacher.scores(queries, everything)
        self._refuse_missing(scores, queries, everything, "the other documents of the batch")
        return torch.from_numpy(scores).to(device)

    def _refuse_missing(self, scores: np.ndarray, queries: np.ndarray, docs: np.ndarray, what: str) -> None:
        missing = np.isnan(scores)
        if not missing.any():
            return
        assert self.teacher is not None
        rows, cols = np.nonzero(missing)
        examples = self.teacher.pair_names(queries[rows[:5]], docs[rows[:5], cols[:5]])
        raise ValueError(
            f"loss {self.loss.name!r} needs the teacher's score of each query against {what}, but the "
            f"teacher-score store has none for {int(missing.sum())} of the {missing.size} pairs of this batch "
            f"(e.g. {', '.join(f'({q}, {d})' for q, d in examples)}). Score the teacher over a candidates "
            "file that includes these pairs (every training query with every document its batches can hold, "
            "e.g. their cross product) with `retrodistill score-teacher --candidates …`, or use a loss that "
            "needs only each query's own candidates"
        )

    def _teacher_embeddings(self, labels: Tensor, device: torch.device) -> Tensor:
        """``(B*(2+N), D_t)`` teacher embeddings of each row's query and documents, in the student's order."""
        table = self.teacher
        assert table is not None and table.query_embeddings is not None and table.doc_embeddings is not None
        rows = labels.cpu().numpy()
        vectors = np.concatenate(
            [table.query_embeddings[rows[:, :1]], table.doc_embeddings[rows[:, 1:]]], axis=1
        )  # (B, 2+N, D_t)
        return torch.from_numpy(vectors.reshape(-1, vectors.shape[-1])).to(device)

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
        citation: str = self.loss.citation
        return citation
