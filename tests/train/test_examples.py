from __future__ import annotations

from pathlib import Path

import pytest

from retrodistill.config import DataConfig, MineConfig
from retrodistill.data import mining
from retrodistill.data.collections import load_beir
from retrodistill.train.examples import build_examples


@pytest.fixture()
def toy_candidates(toy_dir: Path, tmp_path: Path):
    cfg = MineConfig(data=DataConfig(dataset=str(toy_dir), split="train"), out=str(tmp_path / "cand"), k=20)
    return mining.run(cfg, show_progress=False)


def test_examples_put_the_positive_first_with_teacher_scores(toy_dir: Path, toy_candidates) -> None:
    collection = load_beir(toy_dir, "train")
    scores = {pair: float(i) for i, pair in enumerate(toy_candidates.pairs())}
    examples = build_examples(collection, toy_candidates, scores, negatives=3, negative_pool=20, epochs=2, seed=0)
    positives = sum(len(d) for d in collection.qrels.values())
    assert len(examples) == 2 * positives  # every positive once per epoch
    text_to_id = {collection.doc_text(d): d for d in collection.corpus}
    query_to_id = {t: q for q, t in collection.queries.items()}
    for query, docs, teacher in zip(examples.query, examples.docs, examples.scores, strict=True):
        qid = query_to_id[query]
        ids = [text_to_id[t] for t in docs]
        assert collection.qrels[qid].get(ids[0], 0) > 0
        assert all(collection.qrels[qid].get(d, 0) == 0 for d in ids[1:])
        assert len(set(ids)) == 4
        assert teacher == [scores[qid, d] for d in ids]
    columns = examples.to_columns()
    assert list(columns) == ["query", "doc_0", "doc_1", "doc_2", "doc_3", "label"]


def test_same_seed_same_examples_and_missing_scores_are_an_error(toy_dir: Path, toy_candidates) -> None:
    collection = load_beir(toy_dir, "train")
    scores = dict.fromkeys(toy_candidates.pairs(), 0.5)
    a = build_examples(collection, toy_candidates, scores, negatives=2, negative_pool=20, epochs=1, seed=3)
    b = build_examples(collection, toy_candidates, scores, negatives=2, negative_pool=20, epochs=1, seed=3)
    assert a.docs == b.docs
    for c in toy_candidates.rows:
        if c.label > 0:
            scores.pop((c.query_id, c.doc_id))
    with pytest.raises(ValueError, match="no score for query"):
        build_examples(collection, toy_candidates, scores, negatives=2, negative_pool=20, epochs=1, seed=3)


def test_queries_without_enough_negatives_are_counted(toy_dir: Path, toy_candidates) -> None:
    collection = load_beir(toy_dir, "train")
    scores = dict.fromkeys(toy_candidates.pairs(), 0.0)
    examples = build_examples(collection, toy_candidates, scores, negatives=25, negative_pool=30, epochs=1, seed=0)
    assert len(examples) == 0
    assert examples.skipped_queries == {"fewer than 25 negatives": len(collection.queries)}
