"""The corpus-embedding cache: shards on disk, resume after a crash, length-sorted encoding, fp16."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.data.collections import Document
from retrodistill.data.embeddings import EmbeddingCache, cache_key, encoder_settings
from retrodistill.data.encoding import encode_corpus, iter_corpus_embeddings

ENCODER = {"kind": "dense", "id": "hash-encoder", "revision": "r1"}


def vector(text: str, dim: int = 4) -> np.ndarray:
    """A deterministic embedding of ``text`` (what the fake encoder returns for it)."""
    return np.random.default_rng(zlib.crc32(text.encode())).standard_normal(dim).astype(np.float32)


class HashEncoder:
    """A stand-in bi-encoder: one fixed vector per text; records each call; fails on call ``fail_on``."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def encode_document(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        if self.fail_on is not None and len(self.calls) + 1 == self.fail_on:
            raise RuntimeError("encoder crashed")
        self.calls.append(list(texts))
        return np.stack([vector(t) for t in texts])

    def encode_query(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        return np.stack([vector(t) for t in texts])


def make_corpus(n: int) -> dict[str, Document]:
    # Lengths vary within every shard, so longest-first order differs from corpus order.
    return {f"d{i}": Document(f"t{i}", "word " * ((i * 7) % 5)) for i in range(n)}


def expected(corpus: dict[str, Document]) -> np.ndarray:
    return np.stack([vector(doc.joined()) for doc in corpus.values()])


def open_cache(root: Path, corpus: dict[str, Document], **kwargs: Any) -> EmbeddingCache:
    return EmbeddingCache.open(root, ENCODER, "sha256:corpus", len(corpus), **kwargs)


def test_shards_hold_the_corpus_in_order(tmp_path: Path) -> None:
    corpus = make_corpus(10)
    cache = open_cache(tmp_path, corpus, shard_size=4)
    assert (cache.num_shards, cache.missing_shards(), cache.dim) == (3, [0, 1, 2], None)

    shards = list(iter_corpus_embeddings(HashEncoder(), corpus, cache))

    assert [len(s) for s in shards] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(shards), expected(corpus))
    assert cache.is_complete() and cache.dim == 4
    stored = np.concatenate(list(cache.iter_shards()))
    np.testing.assert_array_equal(stored, expected(corpus))
    assert isinstance(cache.read_shard(0), np.memmap)
    entry = json.loads((cache.path / "shards" / "000002.json").read_text())
    assert entry["start"] == 8 and entry["rows"] == 2 and entry["dim"] == 4 and entry["sha256"].startswith("sha256:")
    manifest = json.loads((cache.path / "manifest.json").read_text())
    assert manifest["documents"] == 10 and manifest["shard_size"] == 4 and manifest["encoder"] == ENCODER
    assert cache.path.name == cache_key(ENCODER, "sha256:corpus", "float32")


def test_each_shard_is_encoded_longest_first(tmp_path: Path) -> None:
    corpus = make_corpus(10)
    encoder = HashEncoder()
    list(iter_corpus_embeddings(encoder, corpus, open_cache(tmp_path, corpus, shard_size=5)))
    texts = [doc.joined() for doc in corpus.values()]
    assert len(encoder.calls) == 2
    for call, window in zip(encoder.calls, (texts[:5], texts[5:]), strict=True):
        assert sorted(call) == sorted(window)  # a shard is one window
        lengths = [len(t) for t in call]
        assert lengths == sorted(lengths, reverse=True)


def test_a_crashed_encoding_resumes_with_only_the_missing_shards(tmp_path: Path) -> None:
    corpus = make_corpus(23)
    crashing = HashEncoder(fail_on=4)  # shards 0, 1, 2 written, then the encoder dies on shard 3
    with pytest.raises(RuntimeError, match="crashed"):
        list(iter_corpus_embeddings(crashing, corpus, open_cache(tmp_path, corpus, shard_size=5)))
    cache = open_cache(tmp_path, corpus, shard_size=5)
    assert cache.missing_shards() == [3, 4]

    again = HashEncoder()
    shards = list(iter_corpus_embeddings(again, corpus, cache))

    texts = [doc.joined() for doc in corpus.values()]
    assert len(again.calls) == 2
    assert sorted(again.calls[0] + again.calls[1]) == sorted(texts[15:])  # shards 3 and 4, nothing else
    np.testing.assert_array_equal(np.concatenate(shards), expected(corpus))
    third = HashEncoder()
    list(iter_corpus_embeddings(third, corpus, cache))
    assert third.calls == []


