"""PairwiseCrossEncoderTeacher on tiny pairwise models (the stage: tests/stages/test_score_pairwise.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import pairwise_model

from retrodistill.data.collections import Collection, load_beir
from retrodistill.teachers.pairwise import PAIRWISE_TEACHERS, PairwiseCrossEncoderTeacher, symmetrise


@pytest.fixture(scope="module")
def teacher(pairwise_dir: Path) -> PairwiseCrossEncoderTeacher:
    return PairwiseCrossEncoderTeacher(str(pairwise_dir), batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def toy(toy_dir: Path) -> Collection:
    return load_beir(toy_dir, "train")


@pytest.fixture(scope="module")
def triples(toy: Collection) -> list[tuple[str, str, str]]:
    """36 (query, d_i, d_j) texts from the toy collection."""
    doc_ids = sorted(toy.corpus)
    queries = [toy.queries[q] for q in sorted(toy.queries)]
    return [
        (
            queries[k % len(queries)],
            toy.doc_text(doc_ids[k % len(doc_ids)]),
            toy.doc_text(doc_ids[(3 * k + 1) % len(doc_ids)]),
        )
        for k in range(36)
    ]


def _columns(triples: list[tuple[str, str, str]]) -> tuple[list[str], list[str], list[str]]:
    return [q for q, _, _ in triples], [a for _, a, _ in triples], [b for _, _, b in triples]


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_input_is_cls_query_sep_doc_i_sep_doc_j_sep(teacher: PairwiseCrossEncoderTeacher) -> None:
    tokenizer = teacher.encoder.tokenizer
    query, doc_i, doc_j = "cancer tumor biopsy?", "heart cardiac artery", "tumor study risk"
    features = teacher.features(query, doc_i, doc_j)
    q, a, b = _ids(tokenizer, query), _ids(tokenizer, doc_i), _ids(tokenizer, doc_j)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert features["input_ids"] == [cls, *q, sep, *a, sep, *b, sep]
    # [CLS] q [SEP] in segment 0; d_i [SEP] and d_j [SEP] in segment 1 (the model has 2 token types).
    assert features["token_type_ids"] == [0] * (len(q) + 2) + [1] * (len(a) + 1) + [1] * (len(b) + 1)
    swapped = teacher.features(query, doc_j, doc_i)
    assert swapped["input_ids"] == [cls, *q, sep, *b, sep, *a, sep]


def test_three_token_types_when_the_model_has_them(tiny_bert_dir: Path, tmp_path: Path) -> None:
    model = pairwise_model(tiny_bert_dir, tmp_path, type_vocab_size=3)
    duo = PairwiseCrossEncoderTeacher(str(model), device="cpu")
    tokenizer = duo.encoder.tokenizer
    q, a, b = _ids(tokenizer, "cancer"), _ids(tokenizer, "tumor study"), _ids(tokenizer, "heart")
    types = duo.features("cancer", "tumor study", "heart")["token_type_ids"]
    assert types == [0] * (len(q) + 2) + [1] * (len(a) + 1) + [2] * (len(b) + 1)
    assert duo.describe()["token_types"] == [0, 1, 2]
    forced = PairwiseCrossEncoderTeacher(str(model), device="cpu", token_types=[0, 1, 1])
    assert forced.features("cancer", "tumor study", "heart")["token_type_ids"][-1] == 1
    with pytest.raises(ValueError, match="token_types"):
        PairwiseCrossEncoderTeacher(str(model), device="cpu", token_types=[0, 1, 3])


def test_truncation_caps_the_query_then_shares_the_rest_evenly(pairwise_dir: Path) -> None:
    small = PairwiseCrossEncoderTeacher(str(pairwise_dir), max_length=40, query_max_tokens=5, device="cpu")
    tokenizer = small.encoder.tokenizer
    query = "cancer tumor biopsy heart cardiac artery risk study"
    long_a = "tumor study increase biopsy risk " * 8
    long_b = "heart cardiac artery patients effect " * 8
    q, a, b = _ids(tokenizer, query), _ids(tokenizer, long_a), _ids(tokenizer, long_b)
    assert len(q) > 5 and len(a) > 31 and len(b) > 31
    room = 40 - 4 - 5  # 4 special tokens, 5 query tokens: 31 for the documents, 15 each
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids = small.features(query, long_a, long_b)["input_ids"]
    assert ids == [cls, *q[:5], sep, *a[: room // 2], sep, *b[: room // 2], sep]
    short = "heart"
    ids = small.features(query, short, long_b)["input_ids"]
    s = _ids(tokenizer, short)
    assert ids == [cls, *q[:5], sep, *s, sep, *b[: room - len(s)], sep]  # the long one takes what is left
    assert len(ids) == 40
    swapped = small.features(query, long_b, short)["input_ids"]
    assert swapped == [cls, *q[:5], sep, *b[: room - len(s)], sep, *s, sep]


def test_probabilities_equal_a_direct_forward_pass(
    teacher: PairwiseCrossEncoderTeacher, pairwise_dir: Path, triples: list[tuple[str, str, str]]
) -> None:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    queries, docs_i, docs_j = _columns(triples)
    probs = teacher.score(queries, docs_i, docs_j)
    assert probs.dtype == np.float32 and probs.shape == (len(triples),)
    assert np.all((probs >= 0) & (probs <= 1))

    # Independently: the tokenizer's own pair encoding of (q, "d_i [SEP] d_j") is the same input.
    tokenizer = AutoTokenizer.from_pretrained(pairwise_dir)
    model = BertForSequenceClassification.from_pretrained(pairwise_dir).eval()
    features = tokenizer(
        queries, [f"{a} [SEP] {b}" for a, b in zip(docs_i, docs_j, strict=True)], padding=True, return_tensors="pt"
    )
    assert features["input_ids"].shape[1] < 128  # nothing truncated, so the inputs must agree exactly
    with torch.inference_mode():
        reference = torch.sigmoid(model(**features).logits[:, 0]).numpy()
    assert reference.std() > 0.05  # the comparison is not vacuous
    np.testing.assert_allclose(probs, reference, rtol=0, atol=1e-5)


def test_two_logit_model_gives_the_softmax_of_class_one(
    tiny_bert_dir: Path, tmp_path: Path, triples: list[tuple[str, str, str]]
) -> None:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    model_dir = pairwise_model(tiny_bert_dir, tmp_path, num_labels=2, seed=4)
    two = PairwiseCrossEncoderTeacher(str(model_dir), device="cpu")
    assert two.describe()["probability"] == "softmax(logits)[1]"
    queries, docs_i, docs_j = _columns(triples[:8])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    features = tokenizer(
        queries, [f"{a} [SEP] {b}" for a, b in zip(docs_i, docs_j, strict=True)], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        reference = torch.softmax(model(**features).logits, dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(two.score(queries, docs_i, docs_j), reference, rtol=0, atol=1e-5)


def test_batches_and_duplicates_do_not_change_probabilities(
    pairwise_dir: Path, teacher: PairwiseCrossEncoderTeacher, triples: list[tuple[str, str, str]]
) -> None:
    queries, docs_i, docs_j = _columns(triples)
    budget = PairwiseCrossEncoderTeacher(str(pairwise_dir), batch_size=64, max_tokens_per_batch=90, device="cpu")
    np.testing.assert_allclose(
        budget.score(queries, docs_i, docs_j), teacher.score(queries, docs_i, docs_j), rtol=0, atol=1e-5
    )
    varied = [("cancer tumor", "tumor study " * k, "heart " * (k % 4 + 1)) for k in range(1, 14)]  # 13 lengths
    doubled = varied + varied[::-1]
    shapes: list[tuple[int, int]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        shapes.append(tuple(kwargs["input_ids"].shape))

    hook = teacher.encoder.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        probs = teacher.score(*_columns(doubled))
    finally:
        hook.remove()
    assert [rows for rows, _ in shapes] == [8, 5]  # 13 distinct triples scored once, batch_size 8
    widths = [width for _, width in shapes]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]  # longest first
    np.testing.assert_array_equal(probs[:13], probs[13:][::-1])
    assert len(set(probs[:13].tolist())) == 13
    assert teacher.score([], [], []).shape == (0,)
    with pytest.raises(ValueError, match="2 queries but 1 documents"):
        teacher.score(["a", "b"], ["c", "d"], ["e"])


def test_symmetrise_averages_both_orders_into_exact_complements() -> None:
    rng = np.random.default_rng(0)
    p_ij, p_ji = rng.random(1000).astype(np.float32), rng.random(1000).astype(np.float32)
    sym_ij, sym_ji = symmetrise(p_ij, p_ji)
    assert sym_ij.dtype == sym_ji.dtype == np.float32
    assert np.all(sym_ij.astype(np.float64) + sym_ji.astype(np.float64) == 1.0)
    expected = (p_ij.astype(np.float64) + 1 - p_ji.astype(np.float64)) / 2
    np.testing.assert_allclose(sym_ij, expected, rtol=0, atol=1e-7)
    # A teacher without position bias (p_ji = 1 - p_ij) is left as it is.
    np.testing.assert_allclose(symmetrise(p_ij, 1 - p_ij)[0], p_ij, rtol=0, atol=1e-7)
    assert symmetrise(np.array([1.0]), np.array([0.5]))[0].tolist() == [(1.0 + 1 - 0.5) / 2]


def test_the_raw_model_has_a_position_bias(
    teacher: PairwiseCrossEncoderTeacher, triples: list[tuple[str, str, str]]
) -> None:
    queries, docs_i, docs_j = _columns(triples)
    forward, backward = teacher.score(queries, docs_i, docs_j), teacher.score(queries, docs_j, docs_i)
    assert np.abs(forward + backward - 1).max() > 0.01  # why orders: symmetrised is the default
    sym_ij, sym_ji = symmetrise(forward, backward)
    assert np.all(sym_ij.astype(np.float64) + sym_ji == 1.0)


def test_describe_identifies_the_probabilities(teacher: PairwiseCrossEncoderTeacher) -> None:
    info = teacher.describe()
    assert info["name"] == "pairwise-cross-encoder"
    assert info["probability"] == "sigmoid(logit[0])"
    assert info["input"] == "[CLS] q [SEP] d_i [SEP] d_j [SEP]"
    assert info["token_types"] == [0, 1, 1]
    assert info["query_max_tokens"] == 62
    assert info["max_length"] == 128  # capped at the tiny model's max_position_embeddings
    assert info["revision"].startswith("sha256:") and info["device"] == "cpu"
    assert "score" not in info  # the pointwise field would be wrong here


def test_built_from_the_registry_and_invalid_settings_refused(
    pairwise_dir: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    built = PAIRWISE_TEACHERS.build("pairwise-cross-encoder", {"model": str(pairwise_dir), "device": "cpu"})
    assert isinstance(built, PairwiseCrossEncoderTeacher)
    with pytest.raises(ValueError, match="no parameter"):
        PAIRWISE_TEACHERS.build("pairwise-cross-encoder", {"model": str(pairwise_dir), "score_logit": 0})
    with pytest.raises(ValueError, match="query_max_tokens"):
        PairwiseCrossEncoderTeacher(str(pairwise_dir), device="cpu", query_max_tokens=0)
    with pytest.raises(ValueError, match="no room"):
        PairwiseCrossEncoderTeacher(str(pairwise_dir), device="cpu", max_length=6)
    three = pairwise_model(tiny_bert_dir, tmp_path, num_labels=3)
    with pytest.raises(ValueError, match="3 output logits; a pairwise teacher needs 1"):
        PairwiseCrossEncoderTeacher(str(three), device="cpu")
