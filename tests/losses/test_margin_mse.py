"""MarginMSE: values from the formula, gradients, input checks, and agreement with sentence-transformers."""

from __future__ import annotations

import doctest

import pytest
import torch

from retrodistill.losses import LOSSES, MarginMSE
from retrodistill.losses import margin_mse as margin_mse_module


def test_registered_under_its_name() -> None:
    assert LOSSES.get("margin-mse") is MarginMSE
    assert MarginMSE.name == "margin-mse"
    assert MarginMSE().config() == {"teacher_normalization": "none", "student_normalization": "none"}
    assert "2010.02666" in MarginMSE().citation


def test_docstring_examples() -> None:
    assert doctest.testmod(margin_mse_module).failed == 0


def test_one_negative() -> None:
    loss = MarginMSE()(torch.tensor([[2.0, 1.0]]), torch.tensor([[3.0, 0.5]]))
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(((2 - 1) - (3 - 0.5)) ** 2)


def test_several_negatives_and_rows_are_averaged() -> None:
    student = torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.5, -1.0]])
    teacher = torch.tensor([[3.0, 0.5, 3.0], [1.0, 1.0, 1.0]])
    expected = (
        ((2 - 1) - (3 - 0.5)) ** 2
        + ((2 - 0) - (3 - 3)) ** 2
        + ((0.5 - 1.5) - (1 - 1)) ** 2
        + ((0.5 - (-1)) - (1 - 1)) ** 2
    ) / 4
    assert MarginMSE()(student, teacher).item() == pytest.approx(expected)


def test_margins_are_signed() -> None:
    # The teacher ranks the negative above the positive (margin -2); a student margin of +2 is wrong.
    wrong_sign = MarginMSE()(torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 2.0]]))
    assert wrong_sign.item() == pytest.approx(((1 - (-1)) - (0 - 2)) ** 2)
    assert MarginMSE()(torch.tensor([[-1.0, 1.0]]), torch.tensor([[0.0, 2.0]])).item() == 0.0


def test_only_margins_matter_not_offsets() -> None:
    student = torch.tensor([[2.0, 1.0, 0.0]])
    teacher = torch.tensor([[12.0, 11.0, 10.0]])
    assert MarginMSE()(student, teacher).item() == 0.0


def test_gradient_raises_the_positive_when_the_student_margin_is_too_small() -> None:
    student = torch.tensor([[2.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[3.0, 0.5]], requires_grad=True)
    MarginMSE()(student, teacher).backward()
    margin_error = (2 - 1) - (3 - 0.5)  # student margin below the teacher's
    assert student.grad is not None
    torch.testing.assert_close(student.grad, torch.tensor([[2 * margin_error, -2 * margin_error]]))
    assert student.grad[0, 0] < 0  # a gradient step raises the positive's score
    assert teacher.grad is None  # teacher scores are targets
    with torch.no_grad():
        before = MarginMSE()(student, teacher)
        after = MarginMSE()(student + torch.tensor([[0.1, 0.0]]), teacher)
    assert after < before


def test_half_precision_student_is_computed_in_float32() -> None:
    loss = MarginMSE()(torch.tensor([[2.0, 1.0]], dtype=torch.bfloat16), torch.tensor([[3.0, 0.5]]))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(((2 - 1) - (3 - 0.5)) ** 2)


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"),
    [
        ((4,), (4,)),
        ((4, 3), (4, 2)),
        ((4, 3), (3, 3)),
        ((4, 1), (4, 1)),
        ((0, 3), (0, 3)),
        ((2, 2, 2), (2, 2, 2)),
    ],
)
def test_wrong_shapes_are_named(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape") as error:
        MarginMSE()(torch.zeros(student_shape), torch.zeros(teacher_shape))
    assert str(student_shape) in str(error.value)
    assert str(teacher_shape) in str(error.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_teacher_scores_are_rejected(bad: float) -> None:
    teacher = torch.tensor([[3.0, 0.5], [1.0, bad]])
    with pytest.raises(ValueError, match=r"finite.*\[1\]"):
        MarginMSE()(torch.zeros(2, 2), teacher)


def test_build_rejects_unknown_parameters() -> None:
    with pytest.raises(ValueError, match="no parameter"):
        LOSSES.build("margin-mse", {"temperature": 2.0})


@pytest.mark.parametrize("negatives", [1, 3])
@pytest.mark.parametrize("labels_as", ["scores", "margins"])
def test_equals_sentence_transformers_margin_mse(negatives: int, labels_as: str) -> None:
    """ST's MarginMSELoss on embeddings equals ours on the dot-product scores of the same embeddings."""
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss

    generator = torch.Generator().manual_seed(0)
    batch_size, dim = 5, 8
    query = torch.randn(batch_size, dim, generator=generator)
    documents = [torch.randn(batch_size, dim, generator=generator) for _ in range(1 + negatives)]
    teacher = 3 * torch.randn(batch_size, 1 + negatives, generator=generator)

    student = torch.stack([(query * document).sum(-1) for document in documents], dim=1)  # (B, 1+N)
    ours = MarginMSE()(student, teacher)

    # ST takes either the 1+N teacher scores or the N teacher margins t_0 - t_i as labels.
    labels = teacher if labels_as == "scores" else teacher[:, :1] - teacher[:, 1:]
    # compute_loss_from_embeddings is ST's forward after embedding; the model is never touched.
    theirs = MarginMSELoss(model=None).compute_loss_from_embeddings([query, *documents], labels)  # type: ignore[arg-type]
    torch.testing.assert_close(ours, theirs)
