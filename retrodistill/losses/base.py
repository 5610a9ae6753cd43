"""The distillation-loss contract and the ``LOSSES`` registry.

A loss is a pure function of two score matrices of shape ``(B, 1+N)``: the student's scores and the
teacher's scores for one query and ``1 + N`` documents per row, column 0 being the positive. It
returns a scalar and knows nothing about models, so every loss is tested with hand-written tensors.
Conventions that differ between toolkits (temperatures, signed margins, …) are constructor
parameters, and ``config()`` returns them for the run manifest.

Every loss also takes ``teacher_normalization`` and ``student_normalization`` (keyword-only,
default ``"none"``): a per-query normalisation from :mod:`retrodistill.losses.normalization`
applied to each side before ``compute``. A loss whose teacher input is not a ``(B, 1+N)`` score
matrix (``pairwise-kl``) overrides ``validate`` and documents its own teacher shape.

torch is imported inside the functions that need it, so listing the plug-ins stays instant.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from retrodistill.losses.grad_cache import without_idle_cache_fields
from retrodistill.losses.normalization import NORMALIZATIONS, check_normalization, normalize_scores
from retrodistill.registry import Registry, parameters

if TYPE_CHECKING:
    from torch import Tensor

LOSSES: Registry[type[DistillationLoss]] = Registry("loss")

_NORMALIZATION_FIELDS = ("teacher_normalization", "student_normalization")
_Loss = TypeVar("_Loss", bound="DistillationLoss")


@dataclass(frozen=True)
class DistillationLoss(ABC):
    """Base class of the losses that compare student scores with teacher scores.

    Subclasses are frozen dataclasses whose fields are the loss's conventions; they set ``name`` to
    their registry name, implement ``compute`` and ``citation``, and leave input checking to
    ``__call__``. They inherit two keyword-only fields, ``teacher_normalization`` and
    ``student_normalization``, which ``config()`` reports with the subclass's own fields; an unknown
    normalisation name raises ``ValueError`` when the loss is constructed.

    Calling a loss validates the inputs, detaches the teacher scores (they are targets, never
    trained), moves them to the student's device, computes in at least float32 (so half-precision
    student scores do not round the teacher's targets), then normalises each side per query with its
    method (the student's differentiably) and hands both to ``compute``.
    """

    name: ClassVar[str] = ""

    teacher_normalization: str = field(
        default="none",
        kw_only=True,
        metadata={"help": f"per-query normalisation of the teacher's scores: {' | '.join(NORMALIZATIONS)}"},
    )
    student_normalization: str = field(
        default="none",
        kw_only=True,
        metadata={"help": f"per-query normalisation of the student's scores: {' | '.join(NORMALIZATIONS)}"},
    )

    def __new__(cls: type[_Loss], *args: Any, **kwargs: Any) -> _Loss:
        # Checked here rather than in __post_init__ so that a subclass's own __post_init__ need not
        # call super(); the fields are keyword-only, so any non-default value arrives in kwargs.
        for label in _NORMALIZATION_FIELDS:
            check_normalization(
                kwargs.get(label, "none"), f"{cls.__name__}: {label}", differentiable=label == "student_normalization"
            )
        return super().__new__(cls)

    def __call__(self, student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
        """The loss of one batch.

        Args:
            student_scores: ``(B, 1+N)`` student scores; column 0 is the positive document.
            teacher_scores: ``(B, 1+N)`` teacher scores for the same documents, in the same order.

        Returns:
            A scalar tensor, differentiable with respect to ``student_scores``.

        Raises:
            ValueError: If the shapes differ from ``(B, 1+N)`` with ``B >= 1`` and ``1+N >= 2``, or if a
                teacher score is NaN or infinite.
        """
        import torch

        self.validate(student_scores, teacher_scores)
        dtype = torch.promote_types(student_scores.dtype, torch.float32)
        student = normalize_scores(student_scores.to(dtype), self.student_normalization)
        teacher = teacher_scores.detach().to(device=student_scores.device, dtype=dtype)
        teacher = normalize_scores(teacher, self.teacher_normalization)
        return self.compute(student, teacher)

    def validate(self, student_scores: Tensor, teacher_scores: Tensor) -> None:
        """Check that both score matrices have the contract's shape and the teacher's are finite.

        Args:
            student_scores: The student's scores, expected ``(B, 1+N)``.
            teacher_scores: The teacher's scores, expected the same shape.

        Raises:
            ValueError: Naming the expected and the received shapes, or the non-finite teacher scores.
        """
        import torch

        student_shape, teacher_shape = tuple(student_scores.shape), tuple(teacher_scores.shape)
        got = f"got student scores {student_shape} and teacher scores {teacher_shape}"
        if student_scores.ndim != 2 or teacher_scores.ndim != 2:
            raise ValueError(f"{type(self).__name__} expects 2-D scores of shape (B, 1+N); {got}")
        if student_shape != teacher_shape:
            raise ValueError(f"{type(self).__name__} expects student and teacher scores of one shape; {got}")
        batch_size, columns = student_shape
        if batch_size < 1 or columns < 2:
            raise ValueError(
                f"{type(self).__name__} expects scores of shape (B, 1+N) with B >= 1 and at least 2 columns "
                f"(the positive and one negative); {got}"
            )
        if not student_scores.is_floating_point():
            raise ValueError(f"{type(self).__name__} expects floating-point student scores, got {student_scores.dtype}")
        finite = torch.isfinite(teacher_scores)
        if not bool(finite.all()):
            rows = sorted({int(row) for row in (~finite).nonzero()[:, 0].tolist()})
            raise ValueError(
                f"{type(self).__name__}: teacher scores must be finite, but rows {rows[:10]} hold NaN or inf"
            )

    def require_positive(self, *names: str) -> None:
        """Raise ``ValueError`` unless each named parameter is a positive finite number (temperatures, scales)."""
        for name in names:
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive finite number, got {value}")

    @abstractmethod
    def compute(self, student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
        """The loss on validated, normalised ``(B, 1+N)`` scores of one floating dtype and device.

        Args:
            student_scores: ``(B, 1+N)`` student scores, after ``student_normalization``.
            teacher_scores: ``(B, 1+N)`` detached teacher scores, after ``teacher_normalization``.

        Returns:
            A scalar tensor.
        """

    @property
    @abstractmethod
    def citation(self) -> str:
        """A BibTeX entry for the paper that introduced the loss."""

    def config(self) -> dict[str, Any]:
        """The loss's parameters and their values, for the run manifest (``cached`` ones only when on)."""
        values = {parameter.name: getattr(self, parameter.name) for parameter in parameters(type(self))}
        return without_idle_cache_fields(self, values)
