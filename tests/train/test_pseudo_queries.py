"""Pseudo-queries (random crops and titles) and the ``corpus`` stage that distils them beside documents and queries."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.artifacts import ArtifactMismatchError
from retrodistill.config import (
    DataConfig,
    LossConfig,
    PseudoQueriesConfig,
    StudentConfig,
    TeacherEmbeddingsConfig,
    TrainConfig,
    load_config,
)
from retrodistill.data.collections import Collection, load_beir
from retrodistill.data.teacher_embeddings import TeacherEmbeddings, precompute_teacher_embeddings
from retrodistill.train.pseudo_queries import check_settings, pseudo_queries
from retrodistill.train.run import run
from retrodistill.train.training_data import corpus_data

EMBEDDING_INPUTS = frozenset({"student_embeddings", "teacher_embeddings"})


@pytest.fixture(scope="module")
def collection(toy_dir: Path) -> Collection:
    return load_beir(toy_dir, "train")


def contains_span(words: Sequence[str], span: Sequence[str]) -> bool:
    return any(list(words[i : i + len(span)]) == list(span) for i in range(len(words) - len(span) + 1))


def test_crops_are_seeded_contiguous_spans_drawn_afresh_each_epoch(collection: Collection) -> None:
    docs = sorted(collection.corpus)[:8]
    settings = PseudoQueriesConfig(per_document=3, min_words=2, max_words=5, titles=False)
    drawn = pseudo_queries(collection, docs, settings, seed=7, epochs=2)
    assert drawn == pseudo_queries(collection, docs, settings, seed=7, epochs=2)
    assert drawn.texts != pseudo_queries(collection, docs, settings, seed=8, epochs=2).texts
    assert [len(ids) for ids in drawn.epochs] == [3 * 8, 3 * 8]  # per_document crops of each document, per epoch
    assert drawn.epochs[0] != drawn.epochs[1]  # fresh crops each epoch
    # Epoch 0 does not depend on how many epochs are drawn.
    assert pseudo_queries(collection, docs, settings, seed=7, epochs=1).epochs[0] == drawn.epochs[0]
    for ids in drawn.epochs:
        for i, doc_id in enumerate(docs):
            words = collection.corpus[doc_id].text.split()
            for query_id in ids[3 * i : 3 * (i + 1)]:
                span = drawn.texts[query_id].split()
                assert 2 <= len(span) <= 5 and contains_span(words, span)
    for query_id, text in drawn.texts.items():
        assert query_id == "pseudo:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
    assert len(set(drawn.texts.values())) == len(drawn.texts)  # one id per distinct text


def test_crops_are_capped_at_the_document_and_titles_added_once_per_epoch(collection: Collection) -> None:
    docs = sorted(collection.corpus)[:5]
    long_crops = PseudoQueriesConfig(per_document=2, min_words=50, max_words=60, titles=True)
    drawn = pseudo_queries(collection, docs, long_crops, seed=0, epochs=3)
    for ids in drawn.epochs:
        assert len(ids) == (2 + 1) * 5  # two crops and the title of each document
        for i, doc_id in enumerate(docs):
            document = collection.corpus[doc_id]
            crop_a, crop_b, title = (drawn.texts[q] for q in ids[3 * i : 3 * (i + 1)])
            assert crop_a == crop_b == " ".join(document.text.split())  # shorter than min_words: the whole text
            assert title == document.title
    without = pseudo_queries(collection, docs, dataclasses.replace(long_crops, titles=False), seed=0, epochs=3)
    assert [len(ids) for ids in without.epochs] == [2 * 5] * 3
    assert not {collection.corpus[d].title for d in docs} & set(without.texts.values())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (PseudoQueriesConfig(per_document=0), "pseudo_queries.per_document must be a whole number of at least 1"),
        (PseudoQueriesConfig(min_words=0), "pseudo_queries.min_words must be a whole number of at least 1"),
        (PseudoQueriesConfig(min_words=9, max_words=8), r"min_words \(9\) must not exceed pseudo_queries.max_words"),
    ],
)
def test_settings_that_crop_nothing_sensible_are_refused(settings: PseudoQueriesConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        check_settings(settings)
    assert "\n" not in str(refused.value)


def corpus_config(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path, **changes: Any) -> TrainConfig:
    """A short corpus-stage run on the toy set and the tiny student, its teacher the tiny bi-encoder."""
    config = TrainConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        store=None,
        stage="corpus",
        corpus_documents=10,
        corpus_texts=["documents", "queries", "pseudo-queries"],
        pseudo_queries=PseudoQueriesConfig(per_document=2, min_words=2, max_words=4),
        teacher_embeddings=TeacherEmbeddingsConfig(path=str(tmp_path / "teacher-embeddings"), model=str(tiny_st_dir)),
        out=str(tmp_path / "student"),
        student=StudentConfig(model=str(tiny_st_dir), max_seq_length=64, similarity="cosine"),
        loss=LossConfig(name="embedding", params={"distance": "cosine"}),
        epochs=2,
        batch_size=4,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
    )
    return dataclasses.replace(config, **changes)


def test_corpus_stage_distils_documents_queries_and_pseudo_queries(
    toy_dir: Path, tiny_st_dir: Path, tmp_path: Path, collection: Collection
) -> None:
    from retrodistill.stages.embed_teacher import load_teacher
    from retrodistill.teachers.bi_encoder import CachedTeacherEncoder

    config = corpus_config(toy_dir, tiny_st_dir, tmp_path)
    record = json.loads((run(config, show_progress=False) / "manifest.json").read_text())
    counts = record["counts"]
    assert counts["steps"] == 2 and counts["training_stage"] == "corpus"
    assert counts["corpus_texts"] == ["documents", "queries", "pseudo-queries"]
    drawn = pseudo_queries(collection, _sampled(config, collection), config.pseudo_queries, config.seed, 2)
    assert counts["documents"] == 10 and counts["queries"] == len(collection.queries)
    assert counts["pseudo_queries"] == len(drawn.texts)
    # Each epoch: the documents, the queries, and that epoch's (2 crops + 1 title) * 10 pseudo-queries.
    assert counts["examples"] == 2 * (10 + len(collection.queries) + 3 * 10)
    assert record["config"]["pseudo_queries"] == dataclasses.asdict(config.pseudo_queries)

    store = TeacherEmbeddings.open(config.teacher_embeddings.path or "")
    assert set(store.ids["queries"]) == set(collection.queries) | set(drawn.texts)
    assert set(store.ids["documents"]) == set(_sampled(config, collection))
    encoder = CachedTeacherEncoder(load_teacher(str(tiny_st_dir)))
    texts = {**collection.queries, **drawn.texts}
    ids = sorted(texts)
    np.testing.assert_allclose(store.vectors("queries", ids), encoder.encode_query([texts[q] for q in ids]), atol=1e-5)

    # Other pseudo-query settings crop other texts, which the store lacks: refused, the store kept.
    written = (Path(store.path) / "queries.npy").stat().st_mtime_ns
    other = dataclasses.replace(config, pseudo_queries=dataclasses.replace(config.pseudo_queries, max_words=3))
    with pytest.raises(ArtifactMismatchError, match=r"store at .* lacks \d+ of the \d+ pseudo-queries this stage") as e:
        run(other, show_progress=False, overwrite=True)
    assert "point teacher_embeddings.path at a new folder" in str(e.value) and "\n" not in str(e.value)
    assert (Path(store.path) / "queries.npy").stat().st_mtime_ns == written


def _sampled(config: TrainConfig, collection: Collection) -> list[str]:
    from retrodistill.train.examples import sample_corpus

    return sample_corpus(collection, config.corpus_documents, config.seed)


class SidedEncoder:
    """A test double for a dense teacher whose query and document vectors of one text differ in sign."""

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([np.random.default_rng(sum(map(ord, t))).standard_normal(8) for t in texts])

    def encode_query(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        return -self._encode(texts)

    def encode_document(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        return self._encode(texts)


@pytest.mark.parametrize(
    "kinds", [["documents", "queries", "pseudo-queries"], ["pseudo-queries"], ["queries", "documents"]]
)
def test_every_row_is_labelled_with_the_teacher_vector_of_its_own_text_and_side(
    toy_dir: Path, tiny_st_dir: Path, tmp_path: Path, collection: Collection, kinds: list[str]
) -> None:
    config = corpus_config(toy_dir, tiny_st_dir, tmp_path, corpus_texts=kinds)
    docs = _sampled(config, collection)
    drawn = pseudo_queries(collection, docs, config.pseudo_queries, config.seed, config.epochs)
    encoder = SidedEncoder()
    precompute_teacher_embeddings(
        config.teacher_embeddings.path or "",
        encoder,
        {**collection.queries, **drawn.texts},
        {d: collection.doc_text(d) for d in docs},
        teacher={"name": "sided", "model": str(tiny_st_dir)},
        inputs={k: collection.fingerprints[k] for k in ("corpus", "queries")},
    )
    data = corpus_data(config, collection, "embedding", EMBEDDING_INPUTS, show_progress=False)
    assert data.columns is not None and data.table is not None and data.table.doc_embeddings is not None
    queries = set(collection.queries.values()) if "queries" in kinds else set()
    pseudo = set(drawn.texts.values()) if "pseudo-queries" in kinds else set()
    documents = {collection.doc_text(d) for d in docs} if "documents" in kinds else set()
    rows = list(zip(data.columns["document"], data.columns["label"], strict=True))
    assert {text for text, _ in rows} == queries | pseudo | documents
    for text, label in rows:
        side = encoder.encode_query if text in queries | pseudo else encoder.encode_document
        np.testing.assert_allclose(data.table.doc_embeddings[label], side([text]), rtol=1e-6)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["documents", "passages"], r"corpus_texts: unknown entry 'passages'; allowed: documents, queries, pseudo-q"),
        ([], "corpus_texts is empty: list one or more of documents, queries, pseudo-queries"),
    ],
)
def test_a_bad_corpus_texts_entry_is_refused_before_any_model_loads(
    toy_dir: Path, tmp_path: Path, texts: list[str], message: str
) -> None:
    # Neither model exists: loading one would fail with another error.
    config = corpus_config(toy_dir, tmp_path / "no-such-model", tmp_path, corpus_texts=texts)
    with pytest.raises(ValueError, match=message):
        run(config, show_progress=False)
    assert not Path(config.out).exists()


def test_corpus_texts_and_pseudo_query_settings_load_from_yaml(tmp_path: Path) -> None:
    file = tmp_path / "corpus.yaml"
    file.write_text("stage: corpus\ncorpus_texts: [documents, pseudo-queries]\npseudo_queries:\n  per_document: 2\n")
    config = load_config(TrainConfig, file, ["pseudo_queries.titles=false"])
    assert config.corpus_texts == ["documents", "pseudo-queries"]
    assert config.pseudo_queries == PseudoQueriesConfig(per_document=2, titles=False)
