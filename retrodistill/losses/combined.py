"""What a loss can be given for one batch, and the weighted sum of several losses.

The score losses (``margin-mse``, ``listwise-kl``, …) take the ``(B, 1+N)`` student and teacher
scores. The other objectives need other views of the same batch: InfoNCE the student's scores
against every document of the batch, embedding distillation the student's and the teacher's
embeddings, self-distillation the student's embeddings alone. :class:`LossInputs` holds every
view; a loss names the fields it takes, in call order, in its ``inputs`` class attribute, and
:func:`apply_loss` calls it with them. A loss without ``inputs`` (every
:class:`~retrodistill.losses.base.DistillationLoss`) takes ``("student_scores", "teacher_scores")``.
The training adapter (:mod:`retrodistill.train.st_loss`) computes only the fields its loss names.
:class:`BatchLoss` is the base of the losses that take other inputs than the score pair.

=========================  ===================  ===================================================
field                      shape                meaning
=========================  ===================  ===================================================
``student_scores``         ``(B, 1+N)``         student ``scale * sim(query_b, doc_j of row b)``
``teacher_scores``         ``(B, 1+N)``         the teacher's raw scores for the same documents
``student_in_batch``       ``(B, M)``           student scores of each query against all ``M``
                                                documents of the batch (every rank's, under DDP)
``teacher_in_batch``       ``(B, M)``           the teacher's scores for the same ``B x M`` pairs
``positive_index``         ``(B,)`` int64       the column of each query's own positive in ``M``
``query_embeddings``       ``(B, D)``           the student's query embeddings
``document_embeddings``    ``(B, 1+N, D)``      the student's document embeddings
``student_embeddings``     ``(K, D_t)``         the student's embeddings of the batch's ``K`` texts,
                                                projected to the teacher's dimension if needed
``teacher_embeddings``     ``(K, D_t)``         the teacher's embeddings of the same texts
``teacher_pairwise``       ``(B, 1+N, 1+N)``    a pairwise teacher's ``P(doc i more relevant than
                                                doc j)`` for row ``b``'s documents; NaN = unscored
=========================  ===================  ===================================================

:class:`CombinedLoss` (``combined``) is a weighted sum of any registered losses. The trainer logs
each weighted term under ``loss_<label>`` beside the total ``loss``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from retrodistill.losses.base import LOSSES
from retrodistill.losses.grad_cache import (
    CACHE_FIELDS,
    cached_field,
    check_cache_options,
    mini_batch_size_field,
    without_idle_cache_fields,
)
from retrodistill.losses.normalization import NORMALIZATIONS, check_normalization
from retrodistill.registry import parameters

if TYPE_CHECKING:
    from torch import Tensor

SCORE_INPUTS: tuple[str, ...] = ("student_scores", "teacher_scores")
"""The inputs of a loss that does not declare its own: the ``DistillationLoss`` contract."""

TEACHER_INPUTS = frozenset({"teacher_scores", "teacher_in_batch", "teacher_embeddings", "teacher_pairwise"})
"""The inputs that come from a teacher; a loss needing none of them is teacher-free."""


@dataclass(frozen=True)
class LossInputs:
    """The views of one batch a loss can ask for (see the module docstring); ``None`` = not computed."""

    student_scores: Tensor | None = None
    teacher_scores: Tensor | None = None
    student_in_batch: Tensor | None = None
    teacher_in_batch: Tensor | None = None
    positive_index: Tensor | None = None
    query_embeddings: Tensor | None = None
    document_embeddings: Tensor | None = None
    student_embeddings: Tensor | None = None
    teacher_embeddings: Tensor | None = None
    teacher_pairwise: Tensor | None = None


INPUT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(LossInputs))

_NORMALIZATION_FIELDS = ("teacher_normalization", "student_normalization")
_Loss = TypeVar("_Loss", bound="BatchLoss")


@dataclass(frozen=True)
class BatchLoss(ABC):
    """Base of the losses whose inputs are not the ``(B, 1+N)`` score pair (``infonce``, ``embedding``, …).

    Subclasses are frozen dataclasses that set ``name`` and ``inputs`` (the :class:`LossInputs`
    fields their ``__call__`` takes, in order) and implement ``__call__`` and ``citation``. Like
    :class:`~retrodistill.losses.base.DistillationLoss` they take the keyword-only
    ``teacher_normalization`` and ``student_normalization`` (each subclass documents what it
    normalises); a loss with no teacher input accepts only ``teacher_normalization="none"``.
    ``config()`` reports every parameter.
    """

    name: ClassVar[str] = ""

    teacher_normalization: str = field(
        default="none",
        kw_only=True,
        metadata={"help": f"per-row normalisation of the teacher's side: {' | '.join(NORMALIZATIONS)}"},
    )
    student_normalization: str = field(
        default="none",
        kw_only=True,
        metadata={"help": f"per-row normalisation of the student's side: {' | '.join(NORMALIZATIONS)}"},
    )

    def __new__(cls: type[_Loss], *args: Any, **kwargs: Any) -> _Loss:
        # As in DistillationLoss: checked before any subclass __post_init__, whatever it does.
        for label in _NORMALIZATION_FIELDS:
            check_normalization(
                kwargs.get(label, "none"), f"{cls.__name__}: {label}", differentiable=label == "student_normalization"
            )
        declared = getattr(cls, "inputs", None)  # a property (combined): decided per term
        teacher = kwargs.get("teacher_normalization", "none")
        if isinstance(declared, tuple) and not set(declared) & TEACHER_INPUTS and teacher != "none":
            raise ValueError(
                f"{cls.__name__}: teacher_normalization must be 'none' (no teacher input), got {teacher!r}"
            )
        return super().__new__(cls)

    @property
    @abstractmethod
    def citation(self) -> str:
        """A BibTeX entry for the paper that introduced the loss."""

    def config(self) -> dict[str, Any]:
        """The loss's parameters and their values, for the run manifest (``cached`` ones only when on)."""
        values = {parameter.name: getattr(self, parameter.name) for parameter in parameters(type(self))}
        return without_idle_cache_fields(self, values)


