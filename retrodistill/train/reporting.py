"""Where a ``train-student`` run reports its log besides ``train_log.json``: TensorBoard, Weights & Biases.

``report_to`` (:attr:`retrodistill.config.TrainConfig.report_to`) names the integrations; each is the
Hugging Face trainer's own callback, fed every entry the trainer logs: ``loss``, each ``loss_<label>``
of a ``combined`` loss, ``learning_rate``, ``grad_norm`` and every ``eval_*`` figure. The trainer
renames the keys on the way (``loss`` -> ``train/loss``, ``eval_dev_nDCG@10`` -> ``eval/dev_nDCG@10``)::

    .NAME.training/logs/    TensorBoard event files, written while the run trains
                            (watch them: tensorboard --logdir .NAME.training/logs); kept with the
                            checkpoints, so a resumed run appends to them
    NAME/logs/              the same files, published with the student

A resumed run's writer marks the step it starts from, so TensorBoard drops what the interrupted
run had logged after its checkpoint (those steps are logged again). A run started afresh first
deletes the logs left by one that ended before its first checkpoint or was discarded with
``--overwrite``.

``wandb`` names the run after ``NAME`` (the project is ``$WANDB_PROJECT``, else the trainer's
``huggingface``); with ``WANDB_MODE=offline`` the run is written under ``$WANDB_DIR/wandb/offline-run-*``
for a later ``wandb sync``. The run is finished when training ends, unless the caller had started
one (then it is the caller's to finish).
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from retrodistill.config import ConfigError

#: The integrations ``report_to`` may name, each with the package it needs (and the extra that installs it).
REPORTERS: dict[str, str] = {"tensorboard": "tensorboard", "wandb": "wandb"}
#: TensorBoard's folder, in the staging folder while training and in the student once published.
LOGS = "logs"


def check_report_to(names: Sequence[str]) -> list[str]:
    """The integrations in ``names``, each once and in order, once each is known and installed.

    Checked before any data or model is loaded, so a typo or a missing package costs no training.

    Raises:
        ConfigError: a name is not one of :data:`REPORTERS`.
        ImportError: its package is not installed, naming the extra that installs it.
    """
    unique = list(dict.fromkeys(names))
    for name in unique:
        if name not in REPORTERS:
            known = ", ".join(REPORTERS)
            raise ConfigError(f"report_to: unknown integration {name!r}; known: {known} (an empty list: neither)")
        if importlib.util.find_spec(REPORTERS[name]) is None:
            raise ImportError(
                f"report_to: {name} needs the {REPORTERS[name]} package: pip install 'retrodistill[{name}]'"
            )
    return unique


@contextmanager
def reporting(trainer: Any, names: Sequence[str], log_dir: Path, *, resumed_at: int | None) -> Iterator[None]:
    """Point the trainer's integrations at this run for the duration of ``trainer.train()``.

    TensorBoard writes into ``log_dir`` (rather than the trainer's default ``output_dir/runs/DATE_HOST``),
    from the main process only; a resumed run (``resumed_at``: its checkpoint's step) purges the
    steps after it, and a fresh run starts from an empty ``log_dir``. The writer is closed and a wandb
    run this training started is finished on the way out, also when training fails.

    Args:
        trainer: the built trainer, whose ``args.report_to`` holds ``names``.
        names: the integrations, as :func:`check_report_to` returned them.
        log_dir: TensorBoard's folder (``.NAME.training/logs``).
        resumed_at: the step of the checkpoint the run resumes from, ``None`` for a fresh run.
    """
    main = trainer.is_world_process_zero()
    writer = None
    if "tensorboard" in names and main:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        if resumed_at is None:
            shutil.rmtree(log_dir, ignore_errors=True)
        writer = SummaryWriter(log_dir=str(log_dir), purge_step=None if resumed_at is None else resumed_at + 1)
        trainer.remove_callback(TensorBoardCallback)
        trainer.add_callback(TensorBoardCallback(tb_writer=writer))
    wandb = None
    if "wandb" in names and main:
        import wandb as wandb_module

        # The trainer's callback starts a run only where none is active: one started here is ours to finish.
        wandb = wandb_module if wandb_module.run is None else None
    failed = True
    try:
        yield
        failed = False
    finally:
        if writer is not None:
            writer.close()
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def publish_logs(work: Path, staged: Path) -> None:
    """Copy the staging folder's TensorBoard logs (if any) into the student being published."""
    source = work / LOGS
    if source.is_dir():
        shutil.copytree(source, staged / LOGS, dirs_exist_ok=True)
