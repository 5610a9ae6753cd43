"""``train-student`` checkpoints and exact resume (:mod:`retrodistill.train.checkpoints`).

A run is killed with SIGKILL in a child process running the real CLI (a hook of the checkpoint
callback kills it at a chosen step), then the same command is run again; its student must equal
an uninterrupted run's. The toy set gives 12 positives; two epochs in batches of 4 are 6 steps,
with a checkpoint every 2 (dropout is on in the tiny BERT, so the RNG states matter too).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from retrodistill.cli.app import app
from retrodistill.config import DataConfig, LossConfig, StudentConfig, TeacherEmbeddingsConfig, TrainConfig
from retrodistill.data.candidates import CandidateSet
from retrodistill.data.store import TeacherStore
from retrodistill.train.checkpoints import MARKER, PROJECTION, CheckpointCallback, training_dir
from retrodistill.train.run import run

runner = CliRunner()

# Runs the CLI and SIGKILLs itself: "after-step K" once step K is trained (checkpoints up to K
# complete), "while-saving K" once the trainer wrote checkpoint-K but before it is marked complete,
# "after-saving K" once checkpoint-K is complete.
_KILLED_CHILD = """
import os, signal, sys
from retrodistill.train.checkpoints import CheckpointCallback

mode, step = sys.argv[1], int(sys.argv[2])
if mode == "after-step":
    stepped = CheckpointCallback.on_step_end
    def on_step_end(self, args, state, control, **kwargs):
        stepped(self, args, state, control, **kwargs)
        if state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
    CheckpointCallback.on_step_end = on_step_end
else:
    marked = CheckpointCallback.on_save
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == step and mode == "while-saving":
            os.kill(os.getpid(), signal.SIGKILL)
        marked(self, args, state, control, **kwargs)
        if state.global_step == step:  # "after-saving"
            os.kill(os.getpid(), signal.SIGKILL)
    CheckpointCallback.on_save = on_save
