"""ColBERTTeacher on tiny checkpoints built offline in the Stanford ColBERT and the PyLate layouts.

The reference scores are computed here from first principles: input ids written token by token
([CLS], marker, word pieces, [SEP], [MASK] padding), a plain ``BertModel`` loaded from the
checkpoint's tensors, the projection matrix applied by hand, and MaxSim as a double loop.
"""

from __future__ import annotations

import json
import shutil
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.data.collections import Collection, load_beir
from retrodistill.teachers import TEACHERS
from retrodistill.teachers.colbert import ColBERTTeacher, maxsim

HIDDEN, DIM = 32, 16
TOY = Path(__file__).parents[1] / "fixtures" / "toy"
STANFORD_METADATA = {
    "query_token_id": "[unused0]",
    "doc_token_id": "[unused1]",
    "query_maxlen": 16,  # not the defaults (32, 220): the test sees that the metadata is read
    "doc_maxlen": 40,
    "dim": DIM,
    "mask_punctuation": True,
    "attend_to_mask_tokens": False,
    "similarity": "cosine",
    "interaction": "colbert",
    "meta": {"version": "colbert-v0.4"},
}
PYLATE_CONFIG = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 20,
    "document_length": 36,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
    "skiplist_words": ["."],  # not string.punctuation: "?" stays in documents
    "similarity_fn_name": "MaxSim",
}


def _vocab(markers: list[str]) -> dict[str, int]:
    """A WordPiece vocabulary of the toy collection's words, with ``markers`` right after [PAD] (as in BERT's)."""
    words: set[str] = set()
    for name in ("corpus.jsonl", "queries.jsonl"):
        for line in (TOY / name).read_text().splitlines():
            record = json.loads(line)
            words.update(record.get("title", "").lower().split() + record["text"].lower().split())
    words = {w.strip(".?") for w in words} - {""}
    special = ["[PAD]", *markers, "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ",", "!", "-"]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    return {w: i for i, w in enumerate(special + sorted(words) + letters + [f"##{c}" for c in letters])}


def _bert(vocab_size: int, seed: int) -> Any:
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        initializer_range=0.5,  # BERT's 0.02 would make every pair score about the same
    )
    torch.manual_seed(seed)
    return BertModel(config, add_pooling_layer=False)


@pytest.fixture(scope="module")
def stanford_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``HF_ColBERT.save_pretrained`` + ``save_for_checkpoint`` write: BERT under ``bert.``, ``linear.weight``."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertTokenizer

    out = tmp_path_factory.mktemp("stanford-colbert")
    tokenizer = BertTokenizer(vocab=_vocab(["[unused0]", "[unused1]"]), do_lower_case=True, model_max_length=64)
    bert = _bert(len(tokenizer), seed=0)
    bert.config.architectures = ["HF_ColBERT"]
    tensors = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    tensors["linear.weight"] = torch.randn(DIM, HIDDEN, generator=torch.Generator().manual_seed(1))
    save_file(tensors, out / "model.safetensors")
    bert.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "artifact.metadata").write_text(json.dumps(STANFORD_METADATA))
    return out


@pytest.fixture(scope="module")
def pylate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What PyLate's ``ColBERT.save`` writes: a sentence-transformers folder with a Dense module."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertTokenizer

    out = tmp_path_factory.mktemp("pylate-colbert")
    tokenizer = BertTokenizer(vocab=_vocab([]), do_lower_case=True, model_max_length=64)
    tokenizer.add_tokens(["[Q] ", "[D] "])  # PyLate adds its prefixes and resizes the embeddings
    bert = _bert(len(tokenizer), seed=2)
    bert.save_pretrained(out)
    tokenizer.save_pretrained(out)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 35, "do_lower_case": False}))
    (out / "config_sentence_transformers.json").write_text(json.dumps(PYLATE_CONFIG))
    (out / "1_Dense").mkdir()
    dense = {"in_features": HIDDEN, "out_features": DIM, "bias": False}
    (out / "1_Dense" / "config.json").write_text(
        json.dumps({**dense, "activation_function": "torch.nn.modules.linear.Identity"})
    )
    weight = torch.randn(DIM, HIDDEN, generator=torch.Generator().manual_seed(3))
    save_file({"linear.weight": weight}, out / "1_Dense" / "model.safetensors")
    return out


