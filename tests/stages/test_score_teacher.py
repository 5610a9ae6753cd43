"""The resumable scoring loop and the score-teacher stage."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.artifacts import ArtifactMismatchError
from retrodistill.config import DataConfig, ScoreTeacherConfig, TeacherConfig
from retrodistill.data.candidates import Candidate, write_candidates
from retrodistill.data.collections import Collection, load_beir
from retrodistill.data.part_store import rows_fingerprint
from retrodistill.data.store import TeacherStore, part_name
from retrodistill.stages.score_teacher import run, score_pairs_to_store
from retrodistill.teachers.base import Teacher
from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

INPUTS = {"corpus": "sha256:c", "queries": "sha256:q", "candidates": "sha256:k"}


class HashTeacher(Teacher):
    """A test double: the score of a pair is a fixed function of its texts; counts what it scored."""

    def __init__(self, salt: str = "") -> None:
        self.salt = salt
        self.scored = 0

    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        self.scored += len(queries)
        digests = (hashlib.sha256(f"{self.salt}{q}\t{d}".encode()).digest() for q, d in zip(queries, docs, strict=True))
        return np.array([int.from_bytes(h[:4], "little") / 2**32 for h in digests], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": "hash", "model": "sha256", "salt": self.salt, "device": "cpu"}


@pytest.fixture(scope="module")
def toy(toy_dir: Path) -> Collection:
    return load_beir(toy_dir, "train")


@pytest.fixture(scope="module")
def pairs(toy: Collection) -> list[tuple[str, str]]:
    """Each toy train query with 7 documents: 42 sorted distinct pairs."""
    doc_ids = sorted(toy.corpus)
    return sorted(
        {(q, doc_ids[(i * 3 + j) % len(doc_ids)]) for i, q in enumerate(sorted(toy.queries)) for j in range(7)}
    )


def _score(teacher: Teacher, pairs: list[tuple[str, str]], toy: Collection, out: Path, **kwargs: Any) -> TeacherStore:
    options: dict[str, Any] = {"part_size": 10, "inputs": INPUTS, "config": {}, "show_progress": False}
    options.update(kwargs)
    doc_text = {d: toy.doc_text(d) for d in toy.corpus}
    return score_pairs_to_store(teacher, pairs, toy.queries, doc_text, out, **options)


def test_interrupted_then_resumed_equals_uninterrupted(
    tiny_cross_encoder_dir: Path,
    pairs: list[tuple[str, str]],
    toy: Collection,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    teacher = CrossEncoderTeacher(str(tiny_cross_encoder_dir), batch_size=4, device="cpu")
    whole = _score(teacher, pairs, toy, tmp_path / "whole")
    assert whole.manifest["num_parts"] == math.ceil(len(pairs) / 10) == 5

    partial = _score(teacher, pairs, toy, tmp_path / "resumed", stop_after_parts=1)
    assert not partial.manifest["complete"]
    assert list(partial.manifest["parts"]) == [part_name(0)]
    shorter = CrossEncoderTeacher(str(tiny_cross_encoder_dir), max_length=64, device="cpu")
    with pytest.raises(ArtifactMismatchError, match="teacher.max_length: store has 128, given 64"):
        _score(shorter, pairs, toy, tmp_path / "resumed")
    # Runtime fields (batch size, device) may change between sessions. With the same settings a
    # resumed store is bit-identical; another batch size changes scores only in the last bits
    # (padding changes which float reductions run), and is checked to that tolerance.
    import shutil

    shutil.copytree(tmp_path / "resumed", tmp_path / "resumed-other-batches")
    resumed = _score(teacher, pairs, toy, tmp_path / "resumed")
    other_batches = CrossEncoderTeacher(str(tiny_cross_encoder_dir), batch_size=16, device="cpu")
    with caplog.at_level(logging.WARNING, logger="retrodistill.stages.score_teacher"):
        mixed = _score(other_batches, pairs, toy, tmp_path / "resumed-other-batches")
    warned = [r.getMessage() for r in caplog.records if "batch_size" in r.getMessage()]
    assert len(warned) == 1 and "with batch_size 16, but it was started with 4" in warned[0]
    assert "pass --batch-size 4 for a bit-identical store" in warned[0]
    assert mixed.table().column("doc_id").equals(whole.table().column("doc_id"))
    assert np.allclose(mixed.table().column("score").to_numpy(), whole.table().column("score").to_numpy(), atol=1e-5)

    assert resumed.table().equals(whole.table())
    assert resumed.fingerprint == whole.fingerprint
    assert [s["parts_scored"] for s in resumed.manifest["sessions"]] == [1, 4]
    table = whole.table()
    assert list(zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), strict=True)) == pairs
    assert whole.fingerprint == rows_fingerprint(
        table.column("query_id").to_pylist(),
        table.column("doc_id").to_pylist(),
        table.column("score").to_pylist(),
    )


def test_resume_scores_only_missing_parts(pairs: list[tuple[str, str]], toy: Collection, tmp_path: Path) -> None:
    _score(HashTeacher(), pairs, toy, tmp_path, stop_after_parts=2)
    teacher = HashTeacher()
    store = _score(teacher, pairs, toy, tmp_path)
    assert teacher.scored == len(pairs) - 20
    assert store.manifest["complete"]
    again = HashTeacher()
    assert _score(again, pairs, toy, tmp_path).fingerprint == store.fingerprint
    assert again.scored == 0  # a complete store is returned as it is


def test_incomplete_store_is_refused_by_open(pairs: list[tuple[str, str]], toy: Collection, tmp_path: Path) -> None:
    _score(HashTeacher(), pairs, toy, tmp_path, stop_after_parts=1)
    with pytest.raises(ValueError, match=r"incomplete \(1/5 parts\)"):
        TeacherStore.open(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"teacher": HashTeacher(salt="other")}, "teacher.salt: store has '', given 'other'"),
        ({"inputs": {**INPUTS, "corpus": "sha256:other"}}, "inputs.corpus"),
        ({"part_size": 7}, "part_size: store has 10, given 7"),
    ],
)
def test_resume_with_other_settings_is_refused(
    pairs: list[tuple[str, str]], toy: Collection, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    _score(HashTeacher(), pairs, toy, tmp_path, stop_after_parts=1)
    kwargs = dict(change)
    teacher = kwargs.pop("teacher", HashTeacher())
    with pytest.raises(ArtifactMismatchError, match="new --out") as info:
        _score(teacher, pairs, toy, tmp_path, **kwargs)
    assert message in str(info.value)


def test_resume_with_other_pairs_is_refused(pairs: list[tuple[str, str]], toy: Collection, tmp_path: Path) -> None:
    _score(HashTeacher(), pairs, toy, tmp_path, stop_after_parts=1)
    with pytest.raises(ArtifactMismatchError, match="pairs_fingerprint"):
        _score(HashTeacher(), pairs[:-1], toy, tmp_path, stop_after_parts=0)


def test_corrupt_part_files_are_rewritten(pairs: list[tuple[str, str]], toy: Collection, tmp_path: Path) -> None:
    whole = _score(HashTeacher(), pairs, toy, tmp_path / "whole")
    out = tmp_path / "damaged"
    _score(HashTeacher(), pairs, toy, out, stop_after_parts=2)
    (out / part_name(2)).write_bytes(b"PAR1 half-written")  # not in the manifest: a crash mid-write
    (out / part_name(1)).write_bytes(b"bit rot")  # listed, but its sha256 no longer matches
    teacher = HashTeacher()
    resumed = _score(teacher, pairs, toy, out)
    assert teacher.scored == len(pairs) - 10
    assert resumed.table().equals(whole.table())
    assert resumed.fingerprint == whole.fingerprint


def test_invalid_pairs_are_refused(pairs: list[tuple[str, str]], toy: Collection, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sorted"):
        _score(HashTeacher(), pairs[::-1], toy, tmp_path)
    with pytest.raises(ValueError, match="sorted"):
        _score(HashTeacher(), [pairs[0], pairs[0]], toy, tmp_path)
    unknown = sorted([*pairs, ("q404", pairs[0][1]), (pairs[0][0], "d404"), (pairs[0][0], "d405")])
    with pytest.raises(ValueError, match="1 pairs name 1 unknown query ids .* 2 pairs name 2 unknown document"):
        _score(HashTeacher(), unknown, toy, tmp_path)


def _write_toy_candidates(out: Path, toy: Collection, inputs: dict[str, str]) -> list[tuple[str, str]]:
    doc_ids = sorted(toy.corpus)
    rows = [
        Candidate(q, doc_ids[(i + j) % len(doc_ids)], 0, j + 1, 1.0 / (j + 1))
        for i, q in enumerate(sorted(toy.queries))
        for j in range(3)
    ]
    write_candidates(out, rows, {"stage": "mine-negatives", "inputs": inputs})
    return sorted({(c.query_id, c.doc_id) for c in rows})


def test_run_scores_the_candidates_of_a_collection(
    tiny_cross_encoder_dir: Path, toy_dir: Path, toy: Collection, tmp_path: Path
) -> None:
    expected_pairs = _write_toy_candidates(tmp_path / "candidates", toy, toy.fingerprints)
    config = ScoreTeacherConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        candidates=str(tmp_path / "candidates"),
        teacher=TeacherConfig("cross-encoder", {"model": str(tiny_cross_encoder_dir), "device": "cpu"}),
        out=str(tmp_path / "scores"),
        part_size=8,
    )
    store = run(config, show_progress=False)
    table = store.table()
    assert (
        list(zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), strict=True))
        == expected_pairs
    )
    manifest = json.loads((tmp_path / "scores" / "manifest.json").read_text())
    assert manifest["inputs"]["corpus"] == toy.fingerprints["corpus"]
    assert (
        manifest["inputs"]["candidates"]
        == json.loads((tmp_path / "candidates" / "manifest.json").read_text())["fingerprint"]
    )
    assert manifest["teacher"]["name"] == "cross-encoder" and manifest["config"]["part_size"] == 8
    assert manifest["counts"]["pairs"] == len(expected_pairs)


def test_run_refuses_candidates_of_another_corpus(
    tiny_cross_encoder_dir: Path, toy_dir: Path, toy: Collection, tmp_path: Path
) -> None:
    _write_toy_candidates(tmp_path / "candidates", toy, {**toy.fingerprints, "corpus": "sha256:another"})
    config = ScoreTeacherConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        candidates=str(tmp_path / "candidates"),
        teacher=TeacherConfig("cross-encoder", {"model": str(tiny_cross_encoder_dir), "device": "cpu"}),
        out=str(tmp_path / "scores"),
    )
    with pytest.raises(ArtifactMismatchError, match="corpus: artifact has sha256:another"):
        run(config, show_progress=False)
    assert not (tmp_path / "scores").exists()


def test_run_scores_a_triples_file(
    tiny_cross_encoder_dir: Path, toy_dir: Path, toy: Collection, tmp_path: Path
) -> None:
    q1, q2 = sorted(toy.queries)[:2]
    d1, d2, d3 = sorted(toy.corpus)[:3]
    triples = tmp_path / "triples.tsv"
    triples.write_text(f"{q1}\t{d1}\t{d2}\n{q1}\t{d1}\t{d3}\n{q2}\t{d2}\t{d1}\n")
    config = ScoreTeacherConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        triples=str(triples),
        teacher=TeacherConfig("cross-encoder", {"model": str(tiny_cross_encoder_dir), "device": "cpu"}),
        out=str(tmp_path / "scores"),
    )
    store = run(config, show_progress=False)
    assert sorted(store.scores()) == sorted({(q1, d1), (q1, d2), (q1, d3), (q2, d2), (q2, d1)})


@pytest.mark.slow
def test_bi_encoder_resume_is_bit_identical_on_real_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MiniLM embeddings differ at ~1e-7 with batch composition; prepare() makes resumed stores identical."""
    from conftest import shared_path

    from retrodistill.data.collections import load_beir
    from retrodistill.teachers.bi_encoder import BiEncoderTeacher

    scifact = load_beir(shared_path("data", "beir", "scifact"), "test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = shared_path("hf", "hub")
    doc_ids = sorted(scifact.corpus)[:120]
    pairs = sorted((q, d) for q in sorted(scifact.queries)[:3] for d in doc_ids)
    doc_text = {d: scifact.doc_text(d) for d in doc_ids}

    def teacher() -> BiEncoderTeacher:
        return BiEncoderTeacher(str(_snapshot(cache)), batch_size=16)

    options: dict[str, Any] = {"part_size": 100, "inputs": INPUTS, "config": {}, "show_progress": False}
    whole = score_pairs_to_store(teacher(), pairs, scifact.queries, doc_text, tmp_path / "whole", **options)
    score_pairs_to_store(teacher(), pairs, scifact.queries, doc_text, tmp_path / "r", stop_after_parts=1, **options)
    resumed = score_pairs_to_store(teacher(), pairs, scifact.queries, doc_text, tmp_path / "r", **options)
    assert resumed.table().equals(whole.table())
    assert resumed.fingerprint == whole.fingerprint


def _snapshot(cache: Path) -> Path:
    (snapshot,) = (cache / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots").iterdir()
    return snapshot
