"""Score normalisation: values from the formulas, constant rows, and the loss parameters that apply it."""

from __future__ import annotations

import dataclasses
import doctest
import math

import pytest
import torch

from retrodistill.losses import LOSSES, ListwiseKL, MarginMSE, PairwiseKL, normalize_scores
from retrodistill.losses import normalization as normalization_module
from retrodistill.losses.base import DistillationLoss
from retrodistill.registry import parameters


def test_docstring_examples() -> None:
    assert doctest.testmod(normalization_module).failed == 0


def test_zscore_uses_the_population_std_per_row() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, -2.0, 2.0, 0.0]])
    # Row 0: mean 3, population variance (4 + 1 + 0 + 9) / 4; row 1: mean 0, variance (0 + 4 + 4 + 0) / 4.
    std0, std1 = math.sqrt(14 / 4), math.sqrt(8 / 4)
    expected = torch.tensor([[-2 / std0, -1 / std0, 0.0, 3 / std0], [0.0, -2 / std1, 2 / std1, 0.0]])
    torch.testing.assert_close(normalize_scores(scores, "zscore"), expected)


def test_minmax_maps_each_row_onto_zero_one() -> None:
    scores = torch.tensor([[1.0, 5.0, 2.0], [-3.0, -1.0, -2.0]])
    expected = torch.tensor([[0.0, 1.0, (2 - 1) / (5 - 1)], [0.0, 1.0, (-2 + 3) / (-1 + 3)]])
    torch.testing.assert_close(normalize_scores(scores, "minmax"), expected)


def test_rows_are_normalised_independently() -> None:
    scores = torch.tensor([[1.0, 5.0, 2.0], [0.0, 1.0, 2.0]])
    changed = scores.clone()
    changed[1] = torch.tensor([100.0, -50.0, 7.0])
    for method in ("zscore", "minmax"):
        torch.testing.assert_close(normalize_scores(scores, method)[0], normalize_scores(changed, method)[0])


@pytest.mark.parametrize(("method", "middle"), [("zscore", 0.0), ("minmax", 0.5)])
def test_constant_rows_map_to_the_middle_with_finite_gradients(method: str, middle: float) -> None:
    scores = torch.tensor([[2.0, 2.0, 2.0], [1.0, 0.0, 3.0]], requires_grad=True)
    normalized = normalize_scores(scores, method)
    torch.testing.assert_close(normalized[0], torch.full((3,), middle))
    (normalized * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert scores.grad is not None
    assert bool(torch.isfinite(scores.grad).all())


def test_spread_below_eps_is_divided_by_eps() -> None:
    scores = torch.tensor([[0.0, 1e-8]])
    # minmax: (x - 0) / max(1e-8, 1e-6); zscore: centred ±0.5e-8 divided by max(0.5e-8, 1e-6)
    torch.testing.assert_close(normalize_scores(scores, "minmax"), torch.tensor([[0.0, 1e-8 / 1e-6]]))
    torch.testing.assert_close(normalize_scores(scores, "zscore"), torch.tensor([[-0.5e-8 / 1e-6, 0.5e-8 / 1e-6]]))


def test_none_returns_the_scores_unchanged() -> None:
    scores = torch.tensor([[3.0, -1.0]])
    assert normalize_scores(scores, "none") is scores


def test_unknown_method_and_bad_eps_are_rejected() -> None:
    with pytest.raises(ValueError, match="'l2'"):
        normalize_scores(torch.zeros(1, 2), "l2")
    with pytest.raises(ValueError, match="eps"):
        normalize_scores(torch.zeros(1, 2), "zscore", eps=0.0)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_takes_and_reports_both_normalisations(name: str) -> None:
    loss_class = LOSSES.get(name)
    listed = {p.name: p.default for p in parameters(loss_class)}  # what `retrodistill plugins` prints
    assert listed["teacher_normalization"] == "none"
    assert listed["student_normalization"] == "none"
    loss = LOSSES.build(name, {"student_normalization": "minmax"})
    assert loss.config()["student_normalization"] == "minmax"
    assert loss.config()["teacher_normalization"] == "none"


@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("side", ["teacher_normalization", "student_normalization"])
def test_unknown_normalisation_is_rejected_at_construction(name: str, side: str) -> None:
    with pytest.raises(ValueError, match=f"{side}.*'softmax'"):
        LOSSES.build(name, {side: "softmax"})
    with pytest.raises(ValueError, match=side):
        dataclasses.replace(LOSSES.build(name), **{side: "softmax"})


def test_normalisations_are_keyword_only_so_positional_parameters_keep_their_meaning() -> None:
    loss = ListwiseKL(2.0, 0.5, True, teacher_normalization="zscore")
    assert isinstance(loss, DistillationLoss)
    assert loss.config() == {
        "temperature_teacher": 2.0,
        "temperature_student": 0.5,
        "scale_by_temperature_squared": True,
        "teacher_normalization": "zscore",
        "student_normalization": "none",
    }
    with pytest.raises(TypeError):
        ListwiseKL(2.0, 0.5, True, "zscore")  # type: ignore[misc]


def test_teacher_normalisation_is_applied_before_the_loss() -> None:
    student = torch.tensor([[1.0, 0.0]])
    # z-scored teacher [5, 3] is [1, -1]: target margin 2, student margin 1.
    loss = MarginMSE(teacher_normalization="zscore")(student, torch.tensor([[5.0, 3.0]]))
    assert loss.item() == pytest.approx((1 - 2) ** 2)
    # Any teacher scale and offset give the same target after z-scoring.
    same = MarginMSE(teacher_normalization="zscore")(student, torch.tensor([[50.0 + 7, 30.0 + 7]]))
    assert same.item() == pytest.approx(loss.item())


def test_student_normalisation_is_differentiated_through() -> None:
    student = torch.tensor([[3.0, 1.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[2.0, 0.0, 0.5]], requires_grad=True)
    loss = MarginMSE(student_normalization="minmax")(student, teacher)
    # min-max student [1, 0, 1/2]: margins (1, 1/2) against the teacher's (2, 1.5)
    assert loss.item() == pytest.approx(((1 - 2) ** 2 + (0.5 - 1.5) ** 2) / 2)
    loss.backward()
    assert teacher.grad is None
    # n = (x - x_1) / (x_0 - x_1): n_0 = 1 and n_1 = 0 whatever x is, so only n_2 = (x_2 - x_1) / (x_0 - x_1)
    # moves. dL/dn_2 = -((n_0 - n_2) - 1.5) = 1 and dn_2/dx = [-(x_2 - x_1), (x_2 - x_0), (x_0 - x_1)] / 2**2.
    assert student.grad is not None
    torch.testing.assert_close(student.grad, torch.tensor([[-1 / 4, -1 / 4, 2 / 4]]))


def test_pairwise_kl_refuses_teacher_normalisation() -> None:
    with pytest.raises(ValueError, match="teacher_normalization must be 'none'"):
        PairwiseKL(teacher_normalization="zscore")
    assert PairwiseKL(student_normalization="zscore").config()["student_normalization"] == "zscore"
