from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from retrodistill.config import DataConfig, MineConfig
from retrodistill.data.collections import load_beir
from retrodistill.stages import mine_negatives
from retrodistill.train.examples import (
    TeacherEmbeddings,
    build_examples,
    build_teacher_table,
    corpus_columns,
    precompute_teacher_embeddings,
    sample_corpus,
)


@pytest.fixture()
def toy_candidates(toy_dir: Path, tmp_path: Path):
    cfg = MineConfig(data=DataConfig(dataset=str(toy_dir), split="train"), out=str(tmp_path / "cand"), k=20)
    return mine_negatives.run(cfg, show_progress=False)


def _reference_examples(collection, candidates, scores, *, negatives, negative_pool, epochs, seed):
    """The earlier row-object implementation's draw, written plainly: the oracle for the array version."""
    rng = random.Random(seed)
    grouped: dict[str, list] = {}
    for c in candidates.rows:
        grouped.setdefault(c.query_id, []).append(c)
    out = []
    for _ in range(epochs):
        for qid in sorted(grouped):
            if qid not in collection.queries:
                continue
            positives = [c.doc_id for c in grouped[qid] if c.label > 0]
            pool = [c.doc_id for c in grouped[qid] if c.label <= 0 and c.rank <= negative_pool]
            if not positives or len(pool) < negatives:
                continue
            for pos in positives:
                docs = [pos, *rng.sample(pool, negatives)]
                out.append((qid, docs, None if scores is None else [scores[qid, d] for d in docs]))
    return out


@pytest.mark.parametrize(
    ("negatives", "negative_pool", "epochs", "seed"), [(3, 20, 2, 0), (1, 5, 1, 7), (2, 20, 3, 42)]
)
def test_same_draw_as_the_row_object_implementation(
    toy_dir: Path, toy_candidates, negatives: int, negative_pool: int, epochs: int, seed: int
) -> None:
    collection = load_beir(toy_dir, "train")
    scores = {pair: float(i) for i, pair in enumerate(toy_candidates.pairs())}
    settings = {"negatives": negatives, "negative_pool": negative_pool, "epochs": epochs, "seed": seed}
    expected = _reference_examples(collection, toy_candidates, scores, **settings)
    examples = build_examples(collection, toy_candidates, scores, **settings)
    assert len(expected) > 0
    got = list(
        zip(examples.example_query_ids(), examples.example_doc_ids(), examples.scores.tolist(), strict=True)
    )
    assert got == expected


def test_examples_put_the_positive_first_with_teacher_scores(toy_dir: Path, toy_candidates) -> None:
    collection = load_beir(toy_dir, "train")
    scores = {pair: float(i) for i, pair in enumerate(toy_candidates.pairs())}
    examples = build_examples(collection, toy_candidates, scores, negatives=3, negative_pool=20, epochs=2, seed=0)
    positives = sum(len(d) for d in collection.qrels.values())
    assert len(examples) == 2 * positives  # every positive once per epoch
    for qid, ids, teacher in zip(
        examples.example_query_ids(), examples.example_doc_ids(), examples.scores.tolist(), strict=True
    ):
        assert collection.qrels[qid].get(ids[0], 0) > 0
        assert all(collection.qrels[qid].get(d, 0) == 0 for d in ids[1:])
        assert len(set(ids)) == 4
        assert teacher == [scores[qid, d] for d in ids]


def test_the_dataset_stores_rows_and_reads_texts_per_batch(toy_dir: Path, toy_candidates) -> None:
    collection = load_beir(toy_dir, "train")
    scores = {pair: float(i) for i, pair in enumerate(toy_candidates.pairs())}
    examples = build_examples(collection, toy_candidates, scores, negatives=3, negative_pool=20, epochs=1, seed=0)
    dataset = examples.dataset(collection)
    assert dataset.column_names == ["query_row", "doc_rows", "label"]  # integers on disk, no texts
    assert len(dataset) == len(examples)
    batch = dataset[2:5]
    assert list(batch) == ["query", "doc_0", "doc_1", "doc_2", "doc_3", "label"]
    qids, docs = examples.example_query_ids()[2:5], examples.example_doc_ids()[2:5]
    assert batch["query"] == [collection.queries[q] for q in qids]
    for j in range(4):
        assert batch[f"doc_{j}"] == [collection.doc_text(row[j]) for row in docs]
    np.testing.assert_allclose(batch["label"], examples.scores[2:5])
    # The duplicate check of the NO_DUPLICATES sampler reads rows without their label.
    assert list(dataset.remove_columns(["label"])[0]) == ["query", "doc_0", "doc_1", "doc_2", "doc_3"]


def test_same_seed_same_examples_and_missing_scores_are_an_error(toy_dir: Path, toy_candidates) -> None:
    collection = load_beir(toy_dir, "train")
    scores = dict.fromkeys(toy_candidates.pairs(), 0.5)
    a = build_examples(collection, toy_candidates, scores, negatives=2, negative_pool=20, epochs=1, seed=3)
    b = build_examples(collection, toy_candidates, scores, negatives=2, negative_pool=20, epochs=1, seed=3)
    np.testing.assert_array_equal(a.candidate_rows, b.candidate_rows)
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


def test_unsorted_candidates_are_refused(toy_dir: Path, toy_candidates) -> None:
    from retrodistill.data.candidates import CandidateSet

    collection = load_beir(toy_dir, "train")
    shuffled = CandidateSet(toy_candidates.path, list(reversed(toy_candidates.rows)), toy_candidates.manifest)
    with pytest.raises(ValueError, match="not sorted by query id"):
        build_examples(collection, shuffled, None, negatives=2, negative_pool=20, epochs=1, seed=0)


