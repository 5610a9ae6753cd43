"""Fixtures for training tests: toy candidates covering every (query, document) pair, and their store."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrodistill.config import DataConfig, StudentConfig, TrainConfig
from retrodistill.data.candidates import Candidate, CandidateSet, read_candidates, write_candidates
from retrodistill.data.collections import load_beir
from retrodistill.data.store import TeacherStore


@pytest.fixture(scope="session")
def cross_candidates(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CandidateSet:
    """Every toy train query with every document (rank = position by id), so any in-batch pair is scored."""
    collection = load_beir(toy_dir, "train")
    doc_ids = sorted(collection.corpus)
    rows = [
        Candidate(qid, did, collection.qrels[qid].get(did, 0), rank, 0.0)
        for qid in sorted(collection.queries)
        for rank, did in enumerate(doc_ids, start=1)
    ]
    out = tmp_path_factory.mktemp("cross-candidates")
    write_candidates(out, rows, {"stage": "mine-negatives", "inputs": dict(collection.fingerprints)})
    return read_candidates(out)


@pytest.fixture(scope="session")
def cross_store(
    toy_dir: Path, tiny_st_dir: Path, cross_candidates: CandidateSet, tmp_path_factory: pytest.TempPathFactory
) -> TeacherStore:
    """The tiny bi-encoder's dot-product scores for every pair of ``cross_candidates``."""
    from retrodistill.config import DataConfig, ScoreTeacherConfig, TeacherConfig
    from retrodistill.stages.score_teacher import run
    from retrodistill.teachers.bi_encoder import BiEncoderTeacher

    params = {"model": str(tiny_st_dir), "similarity": "dot", "device": "cpu", "linear_backend": "torch"}
    config = ScoreTeacherConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        candidates=str(cross_candidates.path),
        teacher=TeacherConfig("bi-encoder", params),
        out=str(tmp_path_factory.mktemp("cross-store") / "scores"),
        part_size=1000,
    )
    return run(config, show_progress=False, teacher=BiEncoderTeacher(**params))


@pytest.fixture()
def base(toy_dir: Path, tiny_st_dir: Path, cross_store: TeacherStore, tmp_path: Path) -> TrainConfig:
    """A short train-student config on the toy set, the tiny student and ``cross_store``."""
    return TrainConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        store=str(cross_store.path),
        out=str(tmp_path / "student"),
        student=StudentConfig(model=str(tiny_st_dir), max_seq_length=64, similarity="cosine"),
        negatives=2,
        batch_size=4,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
    )
