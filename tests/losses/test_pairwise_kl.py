"""PairwiseKL (PairDistill): the pairwise teacher input, values from the formula, gradients and checks."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from retrodistill.losses import LOSSES, PairwiseKL, RankNet, pairwise_probabilities
from retrodistill.losses import pairwise_kl as pairwise_kl_module

NAN = float("nan")


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def binary_kl(p: float, q: float) -> float:
    """KL([p, 1-p] || [q, 1-q]), written out (0 log 0 = 0)."""
    return sum(a * math.log(a / b) for a, b in ((p, q), (1 - p, 1 - q)) if a > 0)


def test_registered_with_its_parameters() -> None:
    assert LOSSES.get("pairwise-kl") is PairwiseKL
    loss = LOSSES.build("pairwise-kl", {"temperature_student": 0.05})
    assert loss.config() == {
        "temperature_student": 0.05,
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    assert "PairDistill" in loss.citation and "2410.01383" in loss.citation


def test_docstring_examples() -> None:
    assert doctest.testmod(pairwise_kl_module).failed == 0


def test_pairwise_probabilities_from_scores() -> None:
    probabilities = pairwise_probabilities(torch.tensor([[2.0, 0.0, 1.0]]), temperature=2.0)
    expected = torch.tensor(
        [
            [NAN, sigmoid((2 - 0) / 2), sigmoid((2 - 1) / 2)],
            [sigmoid((0 - 2) / 2), NAN, sigmoid((0 - 1) / 2)],
            [sigmoid((1 - 2) / 2), sigmoid((1 - 0) / 2), NAN],
        ]
    )
    torch.testing.assert_close(probabilities[0], expected, equal_nan=True)


def test_pairwise_probabilities_keep_only_top_m_pairs() -> None:
    scores = torch.tensor([[0.0, 5.0, 1.0, 3.0], [4.0, 3.0, 2.0, 1.0]])
    probabilities = pairwise_probabilities(scores, top_m=3)
    scored = ~torch.isnan(probabilities)
    # Row 0's top 3 are docs 1, 3, 2; row 1's docs 0, 1, 2. Ordered pairs among them, no diagonal.
    expected_pairs = [
        {(1, 3), (3, 1), (1, 2), (2, 1), (3, 2), (2, 3)},
        {(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)},
    ]
    for row, pairs in enumerate(expected_pairs):
        assert {(int(i), int(j)) for i, j in scored[row].nonzero().tolist()} == pairs
    assert probabilities[0, 1, 3].item() == pytest.approx(sigmoid(5.0 - 3.0))
    # top_m at or above 1 + N keeps every off-diagonal pair.
    assert int((~torch.isnan(pairwise_probabilities(scores, top_m=4))).sum()) == 2 * 4 * 3


def test_pairwise_probabilities_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="temperature"):
        pairwise_probabilities(torch.zeros(1, 3), temperature=0.0)
    with pytest.raises(ValueError, match="top_m"):
        pairwise_probabilities(torch.zeros(1, 3), top_m=1)
    with pytest.raises(ValueError, match=r"\(B, 1\+N\).*\(3,\)"):
        pairwise_probabilities(torch.zeros(3))


def test_one_scored_pair() -> None:
    teacher = torch.tensor([[[NAN, 0.9, NAN], [NAN, NAN, NAN], [NAN, NAN, NAN]]])
    student = torch.tensor([[1.0, 0.5, 7.0]])  # doc 2 is in no scored pair: it plays no role
    loss = PairwiseKL()(student, teacher)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(binary_kl(0.9, sigmoid(1.0 - 0.5)), rel=1e-5)


def test_mean_over_all_scored_pairs_of_the_batch() -> None:
    # Row 0 has 3 scored pairs, row 1 has 1, row 2 none: the mean is over the 4 pairs, not per row.
    teacher = torch.full((3, 3, 3), NAN)
    teacher[0, 0, 1], teacher[0, 1, 0], teacher[0, 1, 2] = 0.8, 0.3, 0.6
    teacher[1, 2, 0] = 1.0
    student = torch.tensor([[1.0, 0.0, 0.5], [0.0, 2.0, -1.0], [5.0, -5.0, 0.0]])
    expected = (
        binary_kl(0.8, sigmoid(1.0 - 0.0))
        + binary_kl(0.3, sigmoid(0.0 - 1.0))  # (1, 0) and (0, 1) are separate terms
        + binary_kl(0.6, sigmoid(0.0 - 0.5))
        + binary_kl(1.0, sigmoid(-1.0 - 0.0))  # a certain target: 0 log 0 = 0
    ) / 4
    assert PairwiseKL()(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_temperature_divides_the_student_differences() -> None:
    teacher = torch.tensor([[[NAN, 0.7], [0.2, NAN]]])
    student = torch.tensor([[0.3, 0.1]])
    expected = (binary_kl(0.7, sigmoid(0.2 / 0.05)) + binary_kl(0.2, sigmoid(-0.2 / 0.05))) / 2
    loss = PairwiseKL(temperature_student=0.05)(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_diagonal_is_ignored() -> None:
    student = torch.tensor([[1.0, 0.0]])
    with_diagonal = torch.tensor([[[0.5, 0.9], [NAN, 0.0]]])
    without = torch.tensor([[[NAN, 0.9], [NAN, NAN]]])
    assert PairwiseKL()(student, with_diagonal).item() == pytest.approx(PairwiseKL()(student, without).item())


def test_zero_when_the_student_reproduces_the_teacher() -> None:
    scores = torch.tensor([[2.0, 0.5, -1.0]])
    teacher = pairwise_probabilities(scores, temperature=0.5)
    assert PairwiseKL(temperature_student=0.5)(scores + 3.0, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_matches_the_formula_and_raises_the_preferred_document() -> None:
    student = torch.tensor([[0.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[[NAN, 0.9], [NAN, NAN]]], requires_grad=True)  # doc 0 above doc 1 with p = 0.9
    loss = PairwiseKL(temperature_student=2.0)(student, teacher)
    loss.backward()
    q = sigmoid((0.0 - 1.0) / 2.0)
    assert student.grad is not None
    torch.testing.assert_close(student.grad, torch.tensor([[(q - 0.9) / 2.0, -(q - 0.9) / 2.0]]))
    assert student.grad[0, 0] < 0 < student.grad[0, 1]
    assert teacher.grad is None
    with torch.no_grad():
        assert PairwiseKL(temperature_student=2.0)(student + torch.tensor([[0.1, 0.0]]), teacher) < loss


def test_equals_ranknet_minus_target_entropy_with_the_same_gradient() -> None:
    """With p_ij = sigmoid(t_i - t_j) on the pairs i < j, PairwiseKL is RankNet minus the targets' entropy."""
    generator = torch.Generator().manual_seed(5)
    teacher_scores = 2 * torch.randn(3, 4, generator=generator)
    upper = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    teacher = pairwise_probabilities(teacher_scores).masked_fill(~upper, NAN)
    student_a = torch.randn(3, 4, generator=generator).requires_grad_()
    student_b = student_a.detach().clone().requires_grad_()
    pairwise = PairwiseKL()(student_a, teacher)
    ranknet = RankNet()(student_b, teacher_scores)
    targets = teacher[~torch.isnan(teacher)].tolist()
    entropy = sum(-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in targets) / len(targets)
    assert pairwise.item() == pytest.approx(ranknet.item() - entropy, rel=1e-4, abs=1e-6)
    pairwise.backward()
    ranknet.backward()
    assert student_a.grad is not None and student_b.grad is not None
    torch.testing.assert_close(student_a.grad, student_b.grad)


