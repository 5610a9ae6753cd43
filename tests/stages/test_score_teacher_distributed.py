"""Multi-process scoring: each rank scores its share of the parts, rank 0 merges them into one store.

What "equal" means here: the merged store's rows (query_id, doc_id, score) are those of a store
written by one process, compared with ``pyarrow.Table.equals`` (ids exactly, float32 scores
bitwise), and the two manifests' fingerprints are the same. The teachers are a hash of the texts
and the tiny cross-encoder; the bi-encoder's case (an embedding depends on its batch) is the
``prepare`` option's, checked in :func:`test_sharded_prepare_of_the_tiny_bi_encoder`.

The ranks are real processes started by ``python -m torch.distributed.run`` (torchrun) on CPU,
talking over gloo; each runs this module as a script (:func:`_worker`) or the ``retrodistill``
command.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.artifacts import ArtifactMismatchError, write_json_atomic
from retrodistill.config import DataConfig, ScoreTeacherConfig, TeacherConfig
from retrodistill.data.candidates import Candidate, write_candidates
from retrodistill.data.collections import Collection, load_beir
from retrodistill.data.store import TeacherStore, part_name
from retrodistill.stages.score_ranks import RANKS_DIR, ScoringRank, scoring_rank
from retrodistill.stages.score_teacher import run, score_pairs_to_store
from retrodistill.teachers.base import Teacher

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "tests" / "fixtures" / "toy"
INPUTS = {"corpus": "sha256:c", "queries": "sha256:q", "candidates": "sha256:k"}
PART_SIZE = 5


class HashTeacher(Teacher):
    """A test double: the score of a pair is a fixed function of its texts."""

    def __init__(self, salt: str = "") -> None:
        self.salt = salt
        self.calls = 0  # one per part scored

    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        self.calls += 1
        digests = (hashlib.sha256(f"{self.salt}{q}\t{d}".encode()).digest() for q, d in zip(queries, docs, strict=True))
        return np.array([int.from_bytes(h[:4], "little") / 2**32 for h in digests], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": "hash", "model": "sha256", "salt": self.salt, "device": "cpu"}


def _toy_pairs(toy: Collection) -> list[tuple[str, str]]:
    """Each toy train query with 7 documents: 42 sorted distinct pairs (9 parts of 5)."""
    doc_ids = sorted(toy.corpus)
    return sorted(
        {(q, doc_ids[(i * 3 + j) % len(doc_ids)]) for i, q in enumerate(sorted(toy.queries)) for j in range(7)}
    )


def _score_toy(teacher: Teacher, out: Path, **kwargs: Any) -> TeacherStore:
    toy = load_beir(TOY, "train")
    doc_text = {d: toy.doc_text(d) for d in toy.corpus}
    options: dict[str, Any] = {"part_size": PART_SIZE, "inputs": INPUTS, "config": {}, "show_progress": False}
    return score_pairs_to_store(teacher, _toy_pairs(toy), toy.queries, doc_text, out, **{**options, **kwargs})


def _worker(spec: dict[str, Any]) -> None:
    """One rank: score the toy pairs into ``spec["out"]`` with the teacher ``spec`` names."""
    if spec.get("accelerate"):  # a caller that set up accelerate's process group first: it is kept
        from accelerate import PartialState

        PartialState(cpu=True)
    teacher: Teacher
    if spec.get("model"):
        from retrodistill.teachers.bi_encoder import BiEncoderTeacher

        teacher = BiEncoderTeacher(spec["model"], batch_size=4, device="cpu")
    else:
        teacher = HashTeacher(spec.get("salt", ""))
    store = _score_toy(teacher, Path(spec["out"]), **spec.get("options", {}))
    # One write per line: two ranks share the pipe, and print() writes the text and "\n" separately.
    sys.stdout.write(f"rank {scoring_rank().rank}: complete={store.manifest['complete']}\n")
    sys.stdout.flush()
    if spec.get("accelerate"):
        import torch.distributed as dist

        print(f"rank {dist.get_rank()}: group kept={dist.is_initialized()}", flush=True)
        dist.destroy_process_group()  # gloo may abort at exit with a live group


def _torchrun(args: Sequence[str], processes: int = 2, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.run(
        [*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _run_workers(spec: dict[str, Any], processes: int = 2) -> subprocess.CompletedProcess[str]:
    result = _torchrun([__file__, json.dumps(spec)], processes)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _leftovers(out: Path) -> list[str]:
    """Temporary files, or progress files, left in a store."""
    return sorted(p.name for p in out.rglob("*") if p.name.endswith(".tmp") or p.parent.name == RANKS_DIR)


# --- rank and share ---------------------------------------------------------------------------------


def test_rank_comes_from_the_torchrun_variables() -> None:
    assert scoring_rank({}) == ScoringRank(rank=0, world_size=1, local_rank=0)
    assert scoring_rank({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == ScoringRank(3, 4, 1)
    with pytest.raises(ValueError, match="RANK=4 is not in"):
        scoring_rank({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="RANK is not set"):
        scoring_rank({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        scoring_rank({"WORLD_SIZE": "two", "RANK": "0"})


def test_shares_partition_the_parts_left() -> None:
    # A fresh run: rank r takes the parts i with i % world_size == r.
    shares = [ScoringRank(r, 3).share(range(10)) for r in range(3)]
    assert shares == [[i for i in range(10) if i % 3 == r] for r in range(3)]
    # A resumed run shares what is left, so no rank idles while another has two parts more.
    todo = [1, 2, 4, 7, 8]
    shares = [ScoringRank(r, 2).share(todo) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == todo and [len(s) for s in shares] == [3, 2]


def test_progress_files_of_a_crashed_run_are_checked_before_use(tmp_path: Path) -> None:
    """What ranks of a crashed run listed is kept only where the part file still has its sha256."""
    whole = _score_toy(HashTeacher(), tmp_path / "whole")
    out = tmp_path / "crashed"
    _score_toy(HashTeacher(), out, stop_after_parts=2)  # parts 0 and 1, in the manifest
    # Rank 1 of a crashed two-process run had finished parts 3 and 5; part 5's file has rotted since.
    listed = {part_name(i): whole.manifest["parts"][part_name(i)] for i in (3, 5)}
    for name in listed:
        shutil.copy(whole.path / name, out / name)
    (out / part_name(5)).write_bytes(b"bit rot")
    progress = {"rank": 1, "world_size": 2, "session": "lost", "parts": listed, "parts_scored": 2}
    write_json_atomic(out / RANKS_DIR / "rank-00001.json", progress)
    teacher = HashTeacher()
    resumed = _score_toy(teacher, out)
    assert teacher.calls == whole.manifest["num_parts"] - 3  # parts 0, 1 and 3 are kept
    assert resumed.table().equals(whole.table()) and resumed.fingerprint == whole.fingerprint
    assert _leftovers(out) == [] and not (out / RANKS_DIR).exists()
    with pytest.raises(ValueError, match="prepare must be one of all, shard"):
        _score_toy(HashTeacher(), tmp_path / "other", prepare="some")


# --- real processes ---------------------------------------------------------------------------------


def _toy_candidates(out: Path, toy: Collection) -> None:
    doc_ids = sorted(toy.corpus)
    rows = [
        Candidate(q, doc_ids[(i + j) % len(doc_ids)], 0, j + 1, 1.0 / (j + 1))
        for i, q in enumerate(sorted(toy.queries))
        for j in range(7)
    ]
    write_candidates(out, rows, {"stage": "mine-negatives", "inputs": toy.fingerprints})


@pytest.mark.slow
def test_two_processes_of_the_cli_write_the_single_process_store(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    """``torchrun -m retrodistill score-teacher`` with 2 ranks = ``run()`` in one process, bitwise."""
    toy = load_beir(TOY, "train")
    _toy_candidates(tmp_path / "candidates", toy)
    single = run(
        ScoreTeacherConfig(
            data=DataConfig(dataset=str(TOY), split="train"),
            candidates=str(tmp_path / "candidates"),
            teacher=TeacherConfig(
                "cross-encoder", {"model": str(tiny_cross_encoder_dir), "device": "cpu", "batch_size": 4}
            ),
            out=str(tmp_path / "single"),
            part_size=PART_SIZE,
        ),
        show_progress=False,
    )
    result = _torchrun(
        [
            "-m",
            "retrodistill",
            "score-teacher",
            "--teacher=cross-encoder",
            f"--model={tiny_cross_encoder_dir}",
            f"--dataset={TOY}",
            "--split=train",
            f"--candidates={tmp_path / 'candidates'}",
            f"--out={tmp_path / 'merged'}",
            f"--part-size={PART_SIZE}",
            # The single run's: a part's scores depend on its batches at the 1e-7 level.
            "--batch-size=4",
            "--set=teacher.params.device=cpu",
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    merged = TeacherStore.open(tmp_path / "merged")
    assert merged.table().equals(single.table())
    assert merged.fingerprint == single.fingerprint
    assert merged.manifest["parts"] == single.manifest["parts"]  # the same bytes, part by part
    (session,) = merged.manifest["sessions"]
    num_parts = single.manifest["num_parts"]
    assert session["world_size"] == 2
    assert session["parts_by_rank"] == [len(range(0, num_parts, 2)), len(range(1, num_parts, 2))]
    assert _leftovers(tmp_path / "merged") == []
    assert (result.stdout + result.stderr).count("wrote ") == 1  # only rank 0 prints the summary


def test_two_ranks_finish_a_one_process_store(tmp_path: Path) -> None:
    """One process scores three parts; two ranks share the six left; the store = an uninterrupted one."""
    whole = _score_toy(HashTeacher(), tmp_path / "whole")
    _score_toy(HashTeacher(), tmp_path / "one-then-two", stop_after_parts=3)
    result = _run_workers({"out": str(tmp_path / "one-then-two")})
    assert sorted(re.findall(r"rank \d: complete=\w+", result.stdout)) == [
        "rank 0: complete=True",
        "rank 1: complete=True",
    ]
    merged = TeacherStore.open(tmp_path / "one-then-two")
    assert merged.table().equals(whole.table())
    assert merged.fingerprint == whole.fingerprint
    assert merged.manifest["parts"] == whole.manifest["parts"]
    assert [s["parts_by_rank"] for s in merged.manifest["sessions"]] == [[3], [3, 3]]
    assert _leftovers(tmp_path / "one-then-two") == []


def test_one_process_finishes_a_two_rank_store(tmp_path: Path) -> None:
    """Two ranks stop after one part each (rank 0 merges their progress); one process finishes.

    The ranks run under a process group accelerate's ``PartialState`` made, which scoring reuses.
    """
    whole = _score_toy(HashTeacher(), tmp_path / "whole")
    spec = {"out": str(tmp_path / "two-then-one"), "options": {"stop_after_parts": 1}, "accelerate": True}
    result = _run_workers(spec)
    assert "rank 0: group kept=True" in result.stdout and "rank 1: group kept=True" in result.stdout
    partial = json.loads((tmp_path / "two-then-one" / "manifest.json").read_text())
    assert not partial["complete"] and list(partial["parts"]) == [part_name(0), part_name(1)]
    assert _leftovers(tmp_path / "two-then-one") == []
    resumed = _score_toy(HashTeacher(), tmp_path / "two-then-one")
    assert resumed.table().equals(whole.table()) and resumed.fingerprint == whole.fingerprint
    assert [s["parts_scored"] for s in resumed.manifest["sessions"]] == [2, whole.manifest["num_parts"] - 2]


def test_a_store_made_differently_fails_every_rank(tmp_path: Path) -> None:
    """Rank 0 finds the mismatch; the other rank raises too instead of waiting at a barrier."""
    _score_toy(HashTeacher(salt="other"), tmp_path, stop_after_parts=1)
    result = _torchrun([__file__, json.dumps({"out": str(tmp_path)})], timeout=180)
    assert result.returncode != 0
    assert result.stderr.count(ArtifactMismatchError.__name__) >= 2  # both ranks' tracebacks
    assert "rank 0 failed: " in result.stderr and "teacher.salt: store has 'other', given ''" in result.stderr


@pytest.mark.slow
def test_sharded_prepare_of_the_tiny_bi_encoder(tiny_st_dir: Path, tmp_path: Path) -> None:
    """``prepare="shard"``: each rank encodes only its parts' texts. Ids exact; scores bitwise equal
    for the tiny model on CPU (real models may differ in the last bit: see scoring's docstring)."""
    from retrodistill.teachers.bi_encoder import BiEncoderTeacher

    single = _score_toy(BiEncoderTeacher(str(tiny_st_dir), batch_size=4, device="cpu"), tmp_path / "single")
    _run_workers({"out": str(tmp_path / "merged"), "model": str(tiny_st_dir), "options": {"prepare": "shard"}})
    merged = TeacherStore.open(tmp_path / "merged")
    assert merged.manifest["sessions"][0]["prepare"] == "shard"
    a, b = merged.table(), single.table()
    assert a.column("query_id").equals(b.column("query_id")) and a.column("doc_id").equals(b.column("doc_id"))
    np.testing.assert_array_equal(a.column("score").to_numpy(), b.column("score").to_numpy())
    assert merged.fingerprint == single.fingerprint


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
