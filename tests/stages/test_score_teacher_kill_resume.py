"""``kill -9`` during scoring, then resume: the store ends with exactly the rows of an uninterrupted run.

A scoring process (this module run as a script, :func:`_worker`) is slowed by a sleep per part,
killed with SIGKILL once some parts are recorded, and resumed by a new process. The final store
must hold the same rows as an uninterrupted run: the sha256 over its sorted rows
(``query_id<TAB>doc_id<TAB>float.hex(score)``, read from the part files by this test) is the same,
and its manifest is complete with no temporary or progress files left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.data.collections import load_beir
from retrodistill.data.store import TeacherStore
from retrodistill.stages.score_ranks import RANKS_DIR
from retrodistill.stages.score_teacher import score_pairs_to_store
from retrodistill.teachers.base import Teacher

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "tests" / "fixtures" / "toy"
INPUTS = {"corpus": "sha256:c", "queries": "sha256:q", "candidates": "sha256:k"}
PART_SIZE = 2  # 42 toy pairs: 21 parts, so a kill lands between two of them


class HashTeacher(Teacher):
    """A test double: the score of a pair is a fixed function of its texts; ``delay`` s of sleep per call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay  # how fast, not which scores: not in describe(), so a resume may change it

    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        time.sleep(self.delay)
        digests = (hashlib.sha256(f"{q}\t{d}".encode()).digest() for q, d in zip(queries, docs, strict=True))
        return np.array([int.from_bytes(h[:4], "little") / 2**32 for h in digests], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": "hash", "model": "sha256", "device": "cpu"}


def _teacher(spec: dict[str, Any]) -> Teacher:
    if not spec.get("model"):
        return HashTeacher(spec.get("delay", 0.0))
    from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

    class SlowCrossEncoder(CrossEncoderTeacher):
        def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
            time.sleep(spec.get("delay", 0.0))
            return super().score(queries, docs, show_progress)

    return SlowCrossEncoder(spec["model"], batch_size=4, device="cpu")


def _score_toy(teacher: Teacher, out: Path) -> TeacherStore:
    toy = load_beir(TOY, "train")
    doc_ids = sorted(toy.corpus)
    pairs = sorted(
        {(q, doc_ids[(i * 3 + j) % len(doc_ids)]) for i, q in enumerate(sorted(toy.queries)) for j in range(7)}
    )
    doc_text = {d: toy.doc_text(d) for d in toy.corpus}
    return score_pairs_to_store(
        teacher, pairs, toy.queries, doc_text, out, part_size=PART_SIZE, inputs=INPUTS, config={}, show_progress=False
    )


def _worker(spec: dict[str, Any]) -> None:
    _score_toy(_teacher(spec), Path(spec["out"]))


def _start(spec: dict[str, Any], processes: int = 1) -> subprocess.Popen[bytes]:
    """This module as a scoring process (or as ``processes`` torchrun ranks)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.Popen(
        [*launcher, __file__, json.dumps(spec)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_when(process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float = 120) -> None:
    """SIGKILL ``process`` and all its descendants as soon as ``ready()``; fail if it ends or times out first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the scoring process ended before the kill:\n{process.stderr.read().decode()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            _kill_tree(process.pid)
            raise AssertionError("no part was recorded in time")
        time.sleep(0.02)
    descendants = _kill_tree(process.pid)
    assert process.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in descendants) and time.monotonic() < deadline:
        time.sleep(0.05)


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and its descendants (torchrun starts each rank in a session of its own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, stack = [], [pid]
    while stack:
        tree.append(stack.pop())
        stack += children.get(tree[-1], [])
    for member in reversed(tree):  # the ranks first, so none outlives its launcher
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    return tree[1:]


def _resume(spec: dict[str, Any]) -> None:
    """A new process finishes the store."""
    process = _start(spec)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()


def _recorded_parts(out: Path) -> int:
    """Parts the manifest and the ranks' progress files list (files are replaced atomically)."""
    files = [out / "manifest.json", *sorted((out / RANKS_DIR).glob("rank-*.json"))]
    return sum(len(json.loads(f.read_text())["parts"]) for f in files if f.is_file())


def _sorted_rows_sha256(out: Path) -> str:
    """sha256 over the sorted rows of every part file, read without the code under test."""
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(out.glob("part-*.parquet")):
        table = pq.read_table(path)
        rows += zip(*(table.column(name).to_pylist() for name in ("query_id", "doc_id", "score")), strict=True)
    digest = hashlib.sha256()
    for query_id, doc_id, score in sorted(rows):
        digest.update(f"{query_id}\t{doc_id}\t{float(score).hex()}\n".encode())
    return digest.hexdigest()


def _check_finished(out: Path, uninterrupted: TeacherStore, killed_sessions: int = 1) -> None:
    assert _sorted_rows_sha256(out) == _sorted_rows_sha256(uninterrupted.path)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["fingerprint"] == uninterrupted.fingerprint
    assert manifest["parts"] == uninterrupted.manifest["parts"]
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith(".tmp") or p.parent.name == RANKS_DIR]
    assert leftovers == [] and not (out / RANKS_DIR).exists()
    # The killed session counts the parts it recorded; the resumed one scored exactly the others.
    sessions = manifest["sessions"]
    assert len(sessions) == killed_sessions + 1 and all(s["parts_scored"] > 0 for s in sessions[:-1])
    assert sum(s["parts_scored"] for s in sessions) == manifest["num_parts"]


def test_kill_9_then_resume_gives_the_rows_of_an_uninterrupted_run(tmp_path: Path) -> None:
    uninterrupted = _score_toy(HashTeacher(), tmp_path / "uninterrupted")
    out = tmp_path / "killed"
    process = _start({"out": str(out), "delay": 0.3})
    _kill_when(process, lambda: (out / "manifest.json").is_file() and _recorded_parts(out) >= 2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and 2 <= len(manifest["parts"]) < manifest["num_parts"]
    # What SIGKILL inside atomic_path leaves: a temporary beside the part it was writing.
    (out / ".part-00020.parquet.k1ll3d.tmp").write_bytes(b"PAR1 torn")
    _resume({"out": str(out)})
    _check_finished(out, uninterrupted)


def test_kill_9_of_two_ranks_then_one_process_resumes(tmp_path: Path) -> None:
    """A lost node: both torchrun ranks killed; one process resumes from their progress files."""
    uninterrupted = _score_toy(HashTeacher(), tmp_path / "uninterrupted")
    out = tmp_path / "killed"
    process = _start({"out": str(out), "delay": 0.5}, processes=2)
    _kill_when(process, lambda: (out / RANKS_DIR).is_dir() and _recorded_parts(out) >= 2)
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    _resume({"out": str(out)})
    _check_finished(out, uninterrupted)


@pytest.mark.slow
def test_kill_9_with_the_tiny_cross_encoder(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

    uninterrupted = _score_toy(
        CrossEncoderTeacher(str(tiny_cross_encoder_dir), batch_size=4, device="cpu"), tmp_path / "uninterrupted"
    )
    out = tmp_path / "killed"
    spec = {"out": str(out), "model": str(tiny_cross_encoder_dir)}
    process = _start({**spec, "delay": 0.3})
    _kill_when(process, lambda: (out / "manifest.json").is_file() and _recorded_parts(out) >= 2)
    _resume(spec)
    _check_finished(out, uninterrupted)


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
