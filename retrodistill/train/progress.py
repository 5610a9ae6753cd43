"""Training progress as one rich bar: steps done of all, ETA, the current loss; no printed log dicts.

The Hugging Face trainer shows a tqdm bar and, around it, prints every log entry as a Python dict
(``{'loss': ..., 'grad_norm': ...}``, ``{'train_runtime': ...}``); with its bar disabled it prints the
dicts alone. :func:`use_rich_progress` replaces both with :class:`RichProgress`, the toolkit's bar
(:mod:`retrodistill.progress`), whose label carries the latest loss. The log entries still reach
``train_log.json`` and any ``report_to`` integration: only the console changes.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from transformers import TrainerCallback


class RichProgress(TrainerCallback):
    """A :class:`~transformers.TrainerCallback` drawing one bar over the optimisation steps (main process only)."""

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None
        self._advance: Any = None
        self._bar: Any = None
        self._task: Any = None
        self._done = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        from retrodistill.progress import new_progress

        self._bar = new_progress("steps")
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self._bar)
        # A resumed run starts at its checkpoint's step: the bar starts there too.
        self._done = int(state.global_step)
        self._task = self._bar.add_task("training", total=int(state.max_steps) or None, completed=self._done)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=int(state.global_step))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self._bar is None or not logs:
            return
        loss = logs.get("loss")
        if isinstance(loss, int | float) and math.isfinite(loss):
            epoch = state.epoch or 0.0
            self._bar.update(self._task, description=f"training (epoch {epoch:.2f}, loss {loss:.4g})")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._bar = None


def use_rich_progress(trainer: Any, enabled: bool) -> None:
    """Take the trainer's console output over: its tqdm bar and printed log dicts go, :class:`RichProgress` comes.

    ``enabled=False`` leaves no bar and prints nothing either (the trainer's printer goes too).
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if enabled:
        trainer.add_callback(RichProgress())
