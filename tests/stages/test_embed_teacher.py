"""The ``embed-teacher`` stage: the teacher's vectors, through the corpus-embedding cache evaluation shares."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from retrodistill.artifacts import ArtifactMismatchError
from retrodistill.config import DataConfig, EmbedTeacherConfig
from retrodistill.data.candidates import Candidate, CandidateSet, read_candidates, write_candidates
from retrodistill.data.collections import load_beir
from retrodistill.data.teacher_embeddings import TeacherEmbeddings, precompute_teacher_embeddings
from retrodistill.stages.embed_teacher import _document_vectors, embed_teacher, load_teacher, open_teacher_cache, run


@pytest.fixture(scope="module")
def raw_st_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bi-encoder without a ``Normalize`` module: its cached vectors are not unit length."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    out = tmp_path_factory.mktemp("raw-st")
    transformer = Transformer(str(tiny_bert_dir), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(out))
    return out


def config(toy_dir: Path, model: Path, tmp_path: Path, **changes: object) -> EmbedTeacherConfig:
    base = EmbedTeacherConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        model=str(model),
        out=str(tmp_path / "emb"),
        embedding_cache_dir=str(tmp_path / "cache"),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_store_holds_the_vectors_the_teacher_scores_with(
    toy_dir: Path, raw_st_dir: Path, tmp_path: Path, similarity: str
) -> None:
    """Same ids and, to float rounding, the same vectors as ``CachedTeacherEncoder(teacher)`` gives."""
    from retrodistill.teachers.bi_encoder import CachedTeacherEncoder

    store = run(config(toy_dir, raw_st_dir, tmp_path, similarity=similarity), show_progress=False)
    collection = load_beir(toy_dir, "train")
    teacher = load_teacher(str(raw_st_dir), similarity)
    reference = precompute_teacher_embeddings(
        tmp_path / "reference",
        CachedTeacherEncoder(teacher),
        dict(collection.queries),
        {d: collection.doc_text(d) for d in collection.corpus},
        teacher=teacher.describe(),
        inputs={k: collection.fingerprints[k] for k in ("corpus", "queries")},
    )
    assert store.ids == reference.ids
    assert store.inputs == reference.inputs
    assert store.manifest["counts"] == {"queries": len(collection.queries), "documents": len(collection.corpus)}
    for side in ("queries", "documents"):
        np.testing.assert_allclose(store.matrices[side], reference.matrices[side], rtol=0, atol=1e-5)
    norms = np.linalg.norm(store.matrices["documents"], axis=1)
    if similarity == "cosine":
        np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    else:
        assert np.abs(norms - 1.0).max() > 0.01  # the model does not normalise: dot keeps raw vectors
    assert store.manifest["teacher"]["similarity"] == similarity
    assert store.manifest["config"]["model"] == str(raw_st_dir)


def test_identical_vectors_give_identical_files_and_fingerprint(tmp_path: Path) -> None:
    """The memory-mapped writer writes what ``np.save`` writes, so fingerprints match today's."""
    vectors = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)

    class Fixed:
        def encode_query(self, texts: list[str], **_: object) -> np.ndarray:
            return vectors[: len(texts)]

        encode_document = encode_query

    store = precompute_teacher_embeddings(
        tmp_path / "a", Fixed(), {"q": "x"}, {"d0": "a", "d1": "b", "d2": "c"}, teacher={}, inputs={}
    )
    np.save(tmp_path / "saved.npy", vectors, allow_pickle=False)
    assert (tmp_path / "a" / "documents.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()
    again = precompute_teacher_embeddings(
        tmp_path / "b", Fixed(), {"q": "y"}, {"d0": "a", "d1": "b", "d2": "c"}, teacher={"other": 1}, inputs={}
    )
    assert again.manifest["fingerprint"] == store.manifest["fingerprint"]
    assert isinstance(store.matrices["documents"], np.memmap)  # opened memory-mapped


def test_evaluation_and_embed_teacher_share_the_corpus_cache(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    from retrodistill.evaluate.retrieval import encode_and_search, load_model, open_embedding_cache
    from retrodistill.evaluate.runs import model_identity

    store = run(config(toy_dir, tiny_st_dir, tmp_path), show_progress=False)
    assert store.manifest["corpus_embeddings"]["shards_encoded"] == 1
    collection = load_beir(toy_dir, "test")
    model = load_model(str(tiny_st_dir))
    cache = open_embedding_cache(model, collection, tmp_path / "cache", model_identity(str(tiny_st_dir)))
    assert cache is not None and cache.is_complete()  # evaluation finds the shards embed-teacher wrote
    assert cache.path.name == store.manifest["corpus_embeddings"]["key"]
    encode_and_search(model, collection, k=3, show_progress=False, embedding_cache=cache)

    # And the other way round: a second store (another out) encodes nothing.
    again = run(config(toy_dir, tiny_st_dir, tmp_path, out=str(tmp_path / "emb2")), show_progress=False)
    assert again.manifest["corpus_embeddings"]["shards_encoded"] == 0
    assert again.manifest["fingerprint"] == store.manifest["fingerprint"]


def test_only_the_shards_holding_wanted_documents_are_encoded(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    collection = load_beir(toy_dir, "train")
    teacher = load_teacher(str(tiny_st_dir))
    cache = open_teacher_cache(teacher, collection, tmp_path / "cache", shard_size=2)
    rows = np.array([len(collection.corpus) - 1, 0], dtype=np.int64)
    out = np.zeros((2, 32), np.float32)
    needed, encoded = _document_vectors(teacher, collection, rows, cache, out, show_progress=False)
    assert (needed, encoded) == (2, 2)
    assert cache.missing_shards() == list(range(1, cache.num_shards - 1))
    texts = [collection.doc_text(collection.corpus.id_at([r])[0]) for r in rows]
    expected = teacher.model.encode_document(texts, normalize_embeddings=True)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_candidates_choose_their_queries_and_negative_pool(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    collection = load_beir(toy_dir, "train")
    query = sorted(collection.queries)[0]
    docs = sorted(collection.corpus)
    positive = next(iter(collection.qrels[query]))
    negatives = [d for d in docs if d != positive][:4]
    rows = [Candidate(query, positive, 1, 9, 0.0)] + [
        Candidate(query, d, 0, rank, 0.0) for rank, d in enumerate(negatives, start=1)
    ]
    rows.append(Candidate("not-in-this-split", docs[-1], 0, 1, 0.0))
    write_candidates(tmp_path / "cands", rows, {"stage": "mine-negatives", "inputs": dict(collection.fingerprints)})
    store = run(
        config(toy_dir, tiny_st_dir, tmp_path, candidates=str(tmp_path / "cands"), negative_pool=2),
        show_progress=False,
    )
    assert store.ids["queries"] == [query]
    assert store.ids["documents"] == sorted([positive, *negatives[:2]])
    assert store.manifest["candidates"] == read_candidates(tmp_path / "cands").fingerprint


def test_mismatched_candidates_and_unknown_ids_are_refused(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    collection = load_beir(toy_dir, "train")
    write_candidates(
        tmp_path / "other",
        [Candidate(sorted(collection.queries)[0], sorted(collection.corpus)[0], 1, 1, 0.0)],
        {"stage": "mine-negatives", "inputs": {"corpus": "sha256:another-corpus"}},
    )
    with pytest.raises(ArtifactMismatchError, match="corpus: artifact has sha256:another-corpus"):
        run(config(toy_dir, tiny_st_dir, tmp_path, candidates=str(tmp_path / "other")), show_progress=False)
    teacher = load_teacher(str(tiny_st_dir))
    with pytest.raises(ValueError, match="document id 'nope' is not in the corpus"):
        embed_teacher(tmp_path / "x", teacher, collection, [], ["nope"], cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="no documents"):
        embed_teacher(tmp_path / "x", teacher, collection, [], [], cache_dir=tmp_path / "cache")


def test_train_student_reads_a_store_made_by_embed_teacher(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    from retrodistill.config import LossConfig, StudentConfig, TeacherEmbeddingsConfig, TrainConfig
    from retrodistill.train.run import run as train

    data = DataConfig(dataset=str(toy_dir), split="train")
    collection = load_beir(toy_dir, "train")
    rows = [  # every train query with every document, ranked by id: what mine-negatives would give, kept simple
        Candidate(q, d, collection.qrels[q].get(d, 0), rank, 0.0)
        for q in sorted(collection.queries)
        for rank, d in enumerate(sorted(collection.corpus), start=1)
    ]
    write_candidates(
        tmp_path / "candidates", rows, {"stage": "mine-negatives", "inputs": dict(collection.fingerprints)}
    )
    candidates: CandidateSet = read_candidates(tmp_path / "candidates")
    store = run(config(toy_dir, tiny_st_dir, tmp_path, candidates=str(candidates.path)), show_progress=False)
    written = (store.path / "documents.npy").stat().st_mtime_ns
    out = train(
        TrainConfig(
            data=data,
            store=None,
            candidates=str(candidates.path),
            teacher_embeddings=TeacherEmbeddingsConfig(path=str(store.path), model=str(tiny_st_dir)),
            out=str(tmp_path / "student"),
            student=StudentConfig(model=str(tiny_st_dir), max_seq_length=64),
            loss=LossConfig(name="embedding"),
            negatives=2,
            batch_size=4,
            max_steps=2,
            logging_steps=1,
        ),
        show_progress=False,
    )
    record = json.loads((out / "manifest.json").read_text())
    assert record["inputs"]["teacher_embeddings"] == store.manifest["fingerprint"]
    assert record["counts"]["steps"] == 2
    assert (store.path / "documents.npy").stat().st_mtime_ns == written  # read, not recomputed
    assert TeacherEmbeddings.open(store.path).manifest["fingerprint"] == store.manifest["fingerprint"]
