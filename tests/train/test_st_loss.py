"""StudentDistillationLoss: the adapter between SentenceTransformerTrainer and the pure losses."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
import torch.nn.functional as F

from retrodistill.losses import DistillationLoss, ListwiseKL, MarginMSE
from retrodistill.train.st_loss import StudentDistillationLoss

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

QUERIES = ["what is dense retrieval", "how do cats sleep", "which teacher scores passages"]
DOCUMENTS = [  # columns doc_0 (the positive) … doc_2, one row per query
    ["dense retrieval encodes passages", "cats sleep a lot", "a teacher scores passages"],
    ["bm25 counts terms", "dogs bark", "students learn"],
    ["the weather is nice", "cats nap in the sun during the day", "scores"],
]
TEACHER = torch.tensor([[9.0, 1.0, -2.0], [4.0, 4.5, 0.0], [3.0, -1.0, 2.0]])  # (B=3, 1+N=3)


@pytest.fixture(scope="module")
def loaded_student(tiny_st_dir: Path) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_st_dir), device="cpu")


@pytest.fixture()
def student(loaded_student: SentenceTransformer) -> SentenceTransformer:
    return copy.deepcopy(loaded_student)


def features(model: SentenceTransformer) -> list[dict[str, torch.Tensor]]:
    """The tokenized columns query, doc_0, …, doc_2, as the trainer's collator builds them."""
    return [model.preprocess(column) for column in (QUERIES, *DOCUMENTS)]


@pytest.mark.parametrize(
    ("loss", "similarity", "scale"),
    [(MarginMSE(), "dot", 1.0), (ListwiseKL(temperature_teacher=2.0), "cosine", 20.0)],
)
def test_equals_the_pure_loss_on_encoded_scores(
    student: SentenceTransformer, loss: DistillationLoss, similarity: str, scale: float
) -> None:
    student.eval()  # no dropout, so encode() and the training forward agree
    adapter = StudentDistillationLoss(student, loss, similarity=similarity, scale=scale)
    with torch.no_grad():
        actual = adapter(features(student), TEACHER)

    query = student.encode(QUERIES, convert_to_tensor=True)  # (B, D)
    columns = []
    for column in DOCUMENTS:
        document = student.encode(column, convert_to_tensor=True)  # (B, D)
        if similarity == "dot":
            columns.append((query * document).sum(-1))
        else:
            columns.append(F.cosine_similarity(query, document, dim=-1))
    scores = scale * torch.stack(columns, dim=1)  # (B, 1+N)
    torch.testing.assert_close(actual, loss(scores, TEACHER), rtol=1e-4, atol=1e-5)


def test_backward_reaches_the_student(student: SentenceTransformer) -> None:
    student.train()
    adapter = StudentDistillationLoss(student, MarginMSE())
    adapter(features(student), TEACHER).backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_labels_must_hold_one_score_per_document_column(student: SentenceTransformer) -> None:
    adapter = StudentDistillationLoss(student, MarginMSE())
    margins = TEACHER[:, :1] - TEACHER[:, 1:]  # ST's other label convention, (B, N): not ours
    with pytest.raises(ValueError, match=r"expected labels of shape \(B, 3\), got \(3, 2\)"):
        adapter(features(student), margins)
    with pytest.raises(ValueError, match="'label' column"):
        adapter(features(student), None)
    with pytest.raises(ValueError, match="N >= 1"):
        adapter(features(student)[:2], TEACHER[:, :1])


def test_rejects_bad_arguments(student: SentenceTransformer) -> None:
    with pytest.raises(ValueError, match="similarity"):
        StudentDistillationLoss(student, MarginMSE(), similarity="euclidean")
    with pytest.raises(ValueError, match="scale"):
        StudentDistillationLoss(student, MarginMSE(), scale=0.0)
    with pytest.raises(TypeError, match="DistillationLoss"):
        StudentDistillationLoss(student, torch.nn.MSELoss())  # type: ignore[arg-type]


def test_config_and_citation_pass_through(student: SentenceTransformer) -> None:
    loss = ListwiseKL(temperature_teacher=2.0)
    adapter = StudentDistillationLoss(student, loss, similarity="cosine", scale=20.0)
    assert adapter.get_config_dict() == {
        "loss": "listwise-kl",
        "temperature_teacher": 2.0,
        "temperature_student": 1.0,
        "scale_by_temperature_squared": False,
        "teacher_normalization": "none",
        "student_normalization": "none",
        "similarity": "cosine",
        "scale": 20.0,
    }
    assert adapter.citation == loss.citation


def test_one_trainer_step(student: SentenceTransformer, tmp_path: Path) -> None:
    """The dataset layout the adapter documents trains under SentenceTransformerTrainer."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    dataset = Dataset.from_dict(
        {
            "query": QUERIES,
            **{f"doc_{j}": [row[j] for row in DOCUMENTS] for j in range(3)},
            "label": TEACHER.tolist(),  # one list of 1+N teacher scores per row
        }
    )
    before = [p.detach().clone() for p in student.parameters()]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=3,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    loss = StudentDistillationLoss(student, MarginMSE())
    result = SentenceTransformerTrainer(model=student, args=args, train_dataset=dataset, loss=loss).train()
    assert result.global_step == 1
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, student.parameters(), strict=True))
