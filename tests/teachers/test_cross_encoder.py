"""CrossEncoderTeacher against sentence-transformers' CrossEncoder on the tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrodistill.data.collections import load_beir
from retrodistill.teachers import TEACHERS
from retrodistill.teachers.cross_encoder import CrossEncoderTeacher, _batches


@pytest.fixture(scope="module")
def toy_pairs(toy_dir: Path) -> list[tuple[str, str]]:
    """Every toy query with 6 documents of varied length: 72 pairs."""
    collection = load_beir(toy_dir, "train")
    doc_ids = sorted(collection.corpus)
    queries = sorted(collection.queries.items())
    return [
        (text, collection.doc_text(doc_ids[(i * 5 + j) % len(doc_ids)]))
        for i, (_, text) in enumerate(queries)
        for j in range(6)
    ]


@pytest.fixture(scope="module")
def teacher(tiny_cross_encoder_dir: Path) -> CrossEncoderTeacher:
    return CrossEncoderTeacher(str(tiny_cross_encoder_dir), batch_size=8, device="cpu")


def _reference(model_dir: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(model_dir), activation_fn=torch.nn.Identity(), device="cpu")
    return model.predict(pairs, batch_size=8, activation_fn=torch.nn.Identity())


@pytest.mark.parametrize("linear_backend", ["auto", "torch"])
def test_scores_equal_sentence_transformers_predict(
    tiny_cross_encoder_dir: Path, toy_pairs: list[tuple[str, str]], linear_backend: str
) -> None:
    teacher = CrossEncoderTeacher(str(tiny_cross_encoder_dir), device="cpu", linear_backend=linear_backend)
    scores = teacher.score([q for q, _ in toy_pairs], [d for _, d in toy_pairs])
    assert scores.dtype == np.float32
    assert scores.shape == (len(toy_pairs),)
    reference = _reference(tiny_cross_encoder_dir, toy_pairs)
    assert reference.std() > 0.1  # the comparison is not vacuous
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-5)


def test_token_budget_batches_give_the_same_scores(
    tiny_cross_encoder_dir: Path, teacher: CrossEncoderTeacher, toy_pairs: list[tuple[str, str]]
) -> None:
    budget = CrossEncoderTeacher(
        str(tiny_cross_encoder_dir), batch_size=64, max_tokens_per_batch=60, device="cpu"
    )
    queries, docs = [q for q, _ in toy_pairs], [d for _, d in toy_pairs]
    np.testing.assert_allclose(budget.score(queries, docs), teacher.score(queries, docs), rtol=0, atol=1e-5)


def test_duplicates_get_identical_scores_and_order_is_kept(
    teacher: CrossEncoderTeacher, toy_pairs: list[tuple[str, str]]
) -> None:
    pairs = toy_pairs[:10]
    doubled = pairs + pairs[::-1]
    scores = teacher.score([q for q, _ in doubled], [d for _, d in doubled])
    np.testing.assert_array_equal(scores[:10], scores[10:][::-1])
    alone = teacher.score([q for q, _ in pairs], [d for _, d in pairs])
    np.testing.assert_allclose(scores[:10], alone, rtol=0, atol=1e-6)
    assert len(set(scores[:10].tolist())) == 10  # distinct pairs really got distinct scores


def test_empty_input_and_mismatched_lengths(teacher: CrossEncoderTeacher) -> None:
    assert teacher.score([], []).shape == (0,)
    with pytest.raises(ValueError, match="2 queries but 1 documents"):
        teacher.score(["a", "b"], ["c"])


def test_describe_identifies_the_scores(teacher: CrossEncoderTeacher) -> None:
    info = teacher.describe()
    assert info["name"] == "cross-encoder"
    assert info["revision"].startswith("sha256:")  # a local directory: hash of its weights
    assert info["max_length"] == 128  # capped at the tiny model's max_position_embeddings
    assert info["dtype"] == "fp32"
    assert info["device"] == "cpu"
    assert info["score"] == "logit[0]"


def test_built_from_the_registry(tiny_cross_encoder_dir: Path) -> None:
    teacher = TEACHERS.build("cross-encoder", {"model": str(tiny_cross_encoder_dir), "device": "cpu"})
    assert isinstance(teacher, CrossEncoderTeacher)
    with pytest.raises(ValueError, match="no parameter"):
        TEACHERS.build("cross-encoder", {"model": str(tiny_cross_encoder_dir), "activation": "sigmoid"})


def test_two_logit_model_scores_the_log_odds_of_class_one(
    tiny_cross_encoder_dir: Path, tmp_path: Path, toy_pairs: list[tuple[str, str]]
) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(tiny_cross_encoder_dir, num_labels=2)
    torch.manual_seed(2)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir)
    tokenizer.save_pretrained(tmp_path)
    model = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    pairs = toy_pairs[:5]
    with torch.inference_mode():
        features = tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, return_tensors="pt")
        logits = model(**features).logits

    queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
    log_odds = CrossEncoderTeacher(str(tmp_path), device="cpu")
    assert log_odds.describe()["score"] == "logit[1] - logit[0]"
    np.testing.assert_allclose(log_odds.score(queries, docs), logits[:, 1] - logits[:, 0], atol=1e-5)
    column = CrossEncoderTeacher(str(tmp_path), device="cpu", score_logit=0)
    np.testing.assert_allclose(column.score(queries, docs), logits[:, 0], atol=1e-5)


def test_invalid_parameters(tiny_cross_encoder_dir: Path) -> None:
    with pytest.raises(ValueError, match="fp16"):
        CrossEncoderTeacher(str(tiny_cross_encoder_dir), device="cpu", dtype="fp16")
    with pytest.raises(ValueError, match="linear_backend"):
        CrossEncoderTeacher(str(tiny_cross_encoder_dir), device="cpu", linear_backend="mkl")
    with pytest.raises(ValueError, match="score_logit"):
        CrossEncoderTeacher(str(tiny_cross_encoder_dir), device="cpu", score_logit=1)


def test_batches_are_neighbours_in_length_within_both_limits() -> None:
    lengths = np.array([5, 40, 7, 40, 12, 3, 30, 8])
    batches = list(_batches(lengths, batch_size=3, max_tokens=80))
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(len(lengths)))  # each pair exactly once
    assert list(lengths[order]) == sorted(lengths, reverse=True)  # longest first
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 80
    assert [len(b) for b in batches] == [2, 2, 3, 1]  # 2×40, 30 and 12 (2×30), 8, 7, 5, then 3


def test_pickled_weights_are_refused(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file

    shutil.copytree(tiny_cross_encoder_dir, tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    torch.save(load_file(weights), tmp_path / "model" / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(OSError, match="no safetensors weights"):
        CrossEncoderTeacher(str(tmp_path / "model"), device="cpu")