def test_a_half_written_shard_counts_as_missing(tmp_path: Path) -> None:
    corpus = make_corpus(8)
    cache = open_cache(tmp_path, corpus, shard_size=4)
    list(iter_corpus_embeddings(HashEncoder(), corpus, cache))
    npy = cache.path / "shards" / "000001.npy"
    npy.write_bytes(npy.read_bytes()[:-8])  # truncated behind the cache's back
    assert cache.missing_shards() == [1]
    (cache.path / "shards" / "000000.json").unlink()  # crash between the .npy and its entry
    assert cache.missing_shards() == [0, 1]
    encoder = HashEncoder()
    resumed = np.concatenate(list(iter_corpus_embeddings(encoder, corpus, cache)))
    np.testing.assert_array_equal(resumed, expected(corpus))
    assert len(encoder.calls) == 2 and cache.verify() == []


def test_verify_finds_a_changed_shard(tmp_path: Path) -> None:
    corpus = make_corpus(8)
    cache = open_cache(tmp_path, corpus, shard_size=4)
    list(iter_corpus_embeddings(HashEncoder(), corpus, cache))
    npy = cache.path / "shards" / "000001.npy"
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    npy.write_bytes(bytes(data))
    assert cache.verify() == [1]


def test_fp16_stores_half_and_hands_out_the_same_values_before_and_after(tmp_path: Path) -> None:
    corpus = make_corpus(6)
    cache = open_cache(tmp_path, corpus, shard_size=4, dtype="float16")
    first = np.concatenate(list(iter_corpus_embeddings(HashEncoder(), corpus, cache)))
    second = np.concatenate(list(iter_corpus_embeddings(HashEncoder(fail_on=1), corpus, cache)))
    assert first.dtype == second.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, expected(corpus).astype(np.float16).astype(np.float32))
    assert cache.read_shard(0).dtype == np.float16
    assert cache.path != open_cache(tmp_path, corpus).path  # fp16 and fp32 are separate caches


def test_another_corpus_or_encoder_is_another_cache_and_a_mismatch_is_refused(tmp_path: Path) -> None:
    a = EmbeddingCache.open(tmp_path, ENCODER, "sha256:a", 5)
    assert EmbeddingCache.open(tmp_path, ENCODER, "sha256:b", 5).path != a.path
    assert EmbeddingCache.open(tmp_path, {**ENCODER, "revision": "r2"}, "sha256:a", 5).path != a.path
    with pytest.raises(ValueError, match="5 documents"):
        EmbeddingCache.open(tmp_path, ENCODER, "sha256:a", 6)
    with pytest.raises(ValueError, match="dtype"):
        EmbeddingCache.open(tmp_path, ENCODER, "sha256:a", 5, dtype="int8")
    with pytest.raises(ValueError, match="was made for 5"):
        list(iter_corpus_embeddings(HashEncoder(), make_corpus(4), a))
    with pytest.raises(ValueError, match=r"shape \(5, d\)"):
        a.write_shard(0, np.zeros((4, 3), np.float32))


def test_an_existing_cache_keeps_its_shard_size(tmp_path: Path) -> None:
    corpus = make_corpus(10)
    list(iter_corpus_embeddings(HashEncoder(), corpus, open_cache(tmp_path, corpus, shard_size=4)))
    reopened = open_cache(tmp_path, corpus, shard_size=100)
    assert reopened.shard_size == 4 and reopened.is_complete()
    assert EmbeddingCache.load(reopened.path).num_shards == 3


