"""LambdaLoss: ΔNDCG weights and values from the formula, gradients, checks, and agreement with ST."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from retrodistill.losses import LOSSES, LambdaLoss
from retrodistill.losses import lambdaloss as lambdaloss_module

LOG2_3 = math.log2(3)


def logistic(d: float) -> float:
    """log2(1 + exp(-d)): the pairwise logistic loss in base 2."""
    return math.log2(1 + math.exp(-d))


def test_registered_with_its_parameters() -> None:
    assert LOSSES.get("lambdaloss") is LambdaLoss
    loss = LOSSES.build("lambdaloss", {"temperature_teacher": 0.5})
    assert loss.config() == {
        "temperature_teacher": 0.5,
        "temperature_student": 1.0,
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    assert "LambdaLoss Framework" in loss.citation and "3269206.3271784" in loss.citation


def test_docstring_examples() -> None:
    assert doctest.testmod(lambdaloss_module).failed == 0


def test_three_documents_written_out() -> None:
    teacher = torch.log(torch.tensor([[4.0, 2.0, 1.0]]))  # gains G = [4/7, 2/7, 1/7]: the ideal order is 0, 1, 2
    student = torch.tensor([[0.0, 2.0, 1.0]])  # the student ranks doc 1 first, then doc 2, then doc 0
    # 1 / log2(1 + rank): doc 0 at rank 3 -> 1/2, doc 1 at rank 1 -> 1, doc 2 at rank 2 -> 1/log2(3)
    idcg = 4 / 7 + (2 / 7) / LOG2_3 + (1 / 7) / 2
    w01 = (4 / 7 - 2 / 7) * abs(1 / 2 - 1) / idcg
    w02 = (4 / 7 - 1 / 7) * abs(1 / 2 - 1 / LOG2_3) / idcg
    w12 = (2 / 7 - 1 / 7) * abs(1 - 1 / LOG2_3) / idcg
    expected = (w01 * logistic(0 - 2) + w02 * logistic(0 - 1) + w12 * logistic(2 - 1)) / 3
    loss = LambdaLoss()(student, teacher)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_temperatures() -> None:
    # Teacher softmax at tau_t = 2 of log([9, 1]) * 2 is [9/10, 1/10]; student differences are divided by 0.5.
    teacher = 2 * torch.log(torch.tensor([[9.0, 1.0]]))
    student = torch.tensor([[0.0, 0.25]])
    idcg = 9 / 10 + (1 / 10) / LOG2_3
    weight = (9 / 10 - 1 / 10) * (1 - 1 / LOG2_3) / idcg  # doc 0 sits at rank 2, doc 1 at rank 1
    loss = LambdaLoss(temperature_teacher=2.0, temperature_student=0.5)(student, teacher)
    assert loss.item() == pytest.approx(weight * logistic((0 - 0.25) / 0.5), rel=1e-5)


def test_a_correctly_ordered_pair_has_weight_from_the_swap_it_would_cost() -> None:
    teacher = torch.log(torch.tensor([[3.0, 1.0]]))  # G = [3/4, 1/4]
    student = torch.tensor([[1.0, 0.0]])  # already in the teacher's order; swapping would still cost NDCG
    weight = (3 / 4 - 1 / 4) * (1 - 1 / LOG2_3) / (3 / 4 + (1 / 4) / LOG2_3)
    assert LambdaLoss()(student, teacher).item() == pytest.approx(weight * logistic(1.0), rel=1e-5)


def test_student_ties_are_ranked_by_column_order() -> None:
    teacher = torch.log(torch.tensor([[1.0, 3.0]]))  # G = [1/4, 3/4]: the teacher prefers doc 1
    student = torch.zeros(1, 2)  # tied: doc 0 takes rank 1, doc 1 rank 2
    weight = (3 / 4 - 1 / 4) * (1 - 1 / LOG2_3) / (3 / 4 + (1 / 4) / LOG2_3)
    assert LambdaLoss()(student, teacher).item() == pytest.approx(weight * logistic(0.0), rel=1e-5)


def test_mean_over_the_preferred_pairs_of_the_whole_batch() -> None:
    # Row 0's teacher ties docs 0 and 1: only (0, 2) and (1, 2) are preferred pairs. Row 1 has 1 pair.
    teacher = torch.log(torch.tensor([[2.0, 2.0, 1.0], [1.0, 4.0, 1.0]]))
    student = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    # Row 0: G = [2/5, 2/5, 1/5]; ranks by student: doc 2 -> 1, doc 1 -> 2, doc 0 -> 3.
    idcg0 = 2 / 5 + (2 / 5) / LOG2_3 + (1 / 5) / 2
    row0 = (2 / 5 - 1 / 5) * abs(1 / 2 - 1) / idcg0 * logistic(0 - 2) + (2 / 5 - 1 / 5) * abs(
        1 / LOG2_3 - 1
    ) / idcg0 * logistic(1 - 2)
    # Row 1: G = [1/6, 4/6, 1/6]; tied student: ranks 1, 2, 3 in column order; pairs (1, 0) and (1, 2).
    idcg1 = 4 / 6 + (1 / 6) / LOG2_3 + (1 / 6) / 2
    row1 = (4 / 6 - 1 / 6) * abs(1 / LOG2_3 - 1) / idcg1 * logistic(0.0) + (4 / 6 - 1 / 6) * abs(
        1 / LOG2_3 - 1 / 2
    ) / idcg1 * logistic(0.0)
    assert LambdaLoss()(student, teacher).item() == pytest.approx((row0 + row1) / 4, rel=1e-5)


def test_a_teacher_that_ties_everything_gives_zero_and_zero_gradient() -> None:
    student = torch.tensor([[0.0, 3.0, 1.0]], requires_grad=True)
    loss = LambdaLoss()(student, torch.ones(1, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert student.grad is not None
    torch.testing.assert_close(student.grad, torch.zeros(1, 3))


def test_gradient_matches_the_formula_and_raises_the_teachers_favourite() -> None:
    student = torch.tensor([[0.0, 1.0]], requires_grad=True)
    teacher = torch.log(torch.tensor([[3.0, 1.0]])).requires_grad_()  # the teacher prefers doc 0
    loss = LambdaLoss(temperature_student=2.0)(student, teacher)
    loss.backward()
    weight = (3 / 4 - 1 / 4) * (1 - 1 / LOG2_3) / (3 / 4 + (1 / 4) / LOG2_3)
    # d/ds_0 of w * log2(1 + exp(-(s_0 - s_1) / tau)) = -w * sigmoid(-(s_0 - s_1) / tau) / (tau * ln 2)
    d0 = -weight * (1 / (1 + math.exp((0.0 - 1.0) / 2.0))) / (2.0 * math.log(2))
    assert student.grad is not None
    torch.testing.assert_close(student.grad, torch.tensor([[d0, -d0]]))
    assert student.grad[0, 0] < 0
    assert teacher.grad is None
    with torch.no_grad():
        assert LambdaLoss(temperature_student=2.0)(student + torch.tensor([[0.1, 0.0]]), teacher) < loss


def test_the_document_the_teacher_ranks_first_is_pushed_up() -> None:
    student = torch.tensor([[0.0, 2.0, 1.0, -1.0]], requires_grad=True)
    LambdaLoss()(student, torch.tensor([[5.0, 1.0, 0.0, -1.0]])).backward()
    assert student.grad is not None
    assert student.grad[0, 0] < 0
    assert student.grad[0, 1] > 0  # the student's own favourite, which the teacher ranks second


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
@pytest.mark.parametrize("side", ["temperature_teacher", "temperature_student"])
def test_non_positive_temperature_is_rejected(side: str, bad: float) -> None:
    with pytest.raises(ValueError, match=side):
        LambdaLoss(**{side: bad})


def test_wrong_shapes_and_nan_teacher_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        LambdaLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least 2 columns"):
        LambdaLoss()(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"finite.*\[0\]"):
        LambdaLoss()(torch.zeros(1, 3), torch.tensor([[0.0, float("nan"), 1.0]]))


class ScoreLookupCrossEncoder:
    """Stands in for sentence-transformers' CrossEncoder: the pair (query b, doc j) scores ``scores[b, j]``."""

    num_labels = 1
    device = torch.device("cpu")

    def __init__(self, scores: torch.Tensor) -> None:
        self.flat, self.columns = scores.reshape(-1), scores.shape[1]

    def preprocess(self, pairs: list[tuple[str, str]], prompt: str | None = None, task: str | None = None) -> dict:
        return {"index": torch.tensor([int(query) * self.columns + int(doc) for query, doc in pairs])}

    def __call__(self, features: dict) -> dict:
        return {"scores": self.flat[features["index"]]}


