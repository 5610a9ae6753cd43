"""CrossEncoderTeacher against sentence-transformers' CrossEncoder on the tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrodistill import onednn_linear
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
def calm_cross_encoder_dir(tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cross-encoder with weights of std 0.2 instead of 0.5.

    At 0.5 (the shared fixture, chosen so toy scores spread) activations grow layer after layer and
    amplify any change of float evaluation order ~100× (1e-6 per element → 1e-4 in the scores); here
    scores still spread (std ~0.09) but rounding-level changes stay rounding-level, as on real models.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-ce-calm")
    config = BertConfig.from_pretrained(tiny_cross_encoder_dir, initializer_range=0.2)
    torch.manual_seed(1)
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_cross_encoder_dir).save_pretrained(out)
    return out


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
    budget = CrossEncoderTeacher(str(tiny_cross_encoder_dir), batch_size=64, max_tokens_per_batch=60, device="cpu")
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
    assert info["compile"] is False


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


def _bf16_representable(scores: np.ndarray) -> np.ndarray:
    import torch

    values = torch.from_numpy(scores)
    return (values.bfloat16().float() == values).numpy()


@pytest.mark.parametrize("linear_backend", ["auto", "torch"])
def test_bf16_on_cpu_ranks_like_fp32_and_keeps_an_fp32_head(
    calm_cross_encoder_dir: Path, toy_pairs: list[tuple[str, str]], linear_backend: str
) -> None:
    import torch
    from scipy.stats import spearmanr

    queries, docs = [q for q, _ in toy_pairs], [d for _, d in toy_pairs]
    fp32 = CrossEncoderTeacher(str(calm_cross_encoder_dir), device="cpu").score(queries, docs)
    teacher = CrossEncoderTeacher(
        str(calm_cross_encoder_dir), device="cpu", dtype="bf16", linear_backend=linear_backend
    )
    bf16 = teacher.score(queries, docs)
    native = onednn_linear._onednn_linear_problem(torch.bfloat16) is None
    expected = "onednn" if native and linear_backend == "auto" else "torch"
    assert teacher.linear_backend == expected
    # oneDNN path: the encoder itself is cast; autocast path: it stays fp32. The head is fp32 in both.
    encoder_dtype = torch.bfloat16 if expected == "onednn" else torch.float32
    assert {p.dtype for p in teacher.model.base_model.parameters()} == {encoder_dtype}
    assert teacher.model.classifier.weight.dtype == torch.float32
    assert bf16.dtype == np.float32
    assert fp32.std() > 0.05  # the ranking comparison is not vacuous
    assert spearmanr(bf16, fp32).statistic > 0.995
    diff = np.abs(bf16 - fp32).max()
    assert 1e-5 < diff < 0.2 * fp32.std()  # bf16 rounding: really low precision, still close
    # Scores come out of the fp32 head, not rounded to bf16's 8 significant bits (which makes lists tie).
    assert _bf16_representable(bf16).mean() < 0.5


def test_bf16_falls_back_to_autocast_without_native_bf16(
    calm_cross_encoder_dir: Path, toy_pairs: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    real = onednn_linear._onednn_linear_problem
    monkeypatch.setattr(
        onednn_linear,
        "_onednn_linear_problem",
        lambda dtype: "no native bf16 (simulated)" if dtype == torch.bfloat16 else real(dtype),
    )
    queries, docs = [q for q, _ in toy_pairs], [d for _, d in toy_pairs]
    fallback = CrossEncoderTeacher(str(calm_cross_encoder_dir), device="cpu", dtype="bf16")
    assert fallback.linear_backend == "torch"
    assert {p.dtype for p in fallback.model.parameters()} == {torch.float32}  # autocast, not a cast
    explicit = CrossEncoderTeacher(str(calm_cross_encoder_dir), device="cpu", dtype="bf16", linear_backend="torch")
    np.testing.assert_array_equal(fallback.score(queries, docs), explicit.score(queries, docs))
    with pytest.raises(ValueError, match="unavailable for bf16"):
        CrossEncoderTeacher(str(calm_cross_encoder_dir), device="cpu", dtype="bf16", linear_backend="onednn")


@pytest.mark.slow
def test_compile_gives_the_same_scores(calm_cross_encoder_dir: Path, toy_pairs: list[tuple[str, str]]) -> None:
    # Slow: inductor compiles the graph with and without an attention mask (~30 s on 2 CPU cores).
    queries, docs = [q for q, _ in toy_pairs], [d for _, d in toy_pairs]
    eager = CrossEncoderTeacher(str(calm_cross_encoder_dir), batch_size=8, device="cpu")
    compiled = CrossEncoderTeacher(str(calm_cross_encoder_dir), batch_size=8, device="cpu", compile=True)
    assert compiled.describe()["compile"] is True and eager.describe()["compile"] is False
    assert compiled.describe()["linear_backend"] == "inductor"
    expected = eager.score(queries, docs)
    assert expected.std() > 0.05
    np.testing.assert_allclose(compiled.score(queries, docs), expected, rtol=0, atol=1e-5)


def test_compile_takes_over_the_linear_layers(tiny_cross_encoder_dir: Path) -> None:
    with pytest.raises(ValueError, match="cannot be combined with compile"):
        CrossEncoderTeacher(str(tiny_cross_encoder_dir), device="cpu", linear_backend="onednn", compile=True)
    with pytest.raises(ValueError, match="not one of"):
        CrossEncoderTeacher(str(tiny_cross_encoder_dir), device="cpu", linear_backend="mkl", compile=True)
