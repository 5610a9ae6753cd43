"""``train-student`` under ``torchrun``: two gloo processes on CPU train the one-process student.

Two processes with ``--batch-size 2`` take the steps of one process with ``--batch-size 4``: the
trainer deals the seeded sampler's batches to the ranks in turn and DDP averages the gradients
(:mod:`retrodistill.train.distributed`). Margin-MSE is a mean over rows, so the mean of the two
half-batch gradients is the full batch's; InfoNCE scores each query against the documents gathered
from both ranks. The student has dropout off: each rank draws its own dropout masks, so with
dropout the runs agree only in distribution. Each process runs the real CLI under an audit hook
that logs every file it opens for writing, creates, renames or deletes (``sys.addaudithook``), to
check that rank 1 writes nothing but its RNG state in checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retrodistill.data.store import TeacherStore
from retrodistill.train.checkpoints import MARKER, training_dir

pytestmark = pytest.mark.slow

# The CLI, logging each write under ROOT as "event path" to AUDIT/writes-rank<RANK>.txt; with a
# step K > 0, rank 0 SIGKILLs itself once step K is trained (torchrun then stops rank 1).
_AUDITED = """
import os, signal, sys

audit, root, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
rank = os.environ.get("RANK", "0")
log = open(os.path.join(audit, "writes-rank" + rank + ".txt"), "a", buffering=1)
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.symlink", "os.link", "os.truncate"}

def hook(event, args):
    if event == "open" and isinstance(args[2], int) and args[2] & WRITES or event in CHANGES:
        if isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            # A directory that already exists is not created (makedirs' exist_ok).
            if path.startswith(root + os.sep) and not (event == "os.mkdir" and os.path.isdir(path)):
                log.write(event + " " + os.path.relpath(path, root) + "\\n")

sys.addaudithook(hook)
if kill_at and rank == "0":
    from retrodistill.train.checkpoints import CheckpointCallback

    stepped = CheckpointCallback.on_step_end
    def on_step_end(self, args, state, control, **kwargs):
        stepped(self, args, state, control, **kwargs)
        if state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    CheckpointCallback.on_step_end = on_step_end
