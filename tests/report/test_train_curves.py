"""Training curves from a ``train_log.json``, a student folder or a TensorBoard folder.

See :mod:`retrodistill.report.train_logs` and :func:`retrodistill.report.plots.training_panels`.

The TensorBoard folders are written by the trainer's own callback (``transformers``'
``TensorBoardCallback``) fed the same entries as the JSON log, so both sources must give the same curves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from retrodistill.report import read_train_log
from retrodistill.report.plots import training_curves, training_panels
from retrodistill.report.train_logs import read_tensorboard, training_series

EVAL_FIGURES = ("nDCG@10", "RR@10", "kendall_tau", "spearman")


def log_history() -> list[dict[str, Any]]:
    """A combined loss logged every 10 steps, an evaluator's figures every 50, then the trainer's summary."""
    log: list[dict[str, Any]] = []
    for step in range(10, 110, 10):
        terms = {"loss_margin-mse": 1.5 / (1 + step / 10), "loss_infonce": 0.25}
        log.append({"loss": sum(terms.values()), **terms, "grad_norm": 3.0, "learning_rate": 5e-4, "step": step})
        if step % 50 == 0:
            figures = {f"eval_dev_{name}": 0.3 + step / 1000 + i / 100 for i, name in enumerate(EVAL_FIGURES)}
            timing = {"eval_runtime": 1.5, "eval_samples_per_second": 80.0, "eval_steps_per_second": 5.0}
            log.append({**figures, **timing, "epoch": step / 100, "step": step})
    log.append({"train_runtime": 40.0, "train_loss": 0.9, "total_flos": 0.0, "epoch": 1.0, "step": 100})
    return log


def write_tensorboard(folder: Path, log: list[dict[str, Any]], purge_step: int | None = None) -> None:
    """What the trainer's TensorBoard callback writes when the trainer logs ``log`` (it logs no ``step`` key)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(folder), purge_step=purge_step))
    args = TrainingArguments(output_dir=str(folder / "unused"), report_to="none")
    state = TrainerState()
    for entry in log:
        state.global_step = entry["step"]
        callback.on_log(args, state, TrainerControl(), logs={k: v for k, v in entry.items() if k != "step"})
    callback.on_train_end(args, state, TrainerControl())


def as_dict(curves: list[tuple[int, str, list[tuple[float, float]]]]) -> dict[str, list[tuple[float, float]]]:
    return {label: points for _, label, points in curves}


def test_every_loss_term_and_eval_figure_is_a_curve(tmp_path: Path) -> None:
    path = tmp_path / "train_log.json"
    path.write_text(json.dumps(log_history()))
    losses, evals = training_panels([("student", read_train_log(path))])
    losses_by_label, evals_by_label = as_dict(losses), as_dict(evals)
    assert list(losses_by_label) == ["loss", "loss: margin-mse", "loss: infonce"]
    assert losses_by_label["loss: margin-mse"][:2] == [(10.0, 1.5 / 2), (20.0, 1.5 / 3)]
    assert losses_by_label["loss"][-1] == (100.0, 1.5 / 11 + 0.25)
    # Every figure of the evaluator, at the eval steps; the trainer's timings are no figure.
    assert list(evals_by_label) == [f"dev_{name}" for name in EVAL_FIGURES]
    assert evals_by_label["dev_nDCG@10"] == [(50.0, 0.3 + 0.05), (100.0, 0.3 + 0.1)]
    assert evals_by_label["dev_spearman"] == [(50.0, 0.3 + 0.05 + 0.03), (100.0, 0.3 + 0.1 + 0.03)]
    assert training_curves([("student", read_train_log(path))]).png.startswith(b"\x89PNG")


def test_several_logs_name_their_run_in_each_label(tmp_path: Path) -> None:
    losses, evals = training_panels([("a", log_history()), ("b", log_history()[:3])])
    a_terms = [(0, "a: loss"), (0, "a: loss: margin-mse"), (0, "a: loss: infonce")]
    assert [(run, label) for run, label, _ in losses][:4] == [*a_terms, (1, "b: loss")]
    assert [label for _, label, _ in evals] == [f"a: dev_{name}" for name in EVAL_FIGURES]


def test_a_tensorboard_folder_gives_the_same_curves(tmp_path: Path) -> None:
    log = log_history()
    write_tensorboard(tmp_path / "student" / "logs", log)
    from_events = read_train_log(tmp_path / "student" / "logs")
    expected_losses, expected_evals = training_series(log)
    losses, evals = training_series(from_events)
    assert set(losses) == set(expected_losses) and set(evals) == set(expected_evals)
    for got, expected in ((losses, expected_losses), (evals, expected_evals)):
        for key, points in expected.items():
            assert [s for s, _ in got[key]] == [s for s, _ in points], key
            assert [v for _, v in got[key]] == pytest.approx([v for _, v in points], rel=1e-6), key  # float32
    # The trainer's other scalars come back under their log keys too.
    assert from_events[0]["learning_rate"] == pytest.approx(5e-4) and from_events[0]["grad_norm"] == 3.0


def test_a_resumed_run_s_steps_are_read_once_with_the_later_values(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tmp_path / "logs"
    write_tensorboard(folder, [{"loss": 1.0 + step, "step": step} for step in range(1, 6)])  # killed after step 5
    # Resumed from the checkpoint of step 3: the writer marks step 4, from which the first run's points are void.
    write_tensorboard(folder, [{"loss": 10.0 + step, "step": step} for step in range(4, 7)], purge_step=4)
    read = training_series(read_tensorboard(folder))[0]["loss"]
    assert read == [(1, 2.0), (2, 3.0), (3, 4.0), (4, 14.0), (5, 15.0), (6, 16.0)]
    events = EventAccumulator(str(folder))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]  # what TensorBoard itself shows


def test_a_student_folder_is_read_through_its_train_log(tmp_path: Path) -> None:
    student = tmp_path / "student"
    student.mkdir()
    (student / "train_log.json").write_text(json.dumps(log_history()))
    write_tensorboard(student / "logs", [{"loss": 99.0, "step": 1}])
    assert read_train_log(student) == log_history()


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ([], r"neither a train_log.json nor TensorBoard event files"),
        (["run-a", "run-b"], r"holds 2 TensorBoard runs \(run-a, run-b\); give one of their folders"),
    ],
)
def test_a_folder_without_one_log_is_named(tmp_path: Path, layout: list[str], message: str) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    for run in layout:
        write_tensorboard(folder / run, [{"loss": 1.0, "step": 1}])
    with pytest.raises(ValueError, match=message) as info:
        read_train_log(folder)
    assert str(folder) in str(info.value)


def test_without_tensorboard_the_error_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tensorboard(tmp_path, [{"loss": 1.0, "step": 1}])
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing.event_accumulator", None)
    with pytest.raises(ImportError, match=r"pip install 'retrodistill\[tensorboard\]'"):
        read_train_log(tmp_path)
