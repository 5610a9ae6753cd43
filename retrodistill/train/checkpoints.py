"""Checkpoints of a ``train-student`` run, and where a re-run resumes from.

A run trains in a staging folder beside its output whose name does not change between runs, so
a re-run of the same command finds it (other stages' staging folders carry the process id)::

    .NAME.training/
      checkpoints/checkpoint-N/           the trainer's checkpoint after step N: the student, optimizer,
                                          scheduler, RNG states, trainer_state.json (step, log history)
        teacher_projection.safetensors    the loss's learned student -> teacher map, when it has one
        checkpoint.json                   written last and atomically: {"step": N, "run": identity}
      model/                              the student being written; renamed onto NAME once complete

A checkpoint is **complete** once its ``checkpoint.json`` exists: it is written (temp file and
rename) only after every other file of the checkpoint is written and fsynced, on every rank. A
folder without it (a run killed while saving) is never resumed from and is deleted on resume.
The trainer's own rotation would delete the previous checkpoint before the new one is marked, so
it is off; :class:`CheckpointCallback` keeps the newest ``save_total_limit`` complete ones itself.

``identity`` is what must be equal for a resumed run to end where the uninterrupted one would:
the config (less the keys in :data:`RUNTIME_KEYS`, which change no weight) and the inputs'
fingerprints. The trainer itself restores the rest (``Trainer.train(resume_from_checkpoint=…)``):
optimizer, scheduler, RNG states, and the sampler's position, by rebuilding the seeded sampler and
skipping the batches already trained. The examples (every epoch's negatives) are drawn from the
seed alone (:func:`retrodistill.train.examples.build_examples`), so a re-run draws the same ones.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from retrodistill.artifacts import fsync_dir, fsync_file, write_json_atomic

logger = logging.getLogger(__name__)

MARKER = "checkpoint.json"
PROJECTION = "teacher_projection.safetensors"
#: Config keys a resumed run may change: where and how often it saves, logs, evaluates and feeds the
#: GPU. The held-out queries (``eval_holdout``) change the training examples, and the best-checkpoint
#: choice the published student: those stay part of the run's identity.
RUNTIME_KEYS = (
    "out",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "dataloader_num_workers",
    "report_to",
    "eval_steps",
    "eval_dataset",
    "eval_split",
    "eval_queries",
    "eval_corpus",
    "eval_candidates",
    "eval_measures",
)
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


class ResumeError(ValueError):
    """A checkpoint cannot be resumed by this run."""


def training_dir(out: str | os.PathLike[str]) -> Path:
    """The staging folder of the run that writes ``out``: ``.NAME.training`` beside it (same filesystem)."""
    out = Path(out)
    return out.with_name(f".{out.name}.training")


def run_identity(config: Mapping[str, Any], inputs: Mapping[str, str]) -> dict[str, Any]:
    """What a checkpoint must share with a run to be resumed by it (see the module docstring)."""
    return {
        "config": {k: v for k, v in config.items() if k not in RUNTIME_KEYS},
        "inputs": dict(inputs),
    }


def checkpoint_step(folder: Path) -> int | None:
    """``N`` of a ``checkpoint-N`` folder whose marker says it is complete; ``None`` otherwise."""
    match = _CHECKPOINT.fullmatch(folder.name)
    if match is None or not folder.is_dir():
        return None
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    step = int(match.group(1))
    return step if isinstance(marker, dict) and marker.get("step") == step else None


def complete_checkpoints(folder: Path) -> list[Path]:
    """The complete ``checkpoint-N`` folders in ``folder``, oldest (lowest N) first."""
    if not folder.is_dir():
        return []
    found = [(step, path) for path in folder.iterdir() if (step := checkpoint_step(path)) is not None]
    return [path for _, path in sorted(found)]


def remove_incomplete(folder: Path) -> list[Path]:
    """Delete the ``checkpoint-N`` folders in ``folder`` that are not complete; return them."""
    removed = []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if _CHECKPOINT.fullmatch(path.name) and checkpoint_step(path) is None:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _differences(recorded: Mapping[str, Any], identity: Mapping[str, Any]) -> list[str]:
    """``key: checkpoint has X, given Y`` for every leaf where two identities differ."""

    def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(value, Mapping):
            flat: dict[str, Any] = {}
            for key, item in value.items():
                flat.update(flatten(item, f"{prefix}{key}."))
            return flat
        return {prefix[:-1]: value}

    old, new = flatten(recorded), flatten(identity)
    return [
        f"{key.removeprefix('config.')}: checkpoint has {old.get(key)!r}, given {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def read_marker(checkpoint: Path) -> dict[str, Any]:
    data = json.loads((checkpoint / MARKER).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ResumeError(f"{checkpoint / MARKER}: expected a JSON object")
    return data


def check_resumable(checkpoint: Path, identity: Mapping[str, Any]) -> None:
    """Raise :class:`ResumeError` naming every setting or input in which ``checkpoint``'s run differs."""
    differences = _differences(read_marker(checkpoint).get("run") or {}, identity)
    if differences:
        raise ResumeError(
            f"{checkpoint} was saved by a run with other settings or inputs, so this run cannot resume it:\n  "
            + "\n  ".join(differences)
        )


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint ``--resume-from`` names: a complete ``checkpoint-N`` folder, or the newest in a folder.

    ``path`` may be a checkpoint, a folder of them (``checkpoints/``), or a run's staging folder.

    Raises:
        ResumeError: ``path`` holds no complete checkpoint.
    """
    path = Path(path)
    if checkpoint_step(path) is not None:
        return path
    for folder in (path, path / "checkpoints"):
        found = complete_checkpoints(folder)
        if found:
            return found[-1]
    what = "is a checkpoint without its" if _CHECKPOINT.fullmatch(path.name) else "holds no checkpoint-N folder with a"
    raise ResumeError(f"--resume-from {path} {what} {MARKER} (written when a checkpoint is complete)")


def prepare_resume(
    work: Path,
    identity: Mapping[str, Any],
    *,
    resume_from: str | os.PathLike[str] | None,
    overwrite: bool,
    tidy: bool = True,
) -> Path | None:
    """Tidy the staging folder ``work`` and return the checkpoint to resume from (``None``: start afresh).

    Incomplete checkpoints and a half-written ``model/`` are deleted. Complete checkpoints of a run
    with other settings are refused, or deleted with ``overwrite``. ``resume_from`` names the
    checkpoint explicitly (any folder, :func:`find_checkpoint`); otherwise the newest complete one in
    ``work`` is taken. With ``tidy=False`` (every rank but the first) nothing is deleted, and the
    answer is the same.

    Raises:
        ResumeError: naming the differences, and what to do.
    """
    checkpoints = work / "checkpoints"
    explicit = find_checkpoint(resume_from) if resume_from is not None else None
    if explicit is not None:
        check_resumable(explicit, identity)
    if tidy:
        for path in remove_incomplete(checkpoints):
            logger.warning("%s was not completely written (the run stopped while saving it): deleted", path)
        shutil.rmtree(work / "model", ignore_errors=True)
    found = complete_checkpoints(checkpoints)
    if found:
        differences = _differences(read_marker(found[-1]).get("run") or {}, identity)
        if differences and not overwrite:
            raise ResumeError(
                f"{work} holds checkpoints of an unfinished train-student run with other settings or inputs:\n  "
                + "\n  ".join(differences)
                + "\nRun that command again to resume it, or pass --overwrite to discard its checkpoints."
            )
        if differences:
            if tidy:
                logger.warning("--overwrite: deleting the checkpoints of another run in %s", work)
                shutil.rmtree(checkpoints, ignore_errors=True)
            found = []
    if explicit is not None:
        # Checkpoints after the one asked for belong to a future this run replaces.
        step = checkpoint_step(explicit) or 0
        for path in found if tidy else []:
            if (checkpoint_step(path) or 0) > step and path.resolve() != explicit.resolve():
                shutil.rmtree(path, ignore_errors=True)
        return explicit
    return found[-1] if found else None


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(Path(folder) / name)
        fsync_dir(folder)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CheckpointCallback(TrainerCallback):  # type: ignore[misc]
    """After the trainer saves ``checkpoint-N``: add the projection, mark it complete, rotate.

    Args:
        identity: recorded in each marker (:func:`run_identity`).
        projection: the loss's learned projection (not part of the model the trainer saves), or ``None``.
        save_total_limit: how many complete checkpoints to keep (``None``: all).
    """

    def __init__(self, identity: Mapping[str, Any], projection: Any = None, save_total_limit: int | None = None):
        self.identity = dict(identity)
        self.projection = projection
        self.save_total_limit = save_total_limit

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # A log entry at every checkpoint's step (the trainer saves at the last step too), so a resumed
        # run can sum the loss of the steps before it.
        if args.save_strategy == "steps" and (
            state.global_step % args.save_steps == 0 or state.global_step >= state.max_steps
        ):
            control.should_log = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        _barrier()  # every rank has written its RNG state
        if state.is_world_process_zero:
            if self.projection is not None:
                from safetensors.torch import save_model

                save_model(self.projection, str(folder / PROJECTION))
            _fsync_tree(folder)
            write_json_atomic(folder / MARKER, {"step": state.global_step, "run": self.identity})
            if self.save_total_limit is not None:
                best = state.best_model_checkpoint  # load_best_model_at_end reloads it: never rotated out
                for old in complete_checkpoints(folder.parent)[: -self.save_total_limit]:
                    if best is None or old.resolve() != Path(best).resolve():
                        shutil.rmtree(old, ignore_errors=True)
        _barrier()


def whole_run_loss(log_history: list[dict[str, Any]], resumed_at: int, loss_since: float, steps: int) -> float | None:
    """The mean training loss of a resumed run's every step, as an uninterrupted run reports it.

    The trainer's own figure covers the steps this process ran (``loss_since``, the mean over
    ``resumed_at + 1 … steps``); the steps before come from the restored log, which holds an entry at
    every checkpoint's step (:meth:`CheckpointCallback.on_step_end`): each ``loss`` is the mean over
    the steps since the previous entry.

    Returns:
        ``None`` when the log does not cover the steps up to ``resumed_at`` (a checkpoint of another tool).
    """
    total, last = 0.0, 0
    for entry in log_history:
        step = entry.get("step", 0)
        if "loss" in entry and step <= resumed_at:
            total += entry["loss"] * (step - last)
            last = step
    if last != resumed_at or steps <= 0:
        return None
    return (total + loss_since * (steps - resumed_at)) / steps


def load_projection(checkpoint: Path, projection: Any) -> None:
    """Restore the loss's projection saved beside ``checkpoint``'s student, when the loss has one."""
    if projection is None:
        return
    path = checkpoint / PROJECTION
    if not path.is_file():
        raise ResumeError(f"{checkpoint} has no {PROJECTION}, but this run's loss learns a projection")
    from safetensors.torch import load_model

    load_model(projection, str(path))