def required_inputs(loss: Any) -> tuple[str, ...]:
    """The :class:`LossInputs` fields ``loss`` takes, in call order.

    Raises:
        ValueError: If the loss names a field :class:`LossInputs` does not have.
    """
    names = tuple(getattr(loss, "inputs", SCORE_INPUTS))
    unknown = [name for name in names if name not in INPUT_NAMES]
    if unknown:
        raise ValueError(f"{type(loss).__name__} asks for unknown input(s) {unknown}; known: {', '.join(INPUT_NAMES)}")
    return names


def loss_terms(loss: Any) -> list[Any]:
    """The losses inside ``loss``: its terms for a :class:`CombinedLoss`, else ``[loss]``."""
    return [term.loss for term in loss.terms_built] if isinstance(loss, CombinedLoss) else [loss]


def apply_loss(loss: Any, inputs: LossInputs) -> Tensor:
    """Call ``loss`` with the fields of ``inputs`` it names in ``inputs``.

    Raises:
        ValueError: Naming the loss and the field when a field it needs was not computed.
    """
    if isinstance(loss, CombinedLoss):
        raise ValueError("apply_loss takes one loss; call CombinedLoss.components for a combined loss")
    arguments = []
    for name in required_inputs(loss):
        value = getattr(inputs, name)
        if value is None:
            raise ValueError(
                f"loss {getattr(loss, 'name', type(loss).__name__)!r} needs {name!r}, which was not computed"
            )
        arguments.append(value)
    result: Tensor = loss(*arguments)
    return result


@dataclass(frozen=True)
class WeightedTerm:
    """One term of a :class:`CombinedLoss`: its log label, weight and built loss."""

    label: str
    weight: float
    loss: Any


_TERM_KEYS = ("name", "weight", "params", "label")


