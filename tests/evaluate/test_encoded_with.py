"""Corpus-embedding shards say which device and linear kernel computed them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from retrodistill.data.collections import load_beir
from retrodistill.data.embeddings import encoder_runtime
from retrodistill.evaluate.retrieval import encode_and_search, load_model, open_embedding_cache
from retrodistill.onednn_linear import _onednn_linear_problem


def test_load_model_records_its_kernel_and_every_shard_says_it(
    toy_dir: Path, tiny_st_dir: Path, tmp_path: Path
) -> None:
    model = load_model(tiny_st_dir, device="cpu")
    expected = "onednn" if _onednn_linear_problem(torch.float32) is None else "torch"
    assert model.retrodistill_linear_backend == expected
    collection = load_beir(toy_dir, "test")
    cache = open_embedding_cache(model, collection, tmp_path / "emb", {"kind": "dense", "id": "tiny"}, shard_size=4)
    assert cache is not None
    encode_and_search(model, collection, k=5, embedding_cache=cache, show_progress=False)
    entries = sorted((cache.path / "shards").glob("*.json"))
    assert len(entries) == cache.num_shards > 1
    for entry in entries:
        record = json.loads(entry.read_text())
        assert record["encoded_with"] == {"device": "cpu", "linear_backend": expected, "torch": torch.__version__}


def test_a_model_loaded_elsewhere_is_recorded_as_torch_kernels() -> None:
    assert encoder_runtime(torch.nn.Linear(2, 2))["linear_backend"] == "torch"
