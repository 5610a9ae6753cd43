"""InfoNCE and TCT in-batch KL: formula values, gradients, checks, and agreement with ST's MNRL."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from retrodistill.losses import LOSSES, InBatchKL, InfoNCE, ListwiseKL
from retrodistill.losses import in_batch as in_batch_module
from retrodistill.train.st_loss import in_batch_scores


def test_registered_with_their_parameters() -> None:
    assert LOSSES.get("infonce") is InfoNCE
    assert LOSSES.get("in-batch-kl") is InBatchKL
    assert LOSSES.build("infonce", {"scale": 10}).config() == {
        "scale": 10,
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    assert InBatchKL(temperature_teacher=2.0).config()["temperature_teacher"] == 2.0
    assert "1807.03748" in InfoNCE().citation
    assert "repl4nlp" in InBatchKL().citation


def test_docstring_examples() -> None:
    assert doctest.testmod(in_batch_module).failed == 0


def test_infonce_is_the_mean_cross_entropy_against_each_positive() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0], [0.5, 1.0, -1.0]])
    positive = torch.tensor([0, 1])
    scale = 2.0
    row_0 = math.log(math.exp(2 * 2.0) + math.exp(2 * 0.0) + math.exp(2 * 1.0)) - 2 * 2.0
    row_1 = math.log(math.exp(2 * 0.5) + math.exp(2 * 1.0) + math.exp(2 * -1.0)) - 2 * 1.0
    assert InfoNCE(scale=scale)(scores, positive).item() == pytest.approx((row_0 + row_1) / 2)


def test_infonce_gradient_raises_the_positive_and_lowers_the_negatives() -> None:
    scores = torch.tensor([[0.2, 0.5, -0.1]], requires_grad=True)
    loss = InfoNCE(scale=3.0)(scores, torch.tensor([0]))
    loss.backward()
    assert scores.grad is not None
    # d/ds = scale * (softmax(scale * s) - onehot(positive)) / B
    expected = 3.0 * (torch.softmax(3.0 * scores.detach(), dim=1) - torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(scores.grad, expected)
    assert scores.grad[0, 0] < 0 and (scores.grad[0, 1:] > 0).all()


def test_infonce_student_normalisation_removes_offset_and_scale() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    loss = InfoNCE(scale=1.0, student_normalization="zscore")
    assert loss(scores, torch.tensor([0])).item() == pytest.approx(loss(10 * scores + 3, torch.tensor([0])).item())


@pytest.mark.parametrize(
    ("scores", "positive", "match"),
    [
        (torch.zeros(3), torch.tensor([0]), r"\(B, M\)"),
        (torch.zeros(2, 1), torch.tensor([0, 0]), "M >= 2"),
        (torch.zeros(2, 3), torch.tensor([0]), r"shape \(2,\)"),
        (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "integers"),
        (torch.zeros(2, 3), torch.tensor([0, 3]), r"\[0, 3\)"),
        (torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1]), "floating-point"),
    ],
)
def test_infonce_rejects_bad_inputs(scores: torch.Tensor, positive: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        InfoNCE()(scores, positive)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_infonce_scale_must_be_positive_and_finite(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        InfoNCE(scale=scale)


def test_infonce_has_no_teacher_side() -> None:
    with pytest.raises(ValueError, match="teacher_normalization must be 'none'"):
        InfoNCE(teacher_normalization="zscore")


@pytest.mark.parametrize("negatives", [0, 2])
@pytest.mark.parametrize(("similarity", "scale"), [("cosine", 20.0), ("dot", 1.0)])
def test_infonce_equals_sentence_transformers_mnrl(negatives: int, similarity: str, scale: float) -> None:
    """MNRL on embeddings equals InfoNCE on our in-batch scores of the same embeddings."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.util import cos_sim, dot_score

    generator = torch.Generator().manual_seed(0)
    batch, dim = 5, 8
    query = torch.randn(batch, dim, generator=generator)
    columns = [torch.randn(batch, dim, generator=generator) for _ in range(1 + negatives)]
    theirs = MultipleNegativesRankingLoss(
        model=None,  # type: ignore[arg-type]  # compute_loss_from_embeddings never touches it
        scale=scale,
        similarity_fct=cos_sim if similarity == "cosine" else dot_score,
    ).compute_loss_from_embeddings([query, *columns], None)  # type: ignore[arg-type]

    documents = torch.stack(columns, dim=1)  # (B, 1+N, D)
    if negatives:
        scores, positive = in_batch_scores(query, documents, similarity, scale=1.0)
        assert scores.shape == (batch, batch * (1 + negatives))
        torch.testing.assert_close(positive, torch.arange(batch))
        torch.testing.assert_close(InfoNCE(scale=scale)(scores, positive), theirs)
    else:  # MNRL also takes (anchor, positive) pairs; the in-batch scores are then B x B
        scores = query @ columns[0].T if similarity == "dot" else cos_sim(query, columns[0])
        torch.testing.assert_close(InfoNCE(scale=scale)(scores, torch.arange(batch)), theirs)


def test_in_batch_scores_put_document_column_j_of_row_r_at_j_times_b_plus_r() -> None:
    query = torch.eye(3)  # (B=3, D=3)
    documents = torch.arange(3 * 2 * 3, dtype=torch.float32).reshape(3, 2, 3)  # (B, 1+N=2, D)
    scores, positive = in_batch_scores(query, documents, "dot", scale=2.0)
    for r in range(3):
        for j in range(2):
            torch.testing.assert_close(scores[:, j * 3 + r], 2.0 * documents[r, j])  # q_b = e_b picks coordinate b
    torch.testing.assert_close(positive, torch.tensor([0, 1, 2]))


def test_in_batch_kl_is_listwise_kl_over_the_batch() -> None:
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(3, 12, generator=generator)
    teacher = 4 * torch.randn(3, 12, generator=generator)
    ours = InBatchKL(temperature_teacher=2.0)(student, teacher)
    torch.testing.assert_close(ours, ListwiseKL(temperature_teacher=2.0)(student, teacher))
    p = torch.softmax(teacher / 2.0, dim=1)
    q = torch.softmax(student, dim=1)
    torch.testing.assert_close(ours, (p * (p.log() - q.log())).sum(1).mean())


def test_in_batch_kl_gradient_follows_the_teacher() -> None:
    student = torch.zeros(1, 3, requires_grad=True)
    teacher = torch.tensor([[3.0, 0.0, 0.0]])
    InBatchKL()(student, teacher).backward()
    assert student.grad is not None
    assert student.grad[0, 0] < 0 and (student.grad[0, 1:] > 0).all()  # raise the teacher's favourite


def test_in_batch_kl_checks() -> None:
    with pytest.raises(ValueError, match=r"finite.*\[1\]"):
        InBatchKL()(torch.zeros(2, 4), torch.tensor([[0.0, 1, 2, 3], [0, math.nan, 0, 0]]))
    with pytest.raises(ValueError, match="one shape"):
        InBatchKL()(torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature_student"):
        InBatchKL(temperature_student=0.0)
