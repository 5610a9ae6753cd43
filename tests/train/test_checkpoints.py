"""The checkpoint bookkeeping of :mod:`retrodistill.train.checkpoints`, on folders alone (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrodistill.train.checkpoints import (
    MARKER,
    ResumeError,
    checkpoint_step,
    complete_checkpoints,
    find_checkpoint,
    prepare_resume,
    run_identity,
    training_dir,
    whole_run_loss,
)

IDENTITY = run_identity({"out": "runs/student", "seed": 42, "save_steps": 2}, {"corpus": "sha256:c"})


def _checkpoint(folder: Path, step: int, marker: str | None = "ok", identity: dict | None = None) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text("{}")
    if marker == "ok":
        (path / MARKER).write_text(json.dumps({"step": step, "run": identity or IDENTITY}))
    elif marker is not None:
        (path / MARKER).write_text(marker)
    return path


def test_a_checkpoint_is_complete_only_with_its_marker_for_its_step(tmp_path: Path) -> None:
    assert checkpoint_step(_checkpoint(tmp_path, 2)) == 2
    assert checkpoint_step(_checkpoint(tmp_path, 4, marker=None)) is None
    assert checkpoint_step(_checkpoint(tmp_path, 6, marker='{"step": 6, "ru')) is None  # cut short
    assert checkpoint_step(_checkpoint(tmp_path, 8, marker='{"step": 6}')) is None  # another step's
    assert complete_checkpoints(tmp_path) == [tmp_path / "checkpoint-2"]


def test_the_staging_folder_sits_beside_the_output(tmp_path: Path) -> None:
    assert training_dir(tmp_path / "runs" / "student") == tmp_path / "runs" / ".student.training"


def test_runtime_settings_are_not_part_of_the_identity() -> None:
    assert IDENTITY == {"config": {"seed": 42}, "inputs": {"corpus": "sha256:c"}}


def test_resume_takes_the_newest_complete_checkpoint_and_deletes_the_rest(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    _checkpoint(checkpoints, 2)
    _checkpoint(checkpoints, 12)  # numbers, not names, order them
    _checkpoint(checkpoints, 14, marker=None)
    (tmp_path / "model").mkdir()

    # Every rank but the first gets the same answer and deletes nothing.
    assert (
        prepare_resume(tmp_path, IDENTITY, resume_from=None, overwrite=False, tidy=False)
        == checkpoints / "checkpoint-12"
    )
    assert (checkpoints / "checkpoint-14").is_dir() and (tmp_path / "model").is_dir()
    assert prepare_resume(tmp_path, IDENTITY, resume_from=None, overwrite=False) == checkpoints / "checkpoint-12"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-12", "checkpoint-2"]
    assert not (tmp_path / "model").exists()

    # --resume-from an older one: the later ones belong to a future this run replaces.
    assert prepare_resume(tmp_path, IDENTITY, resume_from=checkpoints, overwrite=False) == checkpoints / "checkpoint-12"
    assert prepare_resume(tmp_path, IDENTITY, resume_from=checkpoints / "checkpoint-2", overwrite=False) == (
        checkpoints / "checkpoint-2"
    )
    assert [p.name for p in checkpoints.iterdir()] == ["checkpoint-2"]


def test_checkpoints_of_other_settings_are_refused_or_discarded(tmp_path: Path) -> None:
    other = run_identity({"seed": 7}, {"corpus": "sha256:c"})
    _checkpoint(tmp_path / "checkpoints", 2, identity=other)
    with pytest.raises(ResumeError, match="seed: checkpoint has 7, given 42"):
        prepare_resume(tmp_path, IDENTITY, resume_from=None, overwrite=False)
    with pytest.raises(ResumeError, match="seed: checkpoint has 7, given 42"):
        prepare_resume(tmp_path, IDENTITY, resume_from=tmp_path / "checkpoints", overwrite=True)
    assert prepare_resume(tmp_path, IDENTITY, resume_from=None, overwrite=True) is None
    assert not (tmp_path / "checkpoints").exists()


def test_resume_from_a_folder_without_a_complete_checkpoint_is_refused(tmp_path: Path) -> None:
    half = _checkpoint(tmp_path, 4, marker=None)
    with pytest.raises(ResumeError, match=f"is a checkpoint without its {MARKER}"):
        find_checkpoint(half)
    with pytest.raises(ResumeError, match=f"holds no checkpoint-N folder with a {MARKER}"):
        find_checkpoint(tmp_path)


def test_whole_run_loss_adds_the_logged_steps_before_the_resume() -> None:
    # Entries are means since the previous one: steps 1 (1.0), 2-3 (3.0); the resumed run trained 4-5 (2.0).
    log = [{"loss": 1.0, "step": 1}, {"loss": 3.0, "step": 3}, {"learning_rate": 0.1, "step": 3}]
    assert whole_run_loss(log, 3, 2.0, 5) == pytest.approx((1.0 * 1 + 3.0 * 2 + 2.0 * 2) / 5)
    assert whole_run_loss(log, 4, 2.0, 5) is None  # no entry at the resumed step: unknown, not guessed
