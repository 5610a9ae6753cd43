from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from retrodistill.config import DataConfig, MineConfig
from retrodistill.data.candidates import Candidate, read_candidates, read_triples, write_candidates
from retrodistill.data.collections import DataFormatError, load_beir
from retrodistill.stages import mine_negatives


def test_mine_keeps_judged_and_excludes_them_from_negatives(toy_dir: Path, tmp_path: Path) -> None:
    cfg = MineConfig(data=DataConfig(dataset=str(toy_dir), split="train"), out=str(tmp_path / "cand"), k=10)
    result = mine_negatives.run(cfg, show_progress=False)
    collection = load_beir(toy_dir, "train")
    grouped = result.by_query()
    assert set(grouped) == set(collection.queries)
    for qid, rows in grouped.items():
        judged = collection.qrels[qid]
        assert {c.doc_id for c in rows if c.label > 0} == set(judged)
        negatives = [c for c in rows if c.label == 0]
        assert negatives and not {c.doc_id for c in negatives} & set(judged)
        ranks = [c.rank for c in rows if c.rank > 0]
        assert ranks == sorted(ranks) and len(ranks) <= 10
    manifest = result.manifest
    assert manifest["inputs"]["corpus"] == collection.fingerprints["corpus"]
    assert manifest["counts"]["positives"] == sum(len(d) for d in collection.qrels.values())


def test_bm25_ranks_the_topical_documents_first(toy_dir: Path) -> None:
    collection = load_beir(toy_dir, "train")
    rows = mine_negatives.mine(collection, k=5, k1=0.9, b=0.4)
    top = {c.query_id: c.doc_id for c in rows if c.rank == 1}
    # q1 is about cancer (documents d1-d5), q3 about the heart (d6-d10).
    assert int(top["q1"][1:]) <= 5
    assert 6 <= int(top["q3"][1:]) <= 10


def test_candidates_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    rows = [Candidate("q1", "d2", 0, 2, 1.5), Candidate("q1", "d1", 1, 1, 2.5), Candidate("q1", "d9", 2, 0, math.nan)]
    write_candidates(tmp_path, rows, {"stage": "mine-negatives"})
    back = read_candidates(tmp_path)
    assert [c.doc_id for c in back.rows] == ["d1", "d2", "d9"]  # retrieved by rank, then unretrieved
    assert back.pairs() == [("q1", "d1"), ("q1", "d2"), ("q1", "d9")]
    manifest = (tmp_path / "manifest.json").read_text().replace(back.fingerprint, "sha256:" + "0" * 64)
    (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(ValueError, match="do not match the fingerprint"):
        read_candidates(tmp_path)


def test_duplicate_candidate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="appears twice"):
        write_candidates(tmp_path, [Candidate("q", "d", 0, 1, 1.0), Candidate("q", "d", 0, 2, 0.5)], {})


def test_read_triples(tmp_path: Path) -> None:
    path = tmp_path / "triples.tsv"
    path.write_text("q1\td1\td2\nq1\td1\td3\n")
    rows = read_triples(path)
    assert {(c.doc_id, c.label) for c in rows} == {("d1", 1), ("d2", 0), ("d3", 0)}
    path.write_text("q1\td1\td2\nq1\td2\n")
    with pytest.raises(DataFormatError, match=r"triples\.tsv:2:"):
        read_triples(path)
    path.write_text("q1\td1\td2\nq1\td2\td1\n")
    with pytest.raises(DataFormatError, match="both a positive and a negative"):
        read_triples(path)


def test_index_is_cached_by_corpus_and_parameters(
    toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrodistill.index.bm25 import read_index_manifest

    monkeypatch.setenv("RETRODISTILL_CACHE", str(tmp_path / "cache"))
    collection = load_beir(toy_dir, "train")
    first = mine_negatives.mine_table(collection, k=10, k1=0.9, b=0.4)
    indexes = list((tmp_path / "cache" / "bm25").iterdir())
    assert len(indexes) == 1
    manifest = read_index_manifest(indexes[0])
    assert manifest is not None and manifest["corpus"] == collection.fingerprints["corpus"]
    assert manifest["num_docs"] == len(collection.corpus)
    again = mine_negatives.mine_table(collection, k=10, k1=0.9, b=0.4)  # read from the cache
    assert again.drop_columns(["retrieval_score"]).equals(first.drop_columns(["retrieval_score"]))
    np.testing.assert_array_equal(again.column("retrieval_score"), first.column("retrieval_score"))
    mine_negatives.mine_table(collection, k=10, k1=1.2, b=0.75)  # other parameters: another index
    assert len(list((tmp_path / "cache" / "bm25").iterdir())) == 2


def test_in_memory_collection_gives_the_same_candidates(toy_dir: Path, tmp_path: Path) -> None:
    """A dict corpus without a fingerprint is indexed in memory; the rows and fingerprint are the same."""
    from retrodistill.data.collections import Collection, Document

    collection = load_beir(toy_dir, "train")
    plain = Collection(
        collection.name,
        {d: Document(doc.title, doc.text) for d, doc in collection.corpus.items()},
        dict(collection.queries),
        collection.qrels,
        collection.split,
    )
    a = write_candidates(tmp_path / "a", mine_negatives.mine_table(collection, 10, 0.9, 0.4), {})
    b = write_candidates(tmp_path / "b", mine_negatives.mine_table(plain, 10, 0.9, 0.4), {})
    assert a["fingerprint"] == b["fingerprint"]


def test_judged_documents_not_retrieved_keep_their_grade(toy_dir: Path) -> None:
    collection = load_beir(toy_dir, "train")
    rows = mine_negatives.mine(collection, k=1, k1=0.9, b=0.4)
    by_pair = {(c.query_id, c.doc_id): c for c in rows}
    for qid, judged in collection.qrels.items():
        for doc_id, grade in judged.items():
            c = by_pair[qid, doc_id]
            assert c.label == grade
            assert (c.rank == 0 and math.isnan(c.retrieval_score)) or (c.rank == 1 and c.retrieval_score > 0)
    assert sum(1 for c in rows if c.rank == 1) == len(collection.queries)