@pytest.mark.parametrize(("temperature_teacher", "temperature_student"), [(1.0, 1.0), (2.0, 0.5), (0.5, 3.0)])
def test_equals_sentence_transformers_lambdaloss_with_lambdarank_weights(
    temperature_teacher: float, temperature_student: float
) -> None:
    """ST's LambdaLoss(LambdaRankScheme(), sigma=1/τs) with labels log2(1 + G) uses gains 2^label - 1 = G."""
    from sentence_transformers.cross_encoder.losses import LambdaLoss as STLambdaLoss
    from sentence_transformers.cross_encoder.losses import LambdaRankScheme

    generator = torch.Generator().manual_seed(6)
    student = torch.randn(4, 6, generator=generator)  # no ties: ST's unstable sort then ranks as ours
    # Moderate spreads: a gain below ~1e-7 would round log2(1 + G) to 0 in float32, a tie for ST only.
    teacher = torch.randn(4, 6, generator=generator)
    labels = torch.log2(1 + torch.softmax(teacher / temperature_teacher, dim=1))
    inputs = [[str(b) for b in range(4)], [[str(j) for j in range(6)] for _ in range(4)]]
    theirs = STLambdaLoss(
        ScoreLookupCrossEncoder(student),  # type: ignore[arg-type]
        weighting_scheme=LambdaRankScheme(),
        sigma=1 / temperature_student,
        reduction_log="binary",
    )(inputs, list(labels))
    ours = LambdaLoss(temperature_teacher, temperature_student)(student, teacher)
    torch.testing.assert_close(ours, theirs)