from retrodistill.cli.app import main
sys.argv = ["retrodistill", *sys.argv[4:]]
main()
"""
# What rank 1 may do: make the checkpoint folder it saves its RNG state in (the trainer restores every
# rank's on resume; torch.save writes that file from C++, out of the audit's sight).
_RANK_STATE = re.compile(r"os\.mkdir \.student\.training(/checkpoints(/checkpoint-\d+)?)?")
# Attention key biases get no gradient (softmax is unchanged when every key of a query moves by the
# same q.b), only float noise, which Adam scales up to steps of about the learning rate.
_NO_GRADIENT = re.compile(r".*attention\.self\.key\.bias")
_MARGIN_MSE = ("--loss", "margin-mse", "--save-steps", "2")  # every rank saves its RNG state in checkpoints
# 3 steps: past them the toy set's repeated documents leave the one-process sampler only short
# last batches, which DDP (dropping a batch a rank would miss) does not train.
_INFONCE = ("--loss", "infonce", "--max-steps", "3")


@pytest.fixture(scope="module")
def no_dropout_student(tiny_st_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("no-dropout") / "student"
    shutil.copytree(tiny_st_dir, out)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def train(
    toy_dir: Path, no_dropout_student: Path, cross_store: TeacherStore
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run train-student on ``processes`` processes with ``--out ROOT/student``, audited."""

    def run(processes: int, root: Path, *extra: str, kill_at: int = 0) -> subprocess.CompletedProcess[str]:
        audit = _audit(root)
        audit.mkdir(exist_ok=True)
        root.mkdir(exist_ok=True)
        (audit / "audited.py").write_text(_AUDITED)
        launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        args = [
            "train-student", "--store", str(cross_store.path), "--student", str(no_dropout_student),
            "--dataset", str(toy_dir), "--negatives", "2", "--epochs", "2", "--batch-size", str(4 // processes),
            "--out", str(root / "student"), "--set", "logging_steps=1", "--set", "learning_rate=0.001", *extra,
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, *(launch if processes > 1 else []), str(audit / "audited.py")]
            + [str(audit), str(root.resolve()), str(kill_at), *args],
            cwd=root,  # a write to a relative path would land here
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert (done.returncode == 0) == (kill_at == 0), done.stdout + done.stderr
        return done

    return run


@pytest.fixture(scope="module")
def one_process(
    train: Callable[..., subprocess.CompletedProcess[str]], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """The one-process run (batch size 4) of a set of options, trained once per module."""
    roots: dict[tuple[str, ...], Path] = {}

    def get(*extra: str) -> Path:
        if extra not in roots:
            roots[extra] = tmp_path_factory.mktemp("one-process") / "run"
            train(1, roots[extra], *extra)
        return roots[extra]

    return get


def _audit(root: Path) -> Path:
    return root.with_name(root.name + "-audit")


def _writes(root: Path, rank: int) -> list[str]:
    return (_audit(root) / f"writes-rank{rank}.txt").read_text().splitlines()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _assert_same_student(root: Path, reference: Path, initial: Path, steps: int) -> None:
    got, want = (load_file(str(r / "student" / "model.safetensors")) for r in (root, reference))
    before = load_file(str(initial / "model.safetensors"))
    assert got.keys() == want.keys()
    checked = [name for name in want if not _NO_GRADIENT.fullmatch(name)]
    # Float32 rounding differs (the mean of two half-batch gradients against one batch's mean) and
    # Adam divides each gradient by its own running scale, which magnifies relative rounding in
    # near-zero gradients: about 1e-5 at most here, while training moves the weights by 1e-3 and more.
    for name in checked:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=5e-5, msg=name)
    assert max((want[k] - before[k]).abs().max().item() for k in checked) > 1e-3
    manifests = [json.loads((r / "student" / "manifest.json").read_text()) for r in (root, reference)]
    assert manifests[0]["counts"]["steps"] == manifests[1]["counts"]["steps"] == steps
    # The logged loss is the mean over both ranks' rows: the one-process batch's.
    assert manifests[0]["train_loss"] == pytest.approx(manifests[1]["train_loss"], rel=1e-5)


def _assert_only_rank_0_wrote(root: Path, reference: Path) -> None:
    # The same student folder as one process; nothing else left (staging folder, lock, stray files).
    assert _files(root) == _files(reference)
    assert "os.mkdir .student.training/model" in _writes(root, 0)
    assert [w for w in _writes(root, 1) if not _RANK_STATE.fullmatch(w)] == []


@pytest.mark.parametrize(("extra", "steps"), [(_MARGIN_MSE, 6), (_INFONCE, 3)], ids=["margin-mse", "infonce"])
def test_two_processes_train_the_one_process_student_and_only_rank_0_writes(
    train: Callable[..., subprocess.CompletedProcess[str]],
    one_process: Callable[..., Path],
    no_dropout_student: Path,
    tmp_path: Path,
    extra: tuple[str, ...],
    steps: int,
) -> None:
    reference = one_process(*extra)
    done = train(2, tmp_path / "two", *extra)

    _assert_same_student(tmp_path / "two", reference, no_dropout_student, steps)
    _assert_only_rank_0_wrote(tmp_path / "two", reference)
    assert (done.stdout + done.stderr).count("wrote student") == 1


def test_a_killed_two_process_run_resumes_to_the_same_student(
    train: Callable[..., subprocess.CompletedProcess[str]],
    one_process: Callable[..., Path],
    no_dropout_student: Path,
    tmp_path: Path,
) -> None:
    root = tmp_path / "two"
    train(2, root, *_MARGIN_MSE, kill_at=3)  # rank 0 killed once step 3 is trained

    checkpoint = training_dir(root / "student") / "checkpoints" / "checkpoint-2"
    assert (checkpoint / MARKER).is_file() and not (root / "student").exists()
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in checkpoint.iterdir()}

    done = train(2, root, *_MARGIN_MSE)  # the same command again
    assert "resuming" in done.stderr
    reference = one_process(*_MARGIN_MSE)
    _assert_same_student(root, reference, no_dropout_student, steps=6)
    assert json.loads((root / "student" / "manifest.json").read_text())["counts"]["resumed_at_step"] == 2
    _assert_only_rank_0_wrote(root, reference)
