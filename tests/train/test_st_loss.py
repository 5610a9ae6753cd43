"""StudentDistillationLoss: the adapter between SentenceTransformerTrainer and the pure losses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retrodistill.losses import (
    AdaptiveMarginSelfDistillation,
    CombinedLoss,
    DistillationLoss,
    EmbeddingDistillation,
    InBatchKL,
    InfoNCE,
    ListwiseKL,
    MarginMSE,
)
from retrodistill.train.examples import TeacherEmbeddings, TeacherTable, build_teacher_table
from retrodistill.train.st_loss import StudentDistillationLoss, in_batch_scores

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

QUERIES = ["what is dense retrieval", "how do cats sleep", "which teacher scores passages"]
DOCUMENTS = [  # columns doc_0 (the positive) … doc_2, one row per query
    ["dense retrieval encodes passages", "cats sleep a lot", "a teacher scores passages"],
    ["bm25 counts terms", "dogs bark", "students learn"],
    ["the weather is nice", "cats nap in the sun during the day", "scores"],
]
TEACHER = torch.tensor([[9.0, 1.0, -2.0], [4.0, 4.5, 0.0], [3.0, -1.0, 2.0]])  # (B=3, 1+N=3)


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


# --- the other objectives: label layouts, in-batch scores, teacher tables, embeddings --------------

QUERY_IDS = ["q0", "q1", "q2"]
DOC_IDS = [[f"d{r}{j}" for j in range(3)] for r in range(3)]  # row r's documents doc_0 … doc_2


def cross_score(query_row: int, doc_row: int) -> float:
    """The test teacher's score of every (query, document) pair of the table below."""
    return 0.5 * query_row - 0.25 * doc_row + (2.0 if doc_row // 3 == query_row else 0.0)


def table(*, drop: tuple[str, str] | None = None, teacher_dim: int | None = None) -> TeacherTable:
    """A TeacherTable over QUERY_IDS and the nine documents: every pair scored, with embeddings if asked."""
    doc_ids = sorted(d for row in DOC_IDS for d in row)  # d00 … d22: row r * 3 + j
    scores = {
        (q, d): cross_score(qi, di) for qi, q in enumerate(QUERY_IDS) for di, d in enumerate(doc_ids) if (q, d) != drop
    }
    embeddings = None
    if teacher_dim is not None:
        generator = np.random.default_rng(0)
        embeddings = TeacherEmbeddings(
            Path("."),
            {},
            {"queries": QUERY_IDS, "documents": doc_ids},
            {
                "queries": generator.standard_normal((3, teacher_dim)).astype(np.float32),
                "documents": generator.standard_normal((9, teacher_dim)).astype(np.float32),
            },
        )
    return build_teacher_table(QUERY_IDS, doc_ids, scores, embeddings)


def id_labels(teacher: TeacherTable) -> torch.Tensor:
    """The (B, 2+N) id labels of the QUERIES/DOCUMENTS rows."""
    query_row, doc_row = teacher.query_rows(), teacher.doc_rows()
    return torch.tensor([[query_row[QUERY_IDS[r]], *(doc_row[d] for d in DOC_IDS[r])] for r in range(3)])


def encoded(student: SentenceTransformer) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D) query and (B, 1+N, D) document embeddings, as encode() gives them."""
    query = student.encode(QUERIES, convert_to_tensor=True)
    documents = torch.stack([student.encode(column, convert_to_tensor=True) for column in DOCUMENTS], dim=1)
    return query, documents


def test_teacher_free_losses_need_no_labels(student: SentenceTransformer) -> None:
    student.eval()
    adapter = StudentDistillationLoss(student, InfoNCE(scale=20.0), similarity="cosine")
    with torch.no_grad():
        actual = adapter(features(student), None)
        also_with_scores = adapter(features(student), TEACHER)  # a label column is simply not used
    query, documents = encoded(student)
    scores, positive = in_batch_scores(query, documents, "cosine", 1.0)
    torch.testing.assert_close(actual, InfoNCE(scale=20.0)(scores, positive), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(also_with_scores, actual)
    self_distill = StudentDistillationLoss(student, AdaptiveMarginSelfDistillation())
    with torch.no_grad():
        torch.testing.assert_close(
            self_distill(features(student), None),
            AdaptiveMarginSelfDistillation()(query, documents),
            rtol=1e-4,
            atol=1e-5,
        )


def test_combined_returns_each_weighted_term(student: SentenceTransformer) -> None:
    student.eval()
    loss = CombinedLoss(terms=[{"name": "margin-mse"}, {"name": "infonce", "weight": 0.1, "params": {"scale": 20}}])
    adapter = StudentDistillationLoss(student, loss, similarity="cosine")
    with torch.no_grad():
        components = adapter(features(student), TEACHER)
    assert isinstance(components, dict) and list(components) == ["loss_margin-mse", "loss_infonce"]
    query, documents = encoded(student)
    scores = F.cosine_similarity(query[:, None], documents, dim=-1)  # (B, 1+N)
    torch.testing.assert_close(components["loss_margin-mse"], MarginMSE()(scores, TEACHER), rtol=1e-4, atol=1e-5)
    in_batch, positive = in_batch_scores(query, documents, "cosine", 1.0)
    expected = 0.1 * InfoNCE(scale=20.0)(in_batch, positive)
    torch.testing.assert_close(components["loss_infonce"], expected, rtol=1e-4, atol=1e-5)


def test_in_batch_kl_looks_every_in_batch_pair_up_in_the_table(student: SentenceTransformer) -> None:
    student.eval()
    teacher = table()
    labels = id_labels(teacher)
    adapter = StudentDistillationLoss(student, InBatchKL(temperature_teacher=2.0), similarity="dot", teacher=teacher)
    with torch.no_grad():
        actual = adapter(features(student), labels)
    query, documents = encoded(student)
    scores, _ = in_batch_scores(query, documents, "dot", 1.0)  # column j * B + r holds row r's doc_j
    doc_rows = [labels[r, 1 + j].item() for j in range(3) for r in range(3)]
    expected_teacher = torch.tensor([[cross_score(int(labels[b, 0]), d) for d in doc_rows] for b in range(3)])
    expected = InBatchKL(temperature_teacher=2.0)(scores, expected_teacher)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_in_batch_kl_names_the_missing_pairs_and_how_to_score_them(student: SentenceTransformer) -> None:
    teacher = table(drop=("q0", "d21"))  # query 0 against row 2's doc_1
    adapter = StudentDistillationLoss(student, InBatchKL(), teacher=teacher)
    with pytest.raises(ValueError, match=r"none for 1 of the 27 pairs.*\(q0, d21\).*score-teacher"):
        adapter(features(student), id_labels(teacher))


def test_score_losses_read_their_scores_from_id_labels_too(student: SentenceTransformer) -> None:
    student.eval()
    teacher = table()
    labels = id_labels(teacher)
    adapter = StudentDistillationLoss(student, MarginMSE(), teacher=teacher)
    own = torch.tensor([[cross_score(int(labels[r, 0]), int(d)) for d in labels[r, 1:]] for r in range(3)])
    with torch.no_grad():
        torch.testing.assert_close(
            adapter(features(student), labels),
            StudentDistillationLoss(student, MarginMSE())(features(student), own),
        )


def test_embedding_loss_learns_a_projection_when_dimensions_differ(student: SentenceTransformer) -> None:
    student.eval()
    teacher = table(teacher_dim=5)
    adapter = StudentDistillationLoss(student, EmbeddingDistillation(), teacher=teacher)
    assert isinstance(adapter.projection, torch.nn.Linear)
    assert (adapter.projection.in_features, adapter.projection.out_features) == (32, 5)
    assert any(p is adapter.projection.weight for p in adapter.parameters())  # the trainer's optimizer sees it
    labels = id_labels(teacher)
    with torch.no_grad():
        actual = adapter(features(student), labels)
        query, documents = encoded(student)
        texts = torch.cat([query[:, None], documents], dim=1).flatten(0, 1)  # (B * (2+N), 32), row by row
        assert teacher.query_embeddings is not None and teacher.doc_embeddings is not None
        rows = labels.numpy()
        targets = np.concatenate([teacher.query_embeddings[rows[:, :1]], teacher.doc_embeddings[rows[:, 1:]]], axis=1)
        expected = EmbeddingDistillation()(adapter.projection(texts), torch.from_numpy(targets.reshape(-1, 5)))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_projection_settings(student: SentenceTransformer) -> None:
    assert StudentDistillationLoss(student, EmbeddingDistillation(), teacher=table(teacher_dim=32)).projection is None
    forced = StudentDistillationLoss(student, EmbeddingDistillation(projection="linear"), teacher=table(teacher_dim=32))
    assert isinstance(forced.projection, torch.nn.Linear)
    with pytest.raises(ValueError, match="32 dimensions, the teacher's 5"):
        StudentDistillationLoss(student, EmbeddingDistillation(projection="none"), teacher=table(teacher_dim=5))


def test_the_corpus_stage_batch_holds_documents_only(student: SentenceTransformer) -> None:
    student.eval()
    teacher = table(teacher_dim=32)
    adapter = StudentDistillationLoss(student, EmbeddingDistillation("cosine"), teacher=teacher)
    column = [row[0] for row in DOCUMENTS]  # doc_0 of each row: d00, d10, d20
    rows = torch.tensor([[teacher.doc_rows()[DOC_IDS[r][0]]] for r in range(3)])
    with torch.no_grad():
        actual = adapter([student.preprocess(column)], rows)
    embeddings = student.encode(column, convert_to_tensor=True)
    assert teacher.doc_embeddings is not None
    expected = EmbeddingDistillation("cosine")(embeddings, torch.from_numpy(teacher.doc_embeddings[rows[:, 0].numpy()]))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="documents only.*margin-mse"):
        StudentDistillationLoss(student, MarginMSE())([student.preprocess(column)], TEACHER[:, :1])


def test_label_layouts_are_checked(student: SentenceTransformer) -> None:
    with pytest.raises(ValueError, match="TeacherTable"):
        StudentDistillationLoss(student, InBatchKL())
    with pytest.raises(ValueError, match="holds none"):
        StudentDistillationLoss(student, EmbeddingDistillation(), teacher=table())
    in_batch_kl = StudentDistillationLoss(student, InBatchKL(), teacher=table())
    with pytest.raises(ValueError, match="score labels cannot carry"):
        in_batch_kl(features(student), TEACHER)
    with pytest.raises(ValueError, match=r"expected labels of shape \(B, 4\), got \(3, 3\)"):
        in_batch_kl(features(student), id_labels(table())[:, :3])
    with pytest.raises(ValueError, match="row ids into a TeacherTable"):
        StudentDistillationLoss(student, MarginMSE())(features(student), id_labels(table()))


@pytest.mark.parametrize("loss", [MarginMSE(), ListwiseKL(temperature_teacher=2.0)])
def test_under_bf16_autocast_the_scores_and_the_loss_stay_fp32(
    student: SentenceTransformer, loss: DistillationLoss
) -> None:
    """bf16 keeps 8 significant bits: scored in it, Margin-MSE's small differences were rounded away."""
    from sentence_transformers.base.losses.merged_forward import embed_columns

    student.eval()
    adapter = StudentDistillationLoss(student, loss, similarity="dot", scale=1.0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        actual = adapter(features(student), TEACHER)
        embeddings = embed_columns(student, features(student))  # the encoder's own mixed precision
    query = embeddings[0].float()
    scores = torch.stack([(query * column.float()).sum(-1) for column in embeddings[1:]], dim=1)
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, loss(scores, TEACHER), rtol=1e-5, atol=1e-6)