def _variant(source: Path, target: Path, file: str, **changes: Any) -> Path:
    """A copy of a checkpoint directory with some settings of its JSON ``file`` changed."""
    shutil.copytree(source, target)
    settings = json.loads((target / file).read_text())
    (target / file).write_text(json.dumps({**settings, **changes}))
    return target


@pytest.fixture(scope="module")
def toy() -> Collection:
    return load_beir(TOY, "train")


@pytest.fixture(scope="module")
def pairs(toy: Collection) -> list[tuple[str, str]]:
    """Each toy query with 4 documents: 48 pairs, documents shared across queries, text with punctuation."""
    doc_ids = sorted(toy.corpus)
    queries = sorted(toy.queries.values())
    return [(q, toy.doc_text(doc_ids[(i + 3 * j) % len(doc_ids)])) for i, q in enumerate(queries) for j in range(4)]


# ---- The reference: ids written token by token, a plain BertModel, MaxSim as a loop -------------


class Reference:
    """Token vectors of a checkpoint computed without the teacher's code."""

    def __init__(self, root: Path, layout: str) -> None:
        import torch
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, BertConfig, BertModel

        self.tokenizer = AutoTokenizer.from_pretrained(root)
        tensors = load_file(root / "model.safetensors")
        if layout == "stanford":
            self.weight = tensors.pop("linear.weight").double()
            tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
            settings = json.loads((root / "artifact.metadata").read_text())
            markers = (settings["query_token_id"], settings["doc_token_id"])
            self.query_maxlen, self.doc_maxlen = settings["query_maxlen"], settings["doc_maxlen"]
            self.skip = {self.tokenizer.convert_tokens_to_ids(p) for p in string.punctuation}
            self.skip.add(self.tokenizer.pad_token_id)
            self.attend_masks = settings["attend_to_mask_tokens"]
            self.expand = True
        else:
            self.weight = load_file(root / "1_Dense" / "model.safetensors")["linear.weight"].double()
            settings = json.loads((root / "config_sentence_transformers.json").read_text())
            markers = (settings["query_prefix"], settings["document_prefix"])
            self.query_maxlen, self.doc_maxlen = settings["query_length"], settings["document_length"]
            self.skip = {self.tokenizer.convert_tokens_to_ids(w) for w in settings["skiplist_words"]}
            self.attend_masks = settings["attend_to_expansion_tokens"]
            self.expand = settings["do_query_expansion"]
        self.markers = {
            side: self.tokenizer.convert_tokens_to_ids(m) for side, m in zip(("q", "d"), markers, strict=True)
        }
        self.model = BertModel(BertConfig.from_pretrained(root), add_pooling_layer=False).eval()
        self.model.load_state_dict(tensors)
        self.torch = torch

    def ids(self, text: str, side: str) -> tuple[list[int], list[int]]:
        """``[CLS] marker pieces… [SEP]`` (+ [MASK] padding for queries) and the attention mask."""
        t = self.tokenizer
        maxlen = self.query_maxlen if side == "q" else self.doc_maxlen
        pieces = t.convert_tokens_to_ids(t.tokenize(text))[: maxlen - 3]
        ids = [t.cls_token_id, self.markers[side], *pieces, t.sep_token_id]
        attention = [1] * len(ids)
        if side == "q" and self.expand:
            padding = maxlen - len(ids)
            ids += [t.mask_token_id] * padding
            attention += [int(self.attend_masks)] * padding
        return ids, attention

    def vectors(self, text: str, side: str, skip: bool = True) -> np.ndarray:
        """L2-normalised projected token vectors, float64; documents without skiplist tokens."""
        ids, attention = self.ids(text, side)
        with self.torch.no_grad():
            hidden = self.model(
                input_ids=self.torch.tensor([ids]), attention_mask=self.torch.tensor([attention])
            ).last_hidden_state[0]
        vectors = (hidden.double() @ self.weight.T).numpy()
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        if side == "d" and skip:
            vectors = vectors[[i not in self.skip for i in ids]]
        return vectors

    def score(self, query: str, doc: str, skip: bool = True) -> float:
        q, d = self.vectors(query, "q"), self.vectors(doc, "d", skip)
        return sum(max(float(q_i @ d_j) for d_j in d) for q_i in q)