from retrodistill.cli.app import main
sys.argv = ["retrodistill", *sys.argv[3:]]
main()
"""


def _args(toy_dir: Path, tiny_st_dir: Path, store: TeacherStore, out: Path, *extra: str) -> list[str]:
    return [
        "train-student", "--store", str(store.path), "--student", str(tiny_st_dir), "--dataset", str(toy_dir),
        "--negatives", "2", "--epochs", "2", "--batch-size", "4", "--set", "logging_steps=1",
        "--set", "learning_rate=0.001",
        "--save-steps", "2", "--out", str(out), *extra,
    ]  # fmt: skip


def _killed(mode: str, step: int, args: list[str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_CHILD, mode, str(step), *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == -9, done.stdout + done.stderr


def _invoke(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def _fail_at_step(patch: pytest.MonkeyPatch, step: int) -> None:
    """Make a run raise once ``step`` is trained (after the callback's own work at that step)."""
    stepped = CheckpointCallback.on_step_end

    def on_step_end(self: CheckpointCallback, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        stepped(self, args, state, control, **kwargs)
        if state.global_step == step:
            raise RuntimeError("a failure mid-run")

    patch.setattr(CheckpointCallback, "on_step_end", on_step_end)


def _weights(student: Path) -> dict[str, torch.Tensor]:
    return load_file(str(student / "model.safetensors"))


def _assert_same_student(student: Path, reference: Path, steps: int = 6) -> None:
    got, want = _weights(student), _weights(reference)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
    manifests = [json.loads((s / "manifest.json").read_text()) for s in (student, reference)]
    assert [m["counts"]["steps"] for m in manifests] == [steps, steps]
    # The mean loss of all 6 steps, though the resumed process trained only the last ones.
    assert manifests[0]["train_loss"] == pytest.approx(manifests[1]["train_loss"], rel=1e-6)


@pytest.fixture(scope="module")
def uninterrupted(
    toy_dir: Path, tiny_st_dir: Path, cross_store: TeacherStore, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "student"
    _invoke(_args(toy_dir, tiny_st_dir, cross_store, out))
    assert not training_dir(out).exists()  # removed once the student is published
    # Training moved the weights far beyond the tolerance, so equal students are not merely untrained ones.
    trained, initial = _weights(out), _weights(tiny_st_dir)
    assert max((trained[k] - initial[k]).abs().max().item() for k in initial) > 1e-3
    return out


@pytest.mark.parametrize(
    ("mode", "step", "kept", "resumed_at"),
    [
        ("after-step", 3, ["checkpoint-2"], 2),  # one step past checkpoint-2: that step is trained again
        ("after-saving", 6, ["checkpoint-4", "checkpoint-6"], 6),  # trained, not yet published
    ],
)
def test_a_killed_run_resumes_to_the_uninterrupted_student(
    toy_dir: Path,
    tiny_st_dir: Path,
    cross_store: TeacherStore,
    tmp_path: Path,
    uninterrupted: Path,
    mode: str,
    step: int,
    kept: list[str],
    resumed_at: int,
) -> None:
    out = tmp_path / "student"
    args = _args(toy_dir, tiny_st_dir, cross_store, out)
    _killed(mode, step, args)

    work = training_dir(out)
    assert not out.exists()
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == kept
    assert json.loads((work / "checkpoints" / kept[-1] / MARKER).read_text())["step"] == resumed_at

    _invoke(args)  # the same command again
    _assert_same_student(out, uninterrupted)
    assert json.loads((out / "manifest.json").read_text())["counts"]["resumed_at_step"] == resumed_at
    assert not work.exists()


def test_a_checkpoint_killed_while_saving_is_ignored(
    toy_dir: Path, tiny_st_dir: Path, cross_store: TeacherStore, tmp_path: Path, uninterrupted: Path
) -> None:
    out = tmp_path / "student"
    args = _args(toy_dir, tiny_st_dir, cross_store, out)
    _killed("while-saving", 4, args)

    half = training_dir(out) / "checkpoints" / "checkpoint-4"
    assert (half / "trainer_state.json").is_file() and not (half / MARKER).exists()
    # Even a checkpoint that looks whole is not trusted without its marker.
    (half / "model.safetensors").write_bytes((half / "model.safetensors").read_bytes()[:100])

    _invoke(args)
    _assert_same_student(out, uninterrupted)
    assert json.loads((out / "manifest.json").read_text())["counts"]["resumed_at_step"] == 2


def test_resume_from_names_the_checkpoint(
    toy_dir: Path, tiny_st_dir: Path, cross_store: TeacherStore, tmp_path: Path, uninterrupted: Path
) -> None:
    out = tmp_path / "student"
    args = _args(toy_dir, tiny_st_dir, cross_store, out, "--set", "save_total_limit=null")
    _killed("after-step", 5, args)
    checkpoints = training_dir(out) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    copy = tmp_path / "kept" / "checkpoint-2"
    shutil.copytree(checkpoints / "checkpoint-2", copy)

    # Not a checkpoint, or one of a run with other settings: refused before training, one line each.
    for bad, message in [
        ([str(tmp_path)], f"holds no checkpoint-N folder with a {MARKER}"),
        ([str(copy), "--seed", "7"], "seed: checkpoint has 42, given 7"),
    ]:
        result = runner.invoke(app, [*args, "--resume-from", *bad])
        assert result.exit_code == 2 and message in result.output, result.output

    _invoke([*args, "--resume-from", str(copy)])  # the older checkpoint, not the newest
    _assert_same_student(out, uninterrupted)
    assert json.loads((out / "manifest.json").read_text())["counts"]["resumed_at_step"] == 2


def test_a_failed_run_keeps_its_checkpoints_and_other_settings_are_refused(
    toy_dir: Path, tiny_st_dir: Path, cross_store: TeacherStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "student"
    args = _args(toy_dir, tiny_st_dir, cross_store, out)
    with monkeypatch.context() as patch:
        _fail_at_step(patch, 3)
        result = runner.invoke(app, args)
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    work = training_dir(out)
    assert (work / "checkpoints" / "checkpoint-2" / MARKER).is_file() and not out.exists()
    assert not (tmp_path / ".student.lock").exists()

    result = runner.invoke(app, [*args, "--set", "weight_decay=0.1"])
    assert result.exit_code == 2, result.output
    assert "other settings" in result.output and "weight_decay: checkpoint has 0.01, given 0.1" in result.output
    assert (work / "checkpoints" / "checkpoint-2").is_dir()

    _invoke([*args, "--set", "weight_decay=0.1", "--overwrite"])  # discards them: a fresh run
    manifest = json.loads((out / "manifest.json").read_text())
    assert "resumed_at_step" not in manifest["counts"] and manifest["counts"]["steps"] == 6
    assert not work.exists()


@pytest.mark.parametrize("loss", ["embedding", "infonce"])
def test_other_objectives_resume_exactly(
    toy_dir: Path,
    tiny_st_dir: Path,
    cross_candidates: CandidateSet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loss: str,
) -> None:
    """An embedding loss's student -> teacher map lives in the loss, not the model: it is checkpointed
    beside it. InfoNCE batches with the no-duplicates sampler, which the resumed run must replay too."""
    embeddings = TeacherEmbeddingsConfig(path=str(tmp_path / "teacher-embeddings"), model=str(tiny_st_dir))
    config = TrainConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        store=None,
        candidates=str(cross_candidates.path),
        student=StudentConfig(model=str(tiny_st_dir), max_seq_length=64),
        loss=LossConfig(loss, {"projection": "linear"} if loss == "embedding" else {}),
        teacher_embeddings=embeddings if loss == "embedding" else TeacherEmbeddingsConfig(),
        negatives=2,
        batch_size=4,
        max_steps=4,
        save_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
    )
    reference = run(dataclasses.replace(config, out=str(tmp_path / "reference")), show_progress=False)
    resumed = dataclasses.replace(config, out=str(tmp_path / "student"))
    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="mid-run"):
        _fail_at_step(patch, 3)
        run(resumed, show_progress=False)
    checkpoint = training_dir(resumed.out) / "checkpoints" / "checkpoint-2"
    assert (checkpoint / PROJECTION).is_file() == (loss == "embedding")

    out = run(resumed, show_progress=False)
    _assert_same_student(out, reference, steps=4)
    if loss == "embedding":
        got, want = (load_file(str(p / "teacher_projection.safetensors")) for p in (out, reference))
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
