"""all-MiniLM-L6-v2 on BEIR SciFact (test split): the published nDCG@10 must come out.

MTEB's leaderboard and the sentence-transformers model card give nDCG@10 = 0.6451 for
``sentence-transformers/all-MiniLM-L6-v2`` on SciFact test (max_seq_length 256, title + " " + text,
cosine). A few CPU minutes; skipped unless ../shared holds the data and the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.slow
def test_minilm_on_scifact_reproduces_published_ndcg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = shared_path("data", "beir", "scifact")
    hf_home = shared_path("hf")
    shared_path("hf", "hub", "models--sentence-transformers--all-MiniLM-L6-v2")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    from retrodistill.data.collections import load_beir
    from retrodistill.evaluate.suite import collection_entry, evaluate_suite

    collection = load_beir(data, "test")
    assert len(collection.corpus) == 5183 and len(collection.queries) == 300

    result = evaluate_suite(
        [MODEL],
        [collection_entry(collection)],
        out_dir=tmp_path,
        k=1000,
        batch_size=64,
        device="cpu",
        cache_folder=str(hf_home / "hub"),  # huggingface_hub may have read HF_HOME before setenv
        show_progress=False,
        use_cache=False,
    )

    scores = result.results[MODEL][collection.name]
    assert scores["nDCG@10"] == pytest.approx(0.6451, abs=0.003)
    assert scores["RR@10"] <= scores["nDCG@10"] + 0.05  # SciFact has ~1.1 relevant docs per query
    assert scores["R@100"] <= scores["R@1000"] <= 1.0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["models"][MODEL]["revision"].startswith("1110a243")
    assert manifest["models"][MODEL]["loaded"]["max_seq_length"] == 256