@pytest.fixture(scope="module", params=["stanford", "pylate"])
def layout(request: pytest.FixtureRequest, stanford_dir: Path, pylate_dir: Path) -> tuple[str, Path]:
    return request.param, stanford_dir if request.param == "stanford" else pylate_dir


def _spy_encoder(teacher: ColBERTTeacher) -> list[tuple[np.ndarray, np.ndarray]]:
    """Record the ``(input_ids, attention_mask)`` of every encoder forward pass."""
    calls: list[tuple[np.ndarray, np.ndarray]] = []
    encoder = teacher.model["encoder"]
    original: Callable[..., Any] = encoder.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append((kwargs["input_ids"].numpy().copy(), kwargs["attention_mask"].numpy().copy()))
        return original(*args, **kwargs)

    encoder.forward = spy
    return calls


# ---- Tests --------------------------------------------------------------------------------------


def test_scores_equal_maxsim_computed_by_hand(layout: tuple[str, Path], pairs: list[tuple[str, str]]) -> None:
    name, root = layout
    reference = Reference(root, name)
    teacher = ColBERTTeacher(str(root), batch_size=5, device="cpu")
    # Documents scored against themselves too: their "." tokens would be the best match of the query's.
    subset = pairs[::3] + [(d, d) for _, d in pairs[:12:3]]
    scores = teacher.score([q for q, _ in subset], [d for _, d in subset])
    expected = np.array([reference.score(q, d) for q, d in subset])
    assert scores.dtype == np.float32 and scores.shape == (len(subset),)
    assert expected.std() > 0.1  # the comparison is not vacuous
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    with_punctuation = np.array([reference.score(q, d, skip=False) for q, d in subset])
    assert np.abs(with_punctuation - expected).max() > 1e-3  # nor is the skiplist


def test_loads_both_layouts_with_their_settings(stanford_dir: Path, pylate_dir: Path) -> None:
    stanford = ColBERTTeacher(str(stanford_dir), device="cpu").describe()
    assert stanford["layout"] == "stanford"
    assert stanford["max_length"] == {"query": 16, "document": 40}
    assert stanford["markers"] == {"query": ["[unused0]", 1], "document": ["[unused1]", 2]}
    assert (stanford["dim"], stanford["query_expansion"], stanford["attend_to_mask_tokens"]) == (DIM, True, False)

    pylate = ColBERTTeacher(str(pylate_dir), device="cpu")
    info = pylate.describe()
    q_id, d_id = pylate.tokenizer.convert_tokens_to_ids(["[Q] ", "[D] "])
    assert info["layout"] == "pylate"
    assert info["max_length"] == {"query": 20, "document": 36}
    assert info["markers"] == {"query": ["[Q] ", q_id], "document": ["[D] ", d_id]}
    assert info["skiplist_ids"] == [pylate.tokenizer.convert_tokens_to_ids(".")]  # from skiplist_words
    for described in (stanford, info):
        assert described["name"] == "colbert" and described["revision"].startswith("sha256:")
        assert (described["dtype"], described["cache_dtype"], described["device"]) == ("fp32", "fp32", "cpu")


def test_lengths_can_be_overridden(stanford_dir: Path) -> None:
    teacher = TEACHERS.build(
        "colbert", {"model": str(stanford_dir), "query_maxlen": 10, "doc_maxlen": 12, "device": "cpu"}
    )
    assert teacher.describe()["max_length"] == {"query": 10, "document": 12}
    (query_ids, _), (doc_ids, _) = teacher.tokenize("query", ["x"])[0], teacher.tokenize("document", ["y " * 30])[0]
    assert (len(query_ids), len(doc_ids)) == (10, 12)
    with pytest.raises(ValueError, match="no parameter"):
        TEACHERS.build("colbert", {"model": str(stanford_dir), "similarity": "l2"})


