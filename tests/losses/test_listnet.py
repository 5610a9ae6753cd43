"""ListNet: values from the formula, the listwise-KL relation, gradients, checks, and agreement with ST."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from retrodistill.losses import LOSSES, ListNet, ListwiseKL
from retrodistill.losses import listnet as listnet_module


def softmax(x: list[float]) -> list[float]:
    total = sum(math.exp(v) for v in x)
    return [math.exp(v) / total for v in x]


def cross_entropy(p: list[float], q: list[float]) -> float:
    """-sum_j p_j log q_j, written out."""
    return -sum(pj * math.log(qj) for pj, qj in zip(p, q, strict=True))


def entropy(p: list[float]) -> float:
    return -sum(pj * math.log(pj) for pj in p if pj > 0)


def test_registered_with_its_parameters() -> None:
    assert LOSSES.get("listnet") is ListNet
    loss = LOSSES.build("listnet", {"temperature_student": 0.5})
    assert loss.config() == {
        "temperature_teacher": 1.0,
        "temperature_student": 0.5,
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    assert "Listwise Approach" in loss.citation and "1273496.1273513" in loss.citation


def test_docstring_examples() -> None:
    assert doctest.testmod(listnet_module).failed == 0


def test_one_query() -> None:
    student, teacher = [1.0, 0.0, -1.0], [0.0, 2.0, 0.5]
    loss = ListNet()(torch.tensor([student]), torch.tensor([teacher]))
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(cross_entropy(softmax(teacher), softmax(student)), rel=1e-6)


def test_summed_over_documents_and_averaged_over_queries() -> None:
    student = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]])
    teacher = torch.tensor([[2.0, 0.5, 0.5], [1.0, 1.0, 0.0]])
    expected = (
        cross_entropy(softmax([2.0, 0.5, 0.5]), softmax([1.0, 0.0, 0.0]))
        + cross_entropy(softmax([1.0, 1.0, 0.0]), softmax([0.0, 2.0, -1.0]))
    ) / 2
    assert ListNet()(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_temperatures_divide_each_side() -> None:
    student, teacher = [1.0, 0.0, -2.0], [4.0, 1.0, 0.0]
    loss = ListNet(temperature_teacher=2.0, temperature_student=0.5)
    expected = cross_entropy(softmax([t / 2.0 for t in teacher]), softmax([s / 0.5 for s in student]))
    assert loss(torch.tensor([student]), torch.tensor([teacher])).item() == pytest.approx(expected, rel=1e-6)


def test_minimum_is_the_teacher_entropy_not_zero() -> None:
    scores = [1.0, 2.0, 3.0]
    loss = ListNet()(torch.tensor([scores]) - 4.0, torch.tensor([scores]))
    assert loss.item() == pytest.approx(entropy(softmax(scores)), rel=1e-6)


@pytest.mark.parametrize(("temperature_teacher", "temperature_student"), [(1.0, 1.0), (2.0, 0.5), (0.3, 4.0)])
def test_equals_listwise_kl_plus_teacher_entropy_with_the_same_gradient(
    temperature_teacher: float, temperature_student: float
) -> None:
    generator = torch.Generator().manual_seed(3)
    teacher = 3 * torch.randn(5, 4, generator=generator)
    student_a = torch.randn(5, 4, generator=generator).requires_grad_()
    student_b = student_a.detach().clone().requires_grad_()
    listnet = ListNet(temperature_teacher, temperature_student)(student_a, teacher)
    kl = ListwiseKL(temperature_teacher, temperature_student)(student_b, teacher)
    teacher_entropy = sum(entropy(softmax([t / temperature_teacher for t in row])) for row in teacher.tolist()) / 5
    assert listnet.item() == pytest.approx(kl.item() + teacher_entropy, rel=1e-5)
    listnet.backward()
    kl.backward()
    assert student_a.grad is not None and student_b.grad is not None
    torch.testing.assert_close(student_a.grad, student_b.grad)


def test_gradient_is_student_minus_teacher_probabilities() -> None:
    student = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    ListNet(temperature_student=2.0)(student, teacher).backward()
    q0, p0 = softmax([0.0, 0.5, 0.0]), softmax([2.0, 0.0, 0.0])
    q1, p1 = softmax([0.5, 0.0, 1.0]), [1 / 3] * 3
    # d/ds_j = (q_j - p_j) / (tau * B) with tau = 2 and B = 2
    rows = ((q0, p0), (q1, p1))
    expected = torch.tensor([[(q - p) / (2.0 * 2) for q, p in zip(qs, ps, strict=True)] for qs, ps in rows])
    assert student.grad is not None
    torch.testing.assert_close(student.grad, expected)


def test_raising_the_teachers_favourite_lowers_the_loss() -> None:
    student = torch.tensor([[0.0, 1.0, 0.5]], requires_grad=True)
    teacher = torch.tensor([[3.0, 0.0, 0.0]], requires_grad=True)  # the teacher prefers doc 0
    loss = ListNet()(student, teacher)
    loss.backward()
    assert student.grad is not None
    assert student.grad[0, 0] < 0
    assert bool((student.grad[0, 1:] > 0).all())
    assert teacher.grad is None
    with torch.no_grad():
        assert ListNet()(student + torch.tensor([[0.1, 0.0, 0.0]]), teacher) < loss


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
@pytest.mark.parametrize("side", ["temperature_teacher", "temperature_student"])
def test_non_positive_temperature_is_rejected(side: str, bad: float) -> None:
    with pytest.raises(ValueError, match=side):
        ListNet(**{side: bad})


def test_wrong_shapes_and_nan_teacher_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        ListNet()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        ListNet()(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2 columns"):
        ListNet()(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"finite.*\[1\]"):
        ListNet()(torch.zeros(2, 2), torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))


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


def test_equals_sentence_transformers_listnet() -> None:
    """ST's cross-encoder ListNetLoss is CE(softmax(labels), softmax(logits)): ListNet at temperatures 1."""
    from sentence_transformers.cross_encoder.losses import ListNetLoss

    generator = torch.Generator().manual_seed(4)
    student = torch.randn(4, 5, generator=generator)
    teacher = 3 * torch.randn(4, 5, generator=generator)
    inputs = [[str(b) for b in range(4)], [[str(j) for j in range(5)] for _ in range(4)]]
    theirs = ListNetLoss(ScoreLookupCrossEncoder(student))(inputs, list(teacher))  # type: ignore[arg-type]
    torch.testing.assert_close(ListNet()(student, teacher), theirs)
