"""Training logs for the report: a ``train_log.json``, a student folder, or a TensorBoard folder.

Every source reads as the trainer's ``log_history``: a list of entries, each with its ``step``
(``[{"loss": 0.81, "loss_margin-mse": 0.64, "learning_rate": 2e-05, "step": 10}, ...]``):

- ``train_log.json``: written by ``train-student`` into the student folder, as the trainer kept it;
- a student folder: its ``train_log.json``;
- a TensorBoard folder (``report_to: [tensorboard]`` writes ``OUT/logs``, and ``.OUT.training/logs``
  while it trains): the scalars the trainer's TensorBoard callback wrote, one entry per step, the
  tags renamed back to log keys (``train/loss`` -> ``loss``, ``eval/dev_nDCG@10`` ->
  ``eval_dev_nDCG@10``). Where a step was logged twice (a resumed run logs again the steps after
  its checkpoint), the later value wins.

:func:`training_series` picks the curves the report draws out of such a log.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

TRAIN_LOG = "train_log.json"
EVENT_FILES = "events.out.tfevents.*"
#: The trainer's bookkeeping logged beside evaluation figures, which is not a figure of the model.
_EVAL_BOOKKEEPING = re.compile(
    r"eval_(?:.*_)?(?:runtime|samples_per_second|steps_per_second|model_preparation_time|jit_compilation_time)"
)
#: How the trainer's TensorBoard callback prefixes log keys (``transformers.integrations.rewrite_logs``).
_TAG_PREFIXES = {"train/": "", "eval/": "eval_", "test/": "test_"}

Series = dict[str, list[tuple[float, float]]]


def read_train_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a training log from a ``train_log.json``, a student folder or a TensorBoard folder.

    Raises:
        FileNotFoundError: the path does not exist.
        ImportError: it is a TensorBoard folder and tensorboard is not installed.
        ValueError: the JSON is malformed or not a list of objects; the folder holds neither a
            ``train_log.json`` nor one TensorBoard run; or no entry has a ``step`` and a ``loss…`` key.
    """
    path = Path(path)
    if path.is_dir():
        log = _read_json_log(path / TRAIN_LOG) if (path / TRAIN_LOG).is_file() else read_tensorboard(path)
    elif path.is_file():
        log = _read_json_log(path)
    else:
        raise FileNotFoundError(f"{path}: training log not found")
    if not training_series(log)[0]:
        raise ValueError(f"{path}: no entry of the training log has a 'step' and a key starting with 'loss'")
    return log


def _read_json_log(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON in training log ({err.msg})") from None
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: a training log must be a JSON list of objects (the trainer's log_history), "
            f"got {type(data).__name__}"
        )
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {i} of the training log is {type(entry).__name__}, not an object")
    return data


def read_tensorboard(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The scalars of the one TensorBoard run in ``folder`` (or a subfolder) as a trainer log history.

    Raises:
        ImportError: tensorboard is not installed.
        ValueError: ``folder`` holds no event files, or the event files of several runs.
    """
    folder = Path(folder)
    runs = sorted({p.parent for p in folder.rglob(EVENT_FILES) if p.is_file()})
    if not runs:
        raise ValueError(
            f"{folder}: neither a {TRAIN_LOG} nor TensorBoard event files ({EVENT_FILES}); "
            f"give a student folder, its {TRAIN_LOG} or its logs/ folder"
        )
    if len(runs) > 1:
        names = ", ".join(str(r.relative_to(folder)) or "." for r in runs)
        raise ValueError(f"{folder}: holds {len(runs)} TensorBoard runs ({names}); give one of their folders")
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as err:
        raise ImportError(
            f"{folder}: reading TensorBoard logs needs tensorboard: pip install 'retrodistill[tensorboard]'"
        ) from err
    events = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0})  # 0: every point, not a sample
    events.Reload()
    entries: dict[int, dict[str, Any]] = {}
    for tag in events.Tags()["scalars"]:
        latest: dict[int, tuple[float, float]] = {}  # step -> (wall time, value)
        for event in events.Scalars(tag):
            if event.step not in latest or event.wall_time >= latest[event.step][0]:
                latest[event.step] = (event.wall_time, event.value)
        key = _log_key(tag)
        for step, (_, value) in latest.items():
            entries.setdefault(step, {"step": step})[key] = value
    return [entries[step] for step in sorted(entries)]


def _log_key(tag: str) -> str:
    for prefix, replacement in _TAG_PREFIXES.items():
        if tag.startswith(prefix):
            return replacement + tag[len(prefix) :]
    return tag


def training_series(log: Sequence[Mapping[str, Any]]) -> tuple[Series, Series]:
    """Split a log into ``(losses, evals)``, each ``{key: [(step, value), ...]}`` in log order.

    ``losses`` holds the keys starting with ``loss`` (``loss``, ``loss_margin-mse``, …) and
    ``eval_loss``; ``evals`` every other numeric ``eval_*`` key (``eval_dev_nDCG@10``,
    ``eval_dev_kendall_tau``, …) except the trainer's timing keys (``eval_runtime``,
    ``eval_samples_per_second``, …). Entries without a numeric ``step`` are skipped (the final
    summary entry has one, but its ``train_loss`` is an average, not a point of the curve, and is
    not a ``loss…`` key).
    """
    losses: Series = {}
    evals: Series = {}
    for entry in log:
        step = entry.get("step")
        if not _is_number(step):
            continue
        for key, value in entry.items():
            if not _is_number(value):
                continue
            point = (float(step), float(value))
            if key.startswith("loss") or key == "eval_loss":
                losses.setdefault(key, []).append(point)
            elif key.startswith("eval_") and not _EVAL_BOOKKEEPING.fullmatch(key):
                evals.setdefault(key, []).append(point)
    return losses, evals


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