def test_id_label_addresses_a_teacher_table_with_every_stored_pair(toy_dir: Path, toy_candidates) -> None:
    from retrodistill.train.training_data import table_label as _table_label

    collection = load_beir(toy_dir, "train")
    scores = {pair: float(i) for i, pair in enumerate(toy_candidates.pairs())}
    examples = build_examples(collection, toy_candidates, scores, negatives=2, negative_pool=20, epochs=1, seed=0)
    table = build_teacher_table(examples.query_ids, examples.distinct_doc_ids(), scores)
    assert table.query_ids == sorted(set(examples.example_query_ids()))
    inside = {(q, d) for q, d in scores if q in set(table.query_ids) and d in set(table.doc_ids)}
    assert len(table.pair_keys) == len(inside)  # every stored pair among the examples' ids, own or not
    label = _table_label(examples, table)
    assert label.shape == (len(examples), 4)
    for qid, docs, row, teacher in zip(
        examples.example_query_ids(), examples.example_doc_ids(), label, examples.scores, strict=True
    ):
        assert table.query_ids[row[0]] == qid and [table.doc_ids[r] for r in row[1:]] == docs
        np.testing.assert_allclose(table.scores(row[:1], row[None, 1:])[0], teacher)
    batch = examples.dataset(collection, label)[:2]
    assert batch["label"] == label[:2].tolist()


def test_table_lookup_gives_nan_for_unscored_pairs() -> None:
    table = build_teacher_table(["a", "b"], ["x", "y", "z"], {("a", "y"): 1.5, ("b", "x"): -2.0})
    got = table.scores(np.array([0, 1]), np.array([[0, 1, 2], [0, 1, 2]]))
    np.testing.assert_array_equal(np.isnan(got), [[True, False, True], [False, True, True]])
    assert got[0, 1] == 1.5 and got[1, 0] == -2.0
    assert table.pair_names(np.array([0]), np.array([2])) == [("a", "z")]
    empty = build_teacher_table(["a"], ["x"], {})
    assert np.isnan(empty.scores(np.array([0]), np.array([[0]]))).all()


def test_teacher_free_examples_carry_no_label(toy_dir: Path, toy_candidates) -> None:
    collection = load_beir(toy_dir, "train")
    examples = build_examples(collection, toy_candidates, None, negatives=2, negative_pool=20, epochs=1, seed=0)
    assert len(examples) > 0 and examples.scores is None
    assert "label" not in examples.dataset(collection).column_names


class CountingEncoder:
    """A dense-teacher double: a text's vector is [len(text), 1, -1]; counts the texts it encodes."""

    def __init__(self) -> None:
        self.encoded = 0

    def _encode(self, texts: list[str], **_: object) -> np.ndarray:
        self.encoded += len(texts)
        return np.array([[len(t), 1.0, -1.0] for t in texts], dtype=np.float32)

    encode_query = _encode
    encode_document = _encode


def test_teacher_embedding_store_round_trip(tmp_path: Path) -> None:
    queries, documents = {"q2": "two", "q1": "one!"}, {"d1": "a doc", "d0": "the other document"}
    store = precompute_teacher_embeddings(
        tmp_path / "emb", CountingEncoder(), queries, documents, teacher={"model": "m"}, inputs={"corpus": "sha256:c"}
    )
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == [
        "documents.ids.json",
        "documents.npy",
        "manifest.json",
        "queries.ids.json",
        "queries.npy",
    ]
    reopened = TeacherEmbeddings.open(tmp_path / "emb")
    assert reopened.manifest["stage"] == "embed-teacher" and reopened.manifest["dim"] == 3
    assert reopened.manifest["counts"] == {"queries": 2, "documents": 2}
    assert reopened.inputs == {"corpus": "sha256:c"}
    np.testing.assert_array_equal(reopened.vectors("queries", ["q1", "q2"]), [[4, 1, -1], [3, 1, -1]])
    np.testing.assert_array_equal(reopened.vectors("documents", ["d0"]), [[len("the other document"), 1, -1]])
    assert store.manifest["fingerprint"] == reopened.manifest["fingerprint"]
    with pytest.raises(ValueError, match="no embedding for 1 documents.*d9"):
        reopened.vectors("documents", ["d0", "d9"])
    table = build_teacher_table(["q2"], ["d1", "d0"], None, reopened)
    assert table.embedding_dim == 3 and table.doc_embeddings is not None
    np.testing.assert_array_equal(table.doc_embeddings[:, 0], [len("the other document"), len("a doc")])  # d0, d1


def test_corpus_sample_and_columns(toy_dir: Path) -> None:
    collection = load_beir(toy_dir, "train")
    assert sample_corpus(collection, None, 0) == sorted(collection.corpus)
    drawn = sample_corpus(collection, 5, seed=1)
    assert len(drawn) == 5 and drawn == sample_corpus(collection, 5, seed=1) and set(drawn) <= set(collection.corpus)
    with pytest.raises(ValueError, match="corpus_documents"):
        sample_corpus(collection, 0, 0)
    table = build_teacher_table([], drawn)
    columns = corpus_columns(collection, drawn, table, epochs=2)
    assert list(columns) == ["document", "label"] and len(columns["document"]) == 10
    assert columns["label"][:5] == [[table.doc_rows()[d]] for d in drawn]
    assert columns["document"][0] == collection.doc_text(drawn[0])
