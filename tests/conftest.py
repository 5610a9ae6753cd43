"""Shared fixtures: the toy BEIR collection and tiny models built offline from configs.

Tiny models are built once per session in a temp directory (never in tests/) and are loaded by
path, so no test touches the network.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
TOY = FIXTURES / "toy"
SHARED = Path(os.environ.get("RETRODISTILL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _toy_vocab() -> list[str]:
    words: set[str] = set()
    for name in ("corpus.jsonl", "queries.jsonl"):
        for line in (TOY / name).read_text().splitlines():
            obj = json.loads(line)
            for field in ("title", "text"):
                words.update(obj.get(field, "").lower().replace(".", " ").replace("?", " ").split())
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ",", "!", "-"]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    return special + sorted(words) + letters + [f"##{c}" for c in letters]


@pytest.fixture(autouse=True, scope="session")
def _isolated_run_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep evaluation's run cache out of the user's home directory."""
    os.environ["RETRODISTILL_CACHE"] = str(tmp_path_factory.mktemp("retrodistill-cache"))


@pytest.fixture(scope="session")
def toy_dir() -> Path:
    return TOY


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer BERT (hidden 32, init std 0.5) with a WordPiece vocabulary of the toy collection's words."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    out = tmp_path_factory.mktemp("tiny-bert")
    # transformers 5 ignores ``vocab_file`` for BertTokenizerFast; a vocab dict is read reliably.
    words = _toy_vocab()
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True, model_max_length=128)
    assert tokenizer.tokenize("cancer tumor") == ["cancer", "tumor"]
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
        initializer_range=0.5,  # BERT's 0.02 would give every toy pair nearly the same score
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_st_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers bi-encoder (tiny BERT + mean pooling + normalisation)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    out = tmp_path_factory.mktemp("tiny-st")
    transformer = Transformer(str(tiny_bert_dir), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu").save(str(out))
    return out


@pytest.fixture(scope="module")
def loaded_student(tiny_st_dir: Path) -> Any:
    """The tiny bi-encoder loaded once per test module (copy it before training: :func:`student`)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_st_dir), device="cpu")


@pytest.fixture()
def student(loaded_student: Any) -> Any:
    """A fresh copy of the tiny bi-encoder, for a test that changes its weights."""
    import copy

    return copy.deepcopy(loaded_student)


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face sequence-classification model (one logit) on the tiny BERT."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-ce")
    config = BertConfig.from_pretrained(tiny_bert_dir, num_labels=1)
    torch.manual_seed(1)
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    return out


@pytest.fixture()
def toy_copy(tmp_path: Path) -> Path:
    """A writable copy of the toy collection."""
    target = tmp_path / "toy"
    shutil.copytree(TOY, target)
    return target


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def pairwise_model(
    tiny_bert_dir: Path, out: Path, num_labels: int = 1, type_vocab_size: int = 2, seed: int = 3
) -> Path:
    """A BertForSequenceClassification on the tiny BERT, for pairwise teachers (query, d_i, d_j inputs)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(tiny_bert_dir, num_labels=num_labels, type_vocab_size=type_vocab_size)
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def pairwise_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-logit BertForSequenceClassification (2 token types) on the tiny BERT: the pairwise teacher."""
    return pairwise_model(tiny_bert_dir, tmp_path_factory.mktemp("tiny-duo"))
