"""EmbeddingDistillation: formula values, gradients, checks, and agreement with ST's EmbedDistillLoss."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from retrodistill.losses import LOSSES, EmbeddingDistillation
from retrodistill.losses import embedding as embedding_module


def test_registered_with_its_parameters() -> None:
    assert LOSSES.get("embedding") is EmbeddingDistillation
    assert LOSSES.build("embedding", {"distance": "cosine"}).config() == {
        "distance": "cosine",
        "projection": "auto",
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    assert "2301.12005" in EmbeddingDistillation().citation


def test_docstring_examples() -> None:
    assert doctest.testmod(embedding_module).failed == 0


def test_mse_is_the_mean_over_every_coordinate() -> None:
    student = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    teacher = torch.tensor([[0.0, 2.0], [3.0, 1.0]])
    expected = ((1 - 0) ** 2 + (2 - 2) ** 2 + (0 - 3) ** 2 + (-1 - 1) ** 2) / 4
    assert EmbeddingDistillation("mse")(student, teacher).item() == pytest.approx(expected)


def test_cosine_is_one_minus_the_mean_cosine() -> None:
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    teacher = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    expected = ((1 - 1.0) + (1 - (-1 / math.sqrt(2)))) / 2
    assert EmbeddingDistillation("cosine")(student, teacher).item() == pytest.approx(expected)
    # Cosine ignores the length of either vector.
    assert EmbeddingDistillation("cosine")(5 * student, teacher).item() == pytest.approx(expected)


def test_gradient_moves_the_student_towards_the_teacher() -> None:
    student = torch.tensor([[1.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 3.0]], requires_grad=True)
    EmbeddingDistillation()(student, teacher).backward()
    assert student.grad is not None
    torch.testing.assert_close(student.grad, 2 * (student.detach() - teacher.detach()) / 2)  # 2 (e - f) / (K D)
    assert teacher.grad is None  # the teacher's embeddings are targets


def test_zscore_normalisation_standardises_each_vector() -> None:
    teacher = torch.tensor([[1.0, 2.0, 3.0]])
    loss = EmbeddingDistillation(student_normalization="zscore", teacher_normalization="zscore")
    assert loss(10 * teacher + 4, teacher).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("distance", ["mse", "cosine"])
def test_equals_sentence_transformers_embed_distill(distance: str) -> None:
    from sentence_transformers.sentence_transformer.losses import EmbedDistillLoss

    generator = torch.Generator().manual_seed(0)
    columns = [torch.randn(4, 6, generator=generator) for _ in range(3)]  # query, doc_0, doc_1
    teachers = [torch.randn(4, 6, generator=generator) for _ in range(3)]
    theirs = EmbedDistillLoss(model=None, distance_metric=distance).compute_loss_from_embeddings(  # type: ignore[arg-type]
        columns, teachers
    )
    # ST averages per column; with equal-sized columns that is our mean over all K = 3 * 4 texts.
    ours = EmbeddingDistillation(distance)(torch.cat(columns), torch.cat(teachers))
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"), [((4,), (4,)), ((2, 3), (2, 4)), ((0, 3), (0, 3)), ((2, 2, 2), (2, 2, 2))]
)
def test_wrong_shapes_are_named(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(K, D\)") as error:
        EmbeddingDistillation()(torch.zeros(student_shape), torch.zeros(teacher_shape))
    assert str(student_shape) in str(error.value)


def test_non_finite_teacher_embeddings_and_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\[1\].*NaN"):
        EmbeddingDistillation()(torch.zeros(2, 2), torch.tensor([[0.0, 1.0], [math.nan, 0.0]]))
    with pytest.raises(ValueError, match="distance"):
        EmbeddingDistillation("l1")
    with pytest.raises(ValueError, match="projection"):
        EmbeddingDistillation(projection="mlp")
    with pytest.raises(ValueError, match="floating-point"):
        EmbeddingDistillation()(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2))