@LOSSES.register("combined")  # type: ignore[arg-type]  # LOSSES is typed for score losses
@dataclass(frozen=True)
class CombinedLoss(BatchLoss):
    """A weighted sum of registered losses, each term logged separately.

    ::

        loss = sum_k weight_k * loss_k(inputs)

    ``terms`` is a list of mappings ``{name, weight, params, label}``: ``name`` a registered loss,
    ``weight`` a finite number >= 0 (default 1; a weight of 0 logs a term without training on it),
    ``params`` its parameters (default none), ``label`` the name it is logged under (default its
    ``name``; labels must be unique, so two terms of one loss need labels). In YAML::

        loss:
          name: combined
          params:
            terms:
              - {name: margin-mse, weight: 1.0}
              - {name: infonce, weight: 0.1, params: {scale: 20}}

    Training returns :meth:`components`, a dict ``{"loss_<label>": weight * value}``, which
    sentence-transformers' trainer sums into the loss and logs term by term (``train_log.json``
    holds ``loss_margin-mse``, ``loss_infonce``, … beside ``loss``). The logged values are the
    weighted terms, so they add up to ``loss``. ``config()`` lists every term's full parameters.

    ``student_normalization`` and ``teacher_normalization`` set here are defaults for the terms:
    a term that does not set its own takes them (``teacher_normalization`` only terms with a teacher
    input). Without ``terms`` the loss is ``margin-mse`` alone.

    ``cached: true`` embeds the whole batch with GradCache in mini-batches of ``mini_batch_size``
    rows (:mod:`retrodistill.losses.grad_cache`): every term, in-batch ones included, gets the same
    value and gradients in the memory of one mini-batch. The terms share the batch's embeddings, so
    they cannot set ``cached`` themselves.

    Inputs:
        +------------+--------------------------------------------------------------------+
        | argument   | meaning                                                            |
        +============+====================================================================+
        | ``inputs`` | a :class:`LossInputs` holding every field any term names           |
        +------------+--------------------------------------------------------------------+

    Example:
        >>> import torch
        >>> loss = CombinedLoss(terms=[{"name": "margin-mse"}, {"name": "listnet", "weight": 0.5}])
        >>> loss.inputs
        ('student_scores', 'teacher_scores')
        >>> batch = LossInputs(student_scores=torch.tensor([[2.0, 1.0]]), teacher_scores=torch.tensor([[3.0, 0.5]]))
        >>> {k: round(v.item(), 4) for k, v in loss.components(batch).items()}  # ((2-1) - (3-0.5))**2; 0.5 * 0.3891
        {'loss_margin-mse': 2.25, 'loss_listnet': 0.1946}
    """

    name: ClassVar[str] = "combined"

    terms: list[dict[str, Any]] = field(
        default_factory=lambda: [{"name": "margin-mse", "weight": 1.0}],
        metadata={"help": "list of {name, weight, params, label}: the losses to add up, each logged as loss_<label>"},
    )
    cached: bool = cached_field()
    mini_batch_size: int = mini_batch_size_field()
    terms_built: tuple[WeightedTerm, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_cache_options("CombinedLoss", self.cached, self.mini_batch_size)
        if not isinstance(self.terms, list) or not self.terms:
            raise ValueError("CombinedLoss: terms must be a non-empty list of {name, weight, params, label}")
        built: list[WeightedTerm] = []
        for index, term in enumerate(self.terms):
            where = f"CombinedLoss: terms[{index}]"
            if not isinstance(term, dict):
                raise ValueError(f"{where} must be a mapping with keys {', '.join(_TERM_KEYS)}, got {term!r}")
            unknown = sorted(set(term) - set(_TERM_KEYS))
            if unknown:
                raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_TERM_KEYS)}")
            name = term.get("name")
            if not isinstance(name, str):
                raise ValueError(f"{where} needs the 'name' of a registered loss")
            if name == self.name:
                raise ValueError(f"{where}: a combined loss cannot contain another combined loss")
            weight = term.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
                raise ValueError(f"{where}: weight must be a finite number >= 0, got {weight!r}")
            params = term.get("params") or {}
            if not isinstance(params, dict):
                raise ValueError(f"{where}: params must be a mapping, got {params!r}")
            cache_options = sorted(set(params) & set(CACHE_FIELDS))
            if cache_options:
                raise ValueError(
                    f"{where} sets {', '.join(cache_options)}: the terms share one batch of embeddings, so set "
                    "cached and mini_batch_size in the combined loss's own params"
                )
            params = self._with_default_normalizations(name, params)
            label = term.get("label", name)
            if not isinstance(label, str) or not label:
                raise ValueError(f"{where}: label must be a non-empty string, got {label!r}")
            if any(existing.label == label for existing in built):
                raise ValueError(f"{where}: label {label!r} is used twice; give the terms distinct 'label's")
            built.append(WeightedTerm(label, float(weight), LOSSES.build(name, params)))
        object.__setattr__(self, "terms_built", tuple(built))

    def _with_default_normalizations(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` plus this loss's normalisations where the term sets none (teacher's: teacher terms only).

        Pairwise probabilities (``teacher_pairwise``) are never normalised, so a term taking them gets
        no default teacher normalisation.
        """
        params = dict(params)
        takes_teacher = bool(set(required_inputs(LOSSES.get(name))) & (TEACHER_INPUTS - {"teacher_pairwise"}))
        for label in _NORMALIZATION_FIELDS:
            value = getattr(self, label)
            if value != "none" and label not in params and (label == "student_normalization" or takes_teacher):
                params[label] = value
        return params

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every field any term takes, in first-use order."""
        return tuple(dict.fromkeys(name for term in self.terms_built for name in required_inputs(term.loss)))

    def components(self, inputs: LossInputs) -> dict[str, Tensor]:
        """``{"loss_<label>": weight * term(inputs)}`` for every term, in the order of ``terms``."""
        return {f"loss_{term.label}": term.weight * apply_loss(term.loss, inputs) for term in self.terms_built}

    def __call__(self, inputs: LossInputs) -> Tensor:
        """The weighted sum of the terms, a scalar."""
        import torch

        return torch.stack(list(self.components(inputs).values())).sum()

    def config(self) -> dict[str, Any]:
        """Every term's name, label, weight and full parameters, and the default normalisations."""
        return {
            "terms": [
                {"name": term.loss.name, "label": term.label, "weight": term.weight, "params": term.loss.config()}
                for term in self.terms_built
            ],
            "teacher_normalization": self.teacher_normalization,
            "student_normalization": self.student_normalization,
            **without_idle_cache_fields(self, {"cached": self.cached, "mini_batch_size": self.mini_batch_size}),
        }

    @property
    def citation(self) -> str:
        """The terms' citations, each once."""
        return "".join(_unique(term.loss.citation for term in self.terms_built))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