def test_student_normalisation_applies() -> None:
    teacher = torch.tensor([[[NAN, 0.6, NAN], [NAN, NAN, NAN], [NAN, NAN, NAN]]])
    student = torch.tensor([[4.0, 0.0, 2.0]])  # min-max: [1, 0, 1/2]
    loss = PairwiseKL(student_normalization="minmax")(student, teacher)
    assert loss.item() == pytest.approx(binary_kl(0.6, sigmoid(1.0)), rel=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_non_positive_temperature_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature_student"):
        PairwiseKL(temperature_student=bad)


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"),
    [((2, 3), (2, 3)), ((2, 3), (2, 3, 4)), ((2, 3), (1, 3, 3)), ((3,), (3, 3)), ((2, 1), (2, 1, 1))],
)
def test_wrong_shapes_are_named(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(B, 1\+N, 1\+N\)|at least 2") as error:
        PairwiseKL()(torch.zeros(student_shape), torch.full(teacher_shape, 0.5))
    assert str(student_shape) in str(error.value) and str(teacher_shape) in str(error.value)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("inf"), float("-inf")])
def test_teacher_values_outside_zero_one_are_rejected(bad: float) -> None:
    teacher = torch.tensor([[[NAN, 0.5], [NAN, NAN]], [[NAN, bad], [NAN, NAN]]])
    with pytest.raises(ValueError, match=r"\[0, 1\].*\[1\]"):
        PairwiseKL()(torch.zeros(2, 2), teacher)


def test_a_batch_without_scored_pairs_is_rejected() -> None:
    teacher = torch.full((2, 3, 3), NAN)
    teacher[:, 0, 0] = 0.5  # diagonal cells do not count as pairs
    with pytest.raises(ValueError, match="no scored pair"):
        PairwiseKL()(torch.zeros(2, 3), teacher)
