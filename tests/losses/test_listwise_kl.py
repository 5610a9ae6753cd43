"""ListwiseKL: values from the formula, temperatures, gradients, checks, and agreement with ST."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from retrodistill.losses import LOSSES, ListwiseKL
from retrodistill.losses import listwise_kl as listwise_kl_module


def kl(p: list[float], q: list[float]) -> float:
    """KL(p || q) of two distributions, written out."""
    return sum(pj * math.log(pj / qj) for pj, qj in zip(p, q, strict=True) if pj > 0)


def softmax(x: list[float]) -> list[float]:
    total = sum(math.exp(v) for v in x)
    return [math.exp(v) / total for v in x]


def test_registered_with_its_parameters() -> None:
    assert LOSSES.get("listwise-kl") is ListwiseKL
    assert ListwiseKL.name == "listwise-kl"
    loss = LOSSES.build("listwise-kl", {"temperature_teacher": 2.0})
    assert loss.config() == {
        "temperature_teacher": 2.0,
        "temperature_student": 1.0,
        "scale_by_temperature_squared": False,
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    assert "2110.07367" in loss.citation and "2010.11386" in loss.citation


def test_docstring_examples() -> None:
    assert doctest.testmod(listwise_kl_module).failed == 0


def test_one_negative() -> None:
    loss = ListwiseKL()(torch.tensor([[0.0, 0.0]]), torch.log(torch.tensor([[3.0, 1.0]])))
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(3 / 4 * math.log((3 / 4) / (1 / 2)) + 1 / 4 * math.log((1 / 4) / (1 / 2)))


def test_several_negatives_batchmean() -> None:
    student = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]])
    teacher = torch.tensor([[2.0, 0.5, 0.5], [1.0, 1.0, 0.0]])
    expected = (
        kl(softmax([2.0, 0.5, 0.5]), softmax([1.0, 0.0, 0.0])) + kl(softmax([1.0, 1.0, 0.0]), softmax([0.0, 2.0, -1.0]))
    ) / 2  # summed over documents, averaged over the 2 queries
    assert ListwiseKL()(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_temperatures_divide_each_side() -> None:
    student = [1.0, 0.0, -2.0]
    teacher = [4.0, 1.0, 0.0]
    loss = ListwiseKL(temperature_teacher=2.0, temperature_student=0.5)
    expected = kl(softmax([t / 2.0 for t in teacher]), softmax([s / 0.5 for s in student]))
    assert loss(torch.tensor([student]), torch.tensor([teacher])).item() == pytest.approx(expected, rel=1e-5)


def test_scale_by_temperature_squared() -> None:
    student, teacher = torch.tensor([[1.0, 0.0, -2.0]]), torch.tensor([[4.0, 1.0, 0.0]])
    plain = ListwiseKL(temperature_teacher=2.0, temperature_student=3.0)
    scaled = ListwiseKL(temperature_teacher=2.0, temperature_student=3.0, scale_by_temperature_squared=True)
    assert scaled(student, teacher).item() == pytest.approx(3.0**2 * plain(student, teacher).item())


def test_identical_distributions_give_zero() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    assert ListwiseKL()(scores + 5.0, scores).item() == pytest.approx(0.0, abs=1e-7)


def test_underflowing_teacher_probabilities_stay_finite() -> None:
    # softmax([0, -1e4]) is exactly [1, 0] in float32; the second document contributes 0, not NaN.
    loss = ListwiseKL()(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, -1.0e4]]))
    assert loss.item() == pytest.approx(kl([1.0, 0.0], softmax([0.0, 1.0])), rel=1e-5)


def test_gradient_is_student_minus_teacher_probabilities() -> None:
    student = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    ListwiseKL(temperature_student=2.0)(student, teacher).backward()
    # d/ds_j of (1/B) KL(p || softmax(s / tau)) = (q_j - p_j) / (tau * B)
    expected = (torch.softmax(student.detach() / 2.0, dim=1) - torch.softmax(teacher, dim=1)) / (2.0 * 2)
    assert student.grad is not None
    torch.testing.assert_close(student.grad, expected)
    # Row 0: the teacher gives the positive more mass than the student, so a step raises its score.
    assert student.grad[0, 0] < 0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
@pytest.mark.parametrize("side", ["temperature_teacher", "temperature_student"])
def test_non_positive_temperature_is_rejected(side: str, bad: float) -> None:
    with pytest.raises(ValueError, match=side):
        ListwiseKL(**{side: bad})


def test_wrong_shapes_and_nan_teacher_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        ListwiseKL()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least 2 columns"):
        ListwiseKL()(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="finite"):
        ListwiseKL()(torch.zeros(1, 2), torch.tensor([[float("nan"), 0.0]]))


@pytest.mark.parametrize(
    ("temperature_teacher", "temperature_student"), [(1.0, 1.0), (2.0, 1.0), (0.5, 3.0), (4.0, 0.25)]
)
@pytest.mark.parametrize("negatives", [1, 4])
def test_equals_sentence_transformers_distill_kl_div(
    temperature_teacher: float, temperature_student: float, negatives: int
) -> None:
    """ST's DistillKLDivLoss(teacher_temperature=τt, student_temperature=τs) always multiplies by τs²,
    so it equals ListwiseKL(τt, τs, scale_by_temperature_squared=True), and τs² × ListwiseKL(τt, τs)."""
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    generator = torch.Generator().manual_seed(1)
    batch_size, dim = 6, 8
    query = torch.randn(batch_size, dim, generator=generator)
    documents = [torch.randn(batch_size, dim, generator=generator) for _ in range(1 + negatives)]
    teacher = 3 * torch.randn(batch_size, 1 + negatives, generator=generator)
    student = torch.stack([(query * document).sum(-1) for document in documents], dim=1)  # (B, 1+N)

    theirs = DistillKLDivLoss(
        model=None,  # type: ignore[arg-type]  # compute_loss_from_embeddings never touches the model
        teacher_temperature=temperature_teacher,
        student_temperature=temperature_student,
    ).compute_loss_from_embeddings([query, *documents], teacher)

    scaled = ListwiseKL(temperature_teacher, temperature_student, scale_by_temperature_squared=True)
    torch.testing.assert_close(scaled(student, teacher), theirs)
    plain = ListwiseKL(temperature_teacher, temperature_student)
    torch.testing.assert_close(temperature_student**2 * plain(student, teacher), theirs)


def test_equals_sentence_transformers_shared_temperature() -> None:
    """ST's single ``temperature=τ`` sets both sides: ListwiseKL(τ, τ, scale_by_temperature_squared=True)."""
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    generator = torch.Generator().manual_seed(2)
    query = torch.randn(4, 8, generator=generator)
    documents = [torch.randn(4, 8, generator=generator) for _ in range(3)]
    teacher = torch.randn(4, 3, generator=generator)
    student = torch.stack([(query * document).sum(-1) for document in documents], dim=1)
    theirs = DistillKLDivLoss(model=None, temperature=2.0).compute_loss_from_embeddings(  # type: ignore[arg-type]
        [query, *documents], teacher
    )
    ours = ListwiseKL(2.0, 2.0, scale_by_temperature_squared=True)(student, teacher)
    torch.testing.assert_close(ours, theirs)