def test_ranks_encode_disjoint_shards(tmp_path: Path) -> None:
    corpus = make_corpus(10)
    cache = open_cache(tmp_path, corpus, shard_size=3)  # 4 shards
    rank0, rank1 = HashEncoder(), HashEncoder()
    encode_corpus(rank0, corpus, cache, rank=0, world_size=2)
    assert cache.missing_shards() == [1, 3]
    encode_corpus(rank1, corpus, cache, rank=1, world_size=2)
    assert cache.is_complete() and (len(rank0.calls), len(rank1.calls)) == (2, 2)
    np.testing.assert_array_equal(np.concatenate(list(cache.iter_shards())), expected(corpus))
    with pytest.raises(ValueError, match="rank"):
        encode_corpus(rank0, corpus, cache, rank=2, world_size=2)


def test_without_a_cache_shards_are_streamed(tmp_path: Path) -> None:
    corpus = make_corpus(7)
    shards = list(iter_corpus_embeddings(HashEncoder(), corpus, shard_size=3))
    assert [len(s) for s in shards] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(shards), expected(corpus))


def test_an_arrow_corpus_is_read_through_texts(tmp_path: Path) -> None:
    """A corpus with ``texts(rows)`` is asked for each shard's rows, never iterated."""
    base = make_corpus(5)

    class ArrowLike(dict[str, Document]):
        asked: list[list[int]] = []

        def texts(self, rows: np.ndarray) -> list[str]:
            self.asked.append(rows.tolist())
            return [self[f"d{r}"].joined() for r in rows.tolist()]

        def __iter__(self) -> Any:
            raise AssertionError("the corpus was iterated")

    corpus = ArrowLike(base)
    shards = list(iter_corpus_embeddings(HashEncoder(), corpus, shard_size=2))
    assert corpus.asked == [[0, 1], [2, 3], [4]]
    np.testing.assert_array_equal(np.concatenate(shards), expected(base))


def test_encoder_settings_name_what_changes_vectors(tiny_st_dir: Path) -> None:
    from retrodistill.evaluate.retrieval import load_model

    model = load_model(tiny_st_dir, device="cpu")
    settings = encoder_settings(model)
    assert settings["modules"] == ["Transformer", "Pooling", "Normalize"]
    assert settings["max_seq_length"] == 64 and settings["dtype"] == "torch.float32"
    model.max_seq_length = 32
    assert encoder_settings(model) != settings
    assert encoder_settings(HashEncoder())["modules"] is None


@pytest.mark.slow
def test_a_multi_process_pool_gives_the_single_process_vectors(tiny_st_dir: Path, tmp_path: Path) -> None:
    """Two CPU worker processes stand in for two GPUs (the pool code path is the same)."""
    from retrodistill.data.encoding import encoding_pool
    from retrodistill.evaluate.retrieval import load_model

    model = load_model(tiny_st_dir, device="cpu")
    corpus = {f"d{i}": Document("", "cancer tumor biopsy " * (i % 4)) for i in range(40)}
    single = np.concatenate(list(iter_corpus_embeddings(model, corpus, shard_size=16)))
    with encoding_pool(model, ["cpu", "cpu"]) as pool:
        assert pool is not None
        pooled = np.concatenate(list(iter_corpus_embeddings(model, corpus, shard_size=16, pool=pool)))
    np.testing.assert_allclose(pooled, single, atol=1e-5)
    with encoding_pool(model, ["cpu"]) as none:
        assert none is None  # one device: no worker processes


@pytest.mark.gpu
def test_every_visible_gpu_joins_the_pool(tiny_st_dir: Path) -> None:
    import torch

    from retrodistill.data.encoding import encoding_pool
    from retrodistill.evaluate.retrieval import load_model

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two or more GPUs")
    model = load_model(tiny_st_dir, device="cuda")
    with encoding_pool(model) as pool:
        assert pool is not None and len(pool["processes"]) == torch.cuda.device_count()


def test_a_killed_writers_old_temporary_file_is_removed_on_open(tmp_path: Path) -> None:
    import os
    import time

    corpus = make_corpus(4)
    cache = open_cache(tmp_path, corpus, shard_size=2)
    (cache.path / "shards").mkdir()
    old, fresh = cache.path / "shards" / ".000001.npy.abc.tmp", cache.path / "shards" / ".000000.npy.def.tmp"
    old.write_bytes(b"half a shard")
    fresh.write_bytes(b"a live writer's shard")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    open_cache(tmp_path, corpus, shard_size=2)
    assert not old.exists() and fresh.exists()  # a recent one may belong to a writer still at work
