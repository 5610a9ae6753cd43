"""Self-distillation with adaptive relevance margins: values from the formula and the reference code."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

from retrodistill.losses import LOSSES, AdaptiveMarginSelfDistillation
from retrodistill.losses import self_distill as self_distill_module

SQRT2 = math.sqrt(2)


def test_registered_with_its_parameters() -> None:
    assert LOSSES.get("self-distill") is AdaptiveMarginSelfDistillation
    assert LOSSES.build("self-distill", {"target": 0.3}).config() == {
        "target": 0.3,
        "in_batch": False,
        "error": "l2",
        "detach_target": False,
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    assert "2407.21515" in AdaptiveMarginSelfDistillation().citation


def test_docstring_examples() -> None:
    assert doctest.testmod(self_distill_module).failed == 0


def one_row() -> tuple[torch.Tensor, torch.Tensor]:
    """c(q, d+) = 1/sqrt(2), c(q, d-) = 0, c(d+, d-) = 1/sqrt(2)."""
    return torch.tensor([[1.0, 0.0]]), torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])


@pytest.mark.parametrize(
    ("error", "of"),
    [("l2", lambda x: x**2), ("l1", abs), ("soft", lambda x: math.log(1 + math.exp(-x)))],
)
def test_adaptive_target_with_each_error(error: str, of: object) -> None:
    residual = (1 / SQRT2 - 0) - ((1 / SQRT2) / 2 + 0.5)
    loss = AdaptiveMarginSelfDistillation(error=error)(*one_row())
    assert loss.item() == pytest.approx(of(residual))  # type: ignore[operator]


def test_static_target() -> None:
    loss = AdaptiveMarginSelfDistillation(target=0.2)(*one_row())
    assert loss.item() == pytest.approx((1 / SQRT2 - 0 - 0.2) ** 2)


def test_distributed_target_regresses_every_margin_onto_every_positive() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    documents = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]])  # (B=2, 1+N=2, D=2)
    margins = [1 - 0, 1 - 1 / SQRT2]  # c(q_b, d+_b) - c(q_b, d-_b)
    positive_negative = [[0.0, 1 / SQRT2], [1.0, 1 / SQRT2]]  # c(d+_i, d-_b)
    expected = sum((margins[b] - (positive_negative[i][b] / 2 + 0.5)) ** 2 for i in range(2) for b in range(2)) / 4
    loss = AdaptiveMarginSelfDistillation(target="distributed")(query, documents)
    assert loss.item() == pytest.approx(expected)


def reference(query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, target: str | float) -> torch.Tensor:
    """The authors' MarginLoss.forward (one negative, not in-batch, l2), re-derived with cosine matrices."""

    def pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T

    margin = pairwise(query, positive).diag() - pairwise(query, negative).diag()
    if isinstance(target, float):
        goal: torch.Tensor | float = target
    elif target == "adaptive":
        goal = pairwise(positive, negative).diag() / 2 + 0.5
    else:
        goal = pairwise(positive, negative) / 2 + 0.5
    return (margin - goal).square().mean()


@pytest.mark.parametrize("target", ["adaptive", "distributed", 0.4])
def test_one_negative_equals_the_reference_code(target: str | float) -> None:
    generator = torch.Generator().manual_seed(0)
    query, positive, negative = (torch.randn(6, 5, generator=generator) for _ in range(3))
    ours = AdaptiveMarginSelfDistillation(target=target)(query, torch.stack([positive, negative], dim=1))
    torch.testing.assert_close(ours, reference(query, positive, negative, target))


def test_several_negatives_average_the_per_negative_losses() -> None:
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(4, 5, generator=generator)
    documents = torch.randn(4, 3, 5, generator=generator)
    loss = AdaptiveMarginSelfDistillation()
    per_negative = [loss(query, documents[:, [0, n]]) for n in (1, 2)]
    torch.testing.assert_close(loss(query, documents), torch.stack(per_negative).mean())


def test_in_batch_uses_each_querys_own_positive_against_every_negative() -> None:
    generator = torch.Generator().manual_seed(2)
    query = torch.randn(3, 4, generator=generator)
    documents = torch.randn(3, 2, 4, generator=generator)  # one negative per row
    cos = F.cosine_similarity
    terms = [
        (
            cos(query[b], documents[b, 0], dim=0)
            - cos(query[b], documents[k, 1], dim=0)
            - (cos(documents[b, 0], documents[k, 1], dim=0) / 2 + 0.5)
        )
        ** 2
        for b in range(3)
        for k in range(3)
    ]
    ours = AdaptiveMarginSelfDistillation(in_batch=True)(query, documents)
    torch.testing.assert_close(ours, torch.stack(terms).mean())


def test_gradient_pulls_the_positive_towards_the_query_when_the_margin_is_short() -> None:
    query = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[0.0, 1.0]], requires_grad=True)  # c(q, d+) = 0
    negative = torch.tensor([[1.0, 1.0]])  # c(q, d-) = 1/sqrt(2): margin -0.71, below the target 0.5
    loss = AdaptiveMarginSelfDistillation(target=0.5)(query, torch.stack([positive, negative], dim=1))
    loss.backward()
    assert positive.grad is not None
    towards_query = query - positive.detach()
    assert (positive.grad * towards_query).sum() < 0  # a descent step moves d+ towards q


def test_targets_carry_gradients_unless_detached() -> None:
    query, documents = one_row()
    kept = documents.clone().requires_grad_(True)
    stopped = documents.clone().requires_grad_(True)
    value_kept = AdaptiveMarginSelfDistillation()(query, kept)
    value_stopped = AdaptiveMarginSelfDistillation(detach_target=True)(query, stopped)
    assert value_kept.item() == pytest.approx(value_stopped.item())
    value_kept.backward()
    value_stopped.backward()
    assert kept.grad is not None and stopped.grad is not None
    assert not torch.allclose(kept.grad, stopped.grad)


@pytest.mark.parametrize(
    ("query_shape", "documents_shape"),
    [((2, 3), (2, 1, 3)), ((2, 3), (3, 2, 3)), ((2, 3), (2, 2, 4)), ((3,), (1, 2, 3)), ((0, 3), (0, 2, 3))],
)
def test_wrong_shapes_are_named(query_shape: tuple[int, ...], documents_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(B, 1\+N, D\)") as error:
        AdaptiveMarginSelfDistillation()(torch.ones(query_shape), torch.ones(documents_shape))
    assert str(documents_shape) in str(error.value)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"target": "teacher"}, "target"),
        ({"target": math.inf}, "finite"),
        ({"target": True}, "target"),
        ({"error": "huber"}, "error"),
        ({"target": "distributed", "in_batch": True}, "in_batch"),
        ({"teacher_normalization": "zscore"}, "teacher_normalization must be 'none'"),
    ],
)
def test_bad_parameters_are_rejected(params: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LOSSES.build("self-distill", params)
