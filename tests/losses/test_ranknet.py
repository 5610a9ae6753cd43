"""RankNet: values from the formula, pair sets, temperatures, gradients and input checks."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from retrodistill.losses import LOSSES, RankNet
from retrodistill.losses import ranknet as ranknet_module


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def bce(p: float, q: float) -> float:
    """-(p log q + (1 - p) log(1 - q)), written out."""
    return -(p * math.log(q) + (1 - p) * math.log(1 - q))


def pair_term(s: list[float], t: list[float], i: int, j: int, tau_t: float = 1.0, tau_s: float = 1.0) -> float:
    return bce(sigmoid((t[i] - t[j]) / tau_t), sigmoid((s[i] - s[j]) / tau_s))


def test_registered_with_its_parameters() -> None:
    assert LOSSES.get("ranknet") is RankNet
    loss = LOSSES.build("ranknet", {"pairs": "positive", "temperature_teacher": 2.0})
    assert loss.config() == {
        "temperature_teacher": 2.0,
        "temperature_student": 1.0,
        "pairs": "positive",
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    assert "1102351.1102363" in loss.citation and "2410.01383" in loss.citation


def test_docstring_examples() -> None:
    assert doctest.testmod(ranknet_module).failed == 0


def test_all_pairs_of_one_query() -> None:
    s, t = [1.0, 0.0, 2.0], [2.0, 0.5, 0.0]
    expected = (pair_term(s, t, 0, 1) + pair_term(s, t, 0, 2) + pair_term(s, t, 1, 2)) / 3
    loss = RankNet()(torch.tensor([s]), torch.tensor([t]))
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_positive_pairs_only() -> None:
    s, t = [1.0, 0.0, 2.0, -1.0], [2.0, 0.5, 0.0, 3.0]
    expected = (pair_term(s, t, 0, 1) + pair_term(s, t, 0, 2) + pair_term(s, t, 0, 3)) / 3
    assert RankNet(pairs="positive")(torch.tensor([s]), torch.tensor([t])).item() == pytest.approx(expected, rel=1e-6)


def test_averaged_over_pairs_then_queries() -> None:
    s0, t0 = [1.0, 0.0, 2.0], [2.0, 0.5, 0.0]
    s1, t1 = [0.0, 0.0, 0.0], [0.0, 4.0, -1.0]
    row0 = (pair_term(s0, t0, 0, 1) + pair_term(s0, t0, 0, 2) + pair_term(s0, t0, 1, 2)) / 3
    row1 = (pair_term(s1, t1, 0, 1) + pair_term(s1, t1, 0, 2) + pair_term(s1, t1, 1, 2)) / 3
    loss = RankNet()(torch.tensor([s0, s1]), torch.tensor([t0, t1]))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_temperatures_divide_each_side() -> None:
    s, t = [1.0, 0.0, 2.0], [6.0, 1.0, 0.0]
    expected = sum(pair_term(s, t, i, j, tau_t=4.0, tau_s=0.5) for i, j in ((0, 1), (0, 2), (1, 2))) / 3
    loss = RankNet(temperature_teacher=4.0, temperature_student=0.5)
    assert loss(torch.tensor([s]), torch.tensor([t])).item() == pytest.approx(expected, rel=1e-6)


def test_minimum_is_the_mean_binary_entropy_of_the_targets() -> None:
    t = [2.0, 0.5, 0.0]
    p = [sigmoid(t[0] - t[1]), sigmoid(t[0] - t[2]), sigmoid(t[1] - t[2])]
    entropy = sum(-(x * math.log(x) + (1 - x) * math.log(1 - x)) for x in p) / 3
    # Same differences as the teacher: q = p, the minimum.
    assert RankNet()(torch.tensor([t]) + 1.0, torch.tensor([t])).item() == pytest.approx(entropy, rel=1e-6)


def test_far_apart_student_scores_stay_finite() -> None:
    # sigmoid(-200) is 0 in float32; the with-logits form gives the exact 200 * (1 - p) instead of inf.
    loss = RankNet()(torch.tensor([[-100.0, 100.0]]), torch.tensor([[10.0, -10.0]]))
    p = sigmoid(20.0)
    assert loss.item() == pytest.approx(p * 200 + (1 - p) * math.log(1 + math.exp(-200)), rel=1e-5)


def test_gradient_matches_the_formula_and_raises_the_teachers_favourite() -> None:
    s, t = [0.0, 1.0], [2.0, 0.0]  # the teacher prefers doc 0, the student doc 1
    student = torch.tensor([s], requires_grad=True)
    teacher = torch.tensor([t], requires_grad=True)
    loss = RankNet(temperature_student=0.5)(student, teacher)
    loss.backward()
    # d/ds_0 of bce(p, sigmoid((s_0 - s_1) / tau)) = (q - p) / tau, and the opposite for s_1.
    q, p = sigmoid((0.0 - 1.0) / 0.5), sigmoid(2.0)
    assert student.grad is not None
    torch.testing.assert_close(student.grad, torch.tensor([[(q - p) / 0.5, -(q - p) / 0.5]]))
    assert student.grad[0, 0] < 0 < student.grad[0, 1]
    assert teacher.grad is None
    with torch.no_grad():
        assert RankNet(temperature_student=0.5)(student + torch.tensor([[0.1, 0.0]]), teacher) < loss


@pytest.mark.parametrize("pairs", ["all", "positive"])
def test_positive_preferred_by_teacher_gets_a_negative_gradient(pairs: str) -> None:
    student = torch.zeros(1, 4, requires_grad=True)
    RankNet(pairs=pairs)(student, torch.tensor([[5.0, 1.0, 0.0, -1.0]])).backward()
    assert student.grad is not None
    assert student.grad[0, 0] < 0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
@pytest.mark.parametrize("side", ["temperature_teacher", "temperature_student"])
def test_non_positive_temperature_is_rejected(side: str, bad: float) -> None:
    with pytest.raises(ValueError, match=side):
        RankNet(**{side: bad})


def test_unknown_pair_set_is_rejected() -> None:
    with pytest.raises(ValueError, match="pairs.*'adjacent'"):
        RankNet(pairs="adjacent")


def test_wrong_shapes_and_nan_teacher_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        RankNet()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least 2 columns"):
        RankNet()(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"finite.*\[0\]"):
        RankNet()(torch.zeros(1, 3), torch.tensor([[0.0, float("nan"), 1.0]]))