def test_markers_follow_cls_and_queries_are_padded_with_mask(
    layout: tuple[str, Path], pairs: list[tuple[str, str]]
) -> None:
    name, root = layout
    teacher = ColBERTTeacher(str(root), device="cpu")
    calls = _spy_encoder(teacher)
    query, doc = "cancer tumor biopsy?", "cancer study. tumor, biopsy!"
    teacher.score([query], [doc])
    (q_ids, q_attention), (d_ids, d_attention) = calls  # queries are encoded first, then documents
    t = teacher.tokenizer
    pieces = t.convert_tokens_to_ids(t.tokenize(query))
    maxlen = teacher.conventions.query_maxlen
    real = len(pieces) + 3
    assert q_ids.shape == (1, maxlen)
    assert q_ids[0, :real].tolist() == [
        t.cls_token_id,
        teacher.describe()["markers"]["query"][1],
        *pieces,
        t.sep_token_id,
    ]
    assert q_ids[0, real:].tolist() == [t.mask_token_id] * (maxlen - real)  # query augmentation
    assert q_attention[0].tolist() == [1] * real + [0] * (maxlen - real)  # [MASK] not attended
    doc_pieces = t.convert_tokens_to_ids(t.tokenize(doc))
    assert d_ids[0].tolist() == [
        t.cls_token_id,
        teacher.describe()["markers"]["document"][1],
        *doc_pieces,
        t.sep_token_id,
    ]
    assert d_attention[0].tolist() == [1] * d_ids.shape[1]  # documents are neither padded nor augmented


def test_attend_to_mask_tokens_changes_attention_and_scores(
    stanford_dir: Path, tmp_path: Path, pairs: list[tuple[str, str]]
) -> None:
    attending_dir = _variant(stanford_dir, tmp_path / "attend", "artifact.metadata", attend_to_mask_tokens=True)
    attending = ColBERTTeacher(str(attending_dir), device="cpu")
    ids, attention = attending.tokenize("query", ["cancer tumor"])[0]
    assert (ids == attending.tokenizer.mask_token_id).sum() == 16 - 5 and attention.tolist() == [1] * 16
    queries, docs = [q for q, _ in pairs[:8]], [d for _, d in pairs[:8]]
    reference = Reference(attending_dir, "stanford")
    expected = [reference.score(q, d) for q, d in zip(queries, docs, strict=True)]
    np.testing.assert_allclose(attending.score(queries, docs), expected, rtol=1e-5, atol=1e-5)
    plain = ColBERTTeacher(str(stanford_dir), device="cpu")
    assert np.abs(plain.score(queries, docs) - np.asarray(expected)).max() > 1e-3


def test_pylate_without_query_expansion_keeps_queries_unpadded(
    pylate_dir: Path, tmp_path: Path, pairs: list[tuple[str, str]]
) -> None:
    plain_dir = _variant(
        pylate_dir, tmp_path / "no-expansion", "config_sentence_transformers.json", do_query_expansion=False
    )
    teacher = ColBERTTeacher(str(plain_dir), device="cpu")
    ids, attention = teacher.tokenize("query", ["cancer tumor"])[0]
    assert len(ids) == 5 and teacher.tokenizer.mask_token_id not in ids.tolist() and attention.tolist() == [1] * 5
    reference = Reference(plain_dir, "pylate")
    subset = pairs[:8]
    expected = [reference.score(q, d) for q, d in subset]
    np.testing.assert_allclose(
        teacher.score([q for q, _ in subset], [d for _, d in subset]), expected, rtol=1e-5, atol=1e-5
    )


