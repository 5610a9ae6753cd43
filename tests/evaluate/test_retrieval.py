from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from retrodistill.artifacts import model_revision
from retrodistill.data.collections import Collection, Document, load_beir
from retrodistill.evaluate.retrieval import encode_and_search, load_model
from retrodistill.evaluate.suite import collection_entry, evaluate_suite

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@pytest.fixture(scope="module")
def tiny_model(tiny_st_dir: Path) -> SentenceTransformer:
    return load_model(tiny_st_dir, device="cpu")


def test_run_has_k_documents_per_query_best_first(tiny_model: SentenceTransformer, toy_dir: Path) -> None:
    collection = load_beir(toy_dir, "test")
    run = encode_and_search(tiny_model, collection, k=5, batch_size=8, show_progress=False)

    assert set(run) == set(collection.queries)
    for docs in run.values():
        assert len(docs) == 5
        assert set(docs) <= set(collection.corpus)
        scores = list(docs.values())
        assert scores == sorted(scores, reverse=True)
        assert all(isinstance(s, float) for s in scores)


def test_scores_are_the_models_cosine_similarities(tiny_model: SentenceTransformer, toy_dir: Path) -> None:
    collection = load_beir(toy_dir, "test")
    run = encode_and_search(tiny_model, collection, k=100, show_progress=False)
    qid = next(iter(collection.queries))
    doc_ids = list(collection.corpus)
    q = tiny_model.encode_query([collection.queries[qid]], convert_to_numpy=True)
    d = tiny_model.encode_document([collection.corpus[i].joined() for i in doc_ids], convert_to_numpy=True)
    expected = dict(zip(doc_ids, (q @ d.T)[0].tolist(), strict=True))
    assert len(run[qid]) == len(doc_ids)  # k larger than the corpus: every document, once
    for doc_id, score in run[qid].items():
        assert score == pytest.approx(expected[doc_id], abs=1e-5)
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-5)  # the model's Normalize module did it


def test_ignore_identical_ids_drops_the_query_itself(tiny_model: SentenceTransformer) -> None:
    corpus = {f"d{i}": Document("", f"cancer tumor biopsy {i}") for i in range(6)}
    collection = Collection("echo", corpus, {"d0": "cancer tumor biopsy 0"}, {"d0": {"d1": 1}}, "test")
    kept = encode_and_search(tiny_model, collection, k=3, show_progress=False)
    dropped = encode_and_search(tiny_model, collection, k=3, show_progress=False, ignore_identical_ids=True)
    assert "d0" in kept["d0"]
    assert "d0" not in dropped["d0"] and len(dropped["d0"]) == 3


def test_model_revision_fingerprints_local_weights(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    first = model_revision(str(tmp_path))
    assert first.startswith("sha256:") and model_revision(str(tmp_path)) == first
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert model_revision(str(tmp_path)) != first
    assert model_revision("no-such-org/no-such-model-for-retrodistill") == "unknown"


def test_the_embedding_cache_gives_the_same_run_and_a_second_run_encodes_no_document(
    tiny_model: SentenceTransformer, tiny_st_dir: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrodistill.evaluate.retrieval import open_embedding_cache
    from retrodistill.evaluate.runs import model_identity

    collection = load_beir(toy_dir, "test")
    plain = encode_and_search(tiny_model, collection, k=10, show_progress=False)
    identity = model_identity(str(tiny_st_dir))
    cache = open_embedding_cache(tiny_model, collection, tmp_path, identity, shard_size=7)
    assert cache is not None and cache.num_shards > 1
    first = encode_and_search(tiny_model, collection, k=10, show_progress=False, embedding_cache=cache)
    assert cache.is_complete()

    def no_documents(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached document was encoded again")

    monkeypatch.setattr(tiny_model, "encode_document", no_documents)
    again = open_embedding_cache(tiny_model, collection, tmp_path, identity, shard_size=7)
    assert again is not None and again.path == cache.path
    second = encode_and_search(tiny_model, collection, k=10, show_progress=False, embedding_cache=again)
    for run in (first, second):
        assert run.keys() == plain.keys()
        for qid, docs in run.items():
            assert list(docs) == list(plain[qid])  # same documents, same order
            assert list(docs.values()) == pytest.approx(list(plain[qid].values()), abs=1e-5)


def test_queries_are_searched_in_chunks(tiny_model: SentenceTransformer, toy_dir: Path) -> None:
    collection = load_beir(toy_dir, "test")
    whole = encode_and_search(tiny_model, collection, k=5, show_progress=False)
    chunked = encode_and_search(tiny_model, collection, k=5, show_progress=False, query_chunk_size=2)
    assert list(chunked) == list(whole)
    for qid in whole:
        assert list(chunked[qid]) == list(whole[qid])


def test_the_suite_keeps_float16_embeddings_and_records_what_ran_the_model(
    tiny_st_dir: Path, toy_dir: Path, tmp_path: Path
) -> None:
    collection = load_beir(toy_dir, "test")
    evaluate_suite(
        [str(tiny_st_dir)],
        [collection_entry(collection)],
        ["nDCG@10"],
        tmp_path / "out",
        k=10,
        show_progress=False,
        cache_dir=tmp_path / "runs",
        embedding_cache_dir=tmp_path / "emb",
        embedding_dtype="float16",
    )
    (manifest,) = (tmp_path / "emb").glob("*/manifest.json")
    data = json.loads(manifest.read_text())
    assert data["dtype"] == "float16" and data["documents"] == len(collection.corpus)
    assert data["corpus"] == collection.fingerprints["corpus"]
    assert len(list(manifest.parent.glob("shards/*.npy"))) == 1
    model = json.loads((tmp_path / "out" / "manifest.json").read_text())["models"][str(tiny_st_dir)]
    assert model["revision"] == model_revision(str(tiny_st_dir))  # a hash of the local weights
    assert model["loaded"]["embedding_dimension"] == 32 and model["loaded"]["max_seq_length"] == 64
    assert model["loaded"]["linear_backend"] in ("onednn", "torch") and model["loaded"]["device"] == "cpu"