def test_skiplist_tokens_are_removed_from_documents_only(layout: tuple[str, Path]) -> None:
    name, root = layout
    teacher = ColBERTTeacher(str(root), device="cpu")
    text = "cancer. tumor? biopsy."
    t = teacher.tokenizer
    pieces = t.tokenize(text)
    skipped = {".", "?"} if name == "stanford" else {"."}  # PyLate's skiplist_words here is ["."]
    (document,) = teacher.encode_documents([text])
    assert document.shape == (len(pieces) + 3 - sum(p in skipped for p in pieces), DIM)
    (query,) = teacher.encode_queries([text])
    assert query.shape == (teacher.conventions.query_maxlen, DIM)  # punctuation and [MASK] kept in queries
    np.testing.assert_allclose(np.linalg.norm(document, axis=1), 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(document, Reference(root, name).vectors(text, "d"), rtol=0, atol=1e-5)


def test_each_distinct_text_is_encoded_once(stanford_dir: Path, pairs: list[tuple[str, str]]) -> None:
    teacher = ColBERTTeacher(str(stanford_dir), batch_size=4, device="cpu")
    calls = _spy_encoder(teacher)
    queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
    first = teacher.score(queries[:20], docs[:20])
    second = teacher.score(queries, docs)  # the first 20 pairs' texts are cached
    np.testing.assert_array_equal(second[:20], first)
    assert len(set(docs)) < len(docs)  # documents repeat across queries
    assert sum(ids.shape[0] for ids, _ in calls) == len(set(queries)) + len(set(docs))


def test_scores_do_not_depend_on_how_pairs_are_split_or_ordered(pylate_dir: Path, pairs: list[tuple[str, str]]) -> None:
    queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
    whole = ColBERTTeacher(str(pylate_dir), batch_size=4, device="cpu").score(queries, docs)
    assert len(set(whole.tolist())) > len(pairs) // 2  # distinct pairs get distinct scores

    split = ColBERTTeacher(str(pylate_dir), batch_size=4, device="cpu")
    split.prepare(queries, docs)  # what the scoring loop does: one canonical encoding pass
    parts = [split.score(queries[i : i + 7], docs[i : i + 7]) for i in range(0, len(pairs), 7)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)

    order = np.random.default_rng(0).permutation(len(pairs))
    shuffled = ColBERTTeacher(str(pylate_dir), batch_size=4, device="cpu")
    np.testing.assert_array_equal(shuffled.score([queries[i] for i in order], [docs[i] for i in order]), whole[order])

    unprepared = ColBERTTeacher(str(pylate_dir), batch_size=4, device="cpu")  # other batches: rounding only
    parts = [unprepared.score(queries[i : i + 7], docs[i : i + 7]) for i in range(0, len(pairs), 7)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-5)


def test_interrupted_then_resumed_store_equals_uninterrupted(
    stanford_dir: Path, toy: Collection, tmp_path: Path
) -> None:
    from retrodistill.stages.score_teacher import score_pairs_to_store

    doc_ids = sorted(toy.corpus)
    pairs = sorted(
        {(q, doc_ids[(i * 3 + j) % len(doc_ids)]) for i, q in enumerate(sorted(toy.queries)) for j in range(7)}
    )
    doc_text = {d: toy.doc_text(d) for d in toy.corpus}
    options: dict[str, Any] = {"part_size": 10, "inputs": {"corpus": "sha256:c"}, "config": {}, "show_progress": False}

    def run(out: Path, **kwargs: Any) -> Any:
        teacher = ColBERTTeacher(str(stanford_dir), batch_size=3, device="cpu")
        return score_pairs_to_store(teacher, pairs, toy.queries, doc_text, out, **options, **kwargs)

    whole = run(tmp_path / "whole")
    run(tmp_path / "resumed", stop_after_parts=2)
    resumed = run(tmp_path / "resumed")
    assert resumed.table().equals(whole.table())
    assert resumed.fingerprint == whole.fingerprint


def test_pickled_weights_load_weights_only(stanford_dir: Path, tmp_path: Path, pairs: list[tuple[str, str]]) -> None:
    import torch
    from safetensors.torch import load_file

    target = tmp_path / "bin"
    shutil.copytree(stanford_dir, target)
    torch.save(load_file(target / "model.safetensors"), target / "pytorch_model.bin")
    (target / "model.safetensors").unlink()
    queries, docs = [q for q, _ in pairs[:6]], [d for _, d in pairs[:6]]
    from_bin = ColBERTTeacher(str(target), device="cpu").score(queries, docs)
    np.testing.assert_array_equal(from_bin, ColBERTTeacher(str(stanford_dir), device="cpu").score(queries, docs))


def test_fp16_cache_and_bf16_autocast_stay_close(stanford_dir: Path, pairs: list[tuple[str, str]]) -> None:
    queries, docs = [q for q, _ in pairs[:12]], [d for _, d in pairs[:12]]
    exact = ColBERTTeacher(str(stanford_dir), device="cpu").score(queries, docs)
    half_cache = ColBERTTeacher(str(stanford_dir), device="cpu", cache_dtype="fp16")
    assert half_cache.describe()["cache_dtype"] == "fp16"
    np.testing.assert_allclose(half_cache.score(queries, docs), exact, rtol=0, atol=16 * 2e-3)
    bf16 = ColBERTTeacher(str(stanford_dir), device="cpu", dtype="bf16").score(queries, docs)
    assert np.isfinite(bf16).all() and np.corrcoef(bf16, exact)[0, 1] > 0.9


def test_maxsim_is_the_sum_of_best_matches() -> None:
    rng = np.random.default_rng(0)
    query = rng.normal(size=(3, 4))
    docs = [rng.normal(size=(n, 4)) for n in (1, 5, 2)]
    expected = [sum(max(q @ d_j for d_j in d) for q in query) for d in docs]
    np.testing.assert_allclose(maxsim(query, docs), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="at least one token"):
        maxsim(query, [np.zeros((0, 4))])


def test_directories_of_neither_layout_are_refused(tiny_bert_dir: Path, tiny_st_dir: Path) -> None:
    for plain in (tiny_bert_dir, tiny_st_dir):  # a plain BERT; a sentence-transformers bi-encoder
        with pytest.raises(ValueError, match="neither a Stanford ColBERT checkpoint .* nor a PyLate model"):
            ColBERTTeacher(str(plain), device="cpu")


def test_invalid_checkpoints_and_parameters(stanford_dir: Path, pylate_dir: Path, tmp_path: Path) -> None:
    l2 = _variant(stanford_dir, tmp_path / "l2", "artifact.metadata", similarity="l2")
    with pytest.raises(ValueError, match="only similarity 'cosine'"):
        ColBERTTeacher(str(l2), device="cpu")
    unknown_prefix = _variant(pylate_dir, tmp_path / "prefix", "config_sentence_transformers.json", query_prefix="[QQ]")
    with pytest.raises(ValueError, match=r"query marker '\[QQ\]' is not a token"):
        ColBERTTeacher(str(unknown_prefix), device="cpu")
    broken = tmp_path / "broken"
    shutil.copytree(stanford_dir, broken)
    (broken / "artifact.metadata").write_text('{"query_maxlen": 32,\n "doc_maxlen": }')
    with pytest.raises(ValueError, match=r"artifact.metadata:2: malformed JSON"):
        ColBERTTeacher(str(broken), device="cpu")
    with pytest.raises(ValueError, match="fp16"):
        ColBERTTeacher(str(stanford_dir), device="cpu", dtype="fp16")
    with pytest.raises(ValueError, match="cache_dtype"):
        ColBERTTeacher(str(stanford_dir), device="cpu", cache_dtype="int8")
    with pytest.raises(ValueError, match="query_maxlen"):
        ColBERTTeacher(str(stanford_dir), device="cpu", query_maxlen=2)
    teacher = ColBERTTeacher(str(stanford_dir), device="cpu")
    assert teacher.score([], []).shape == (0,)
    with pytest.raises(ValueError, match="2 queries but 1 documents"):
        teacher.score(["a", "b"], ["c"])
