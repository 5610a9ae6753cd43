"""``report_to``: a training run's log in TensorBoard and wandb besides ``train_log.json``.

See :mod:`retrodistill.train.reporting`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app
from retrodistill.config import ConfigError, LossConfig, TrainConfig, load_config
from retrodistill.data.store import TeacherStore
from retrodistill.report import read_train_log
from retrodistill.report.train_logs import training_series
from retrodistill.train.checkpoints import CheckpointCallback, training_dir
from retrodistill.train.reporting import check_report_to
from retrodistill.train.run import run

runner = CliRunner()
#: Two weighted terms, so each must reach the logs beside their sum.
COMBINED = LossConfig(
    "combined", {"terms": [{"name": "margin-mse", "weight": 1.0}, {"name": "infonce", "weight": 0.1}]}
)


def combined(base: TrainConfig, **changes: Any) -> TrainConfig:
    return dataclasses.replace(base, loss=COMBINED, **changes)


def json_log(out: Path) -> list[dict[str, Any]]:
    return list(json.loads((out / "train_log.json").read_text()))


def assert_same_series(
    got: dict[str, list[tuple[float, float]]], expected: dict[str, list[tuple[float, float]]]
) -> None:
    assert set(got) == set(expected)
    for key, points in expected.items():
        assert [s for s, _ in got[key]] == [s for s, _ in points], key
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in points], rel=1e-6), key  # float32 events


def test_report_to_names_a_known_and_installed_integration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_report_to(["tensorboard", "tensorboard"]) == ["tensorboard"]
    with pytest.raises(ConfigError, match=r"^report_to: unknown integration 'tensorbord'; known: tensorboard, wandb"):
        check_report_to(["tensorbord"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    install = r"pip install 'retrodistill\[wandb\]'"
    with pytest.raises(ImportError, match=rf"^report_to: wandb needs the wandb package: {install}$"):
        check_report_to(["wandb"])


def test_report_to_is_read_from_yaml_and_the_command_line(tmp_path: Path) -> None:
    assert TrainConfig().report_to == []
    config = tmp_path / "train.yaml"
    config.write_text("report_to: [tensorboard, wandb]\n")
    assert load_config(TrainConfig, config).report_to == ["tensorboard", "wandb"]
    assert load_config(TrainConfig, overrides=["report_to=tensorboard"]).report_to == ["tensorboard"]


def test_cli_refuses_an_unknown_integration_before_training(tmp_path: Path) -> None:
    out = tmp_path / "student"
    done = runner.invoke(
        app, ["train-student", "--report-to", "tensorboard", "--report-to", "mlflow", "--out", str(out)]
    )
    assert done.exit_code == 2
    assert "report_to: unknown integration 'mlflow'" in done.output and len(done.output.strip().splitlines()) == 1
    assert not out.exists() and not training_dir(out).exists()


def test_cli_report_to_tensorboard_publishes_the_logs(
    toy_dir: Path, tiny_st_dir: Path, cross_store: TeacherStore, tmp_path: Path
) -> None:
    out = tmp_path / "student"
    args = ["--store", str(cross_store.path), "--student", str(tiny_st_dir), "--dataset", str(toy_dir)]
    args += ["--negatives", "2", "--batch-size", "4", "--max-steps", "2", "--set", "logging_steps=1"]
    done = runner.invoke(app, ["train-student", *args, "--report-to", "tensorboard", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "manifest.json").read_text())["config"]["report_to"] == ["tensorboard"]
    assert [s for s, _ in training_series(read_train_log(out / "logs"))[0]["loss"]] == [1, 2]


def test_tensorboard_logs_every_loss_term_and_are_published(base: TrainConfig) -> None:
    out = run(combined(base, report_to=["tensorboard"]), show_progress=False)
    assert not training_dir(out).exists()
    assert list((out / "logs").glob("events.out.tfevents.*"))
    from_events, from_json = training_series(read_train_log(out / "logs"))[0], training_series(json_log(out))[0]
    assert {"loss", "loss_margin-mse", "loss_infonce"} <= set(from_json)
    assert_same_series(from_events, from_json)


def test_tensorboard_logs_survive_a_resume(base: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = combined(base, report_to=["tensorboard"], max_steps=-1, epochs=2, save_steps=2)  # 6 steps
    stepped = CheckpointCallback.on_step_end

    def crash_at_step_4(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        stepped(self, args, state, control, **kwargs)
        if state.global_step == 4:  # step 3 is logged, checkpoint-2 is the newest
            raise RuntimeError("killed")

    monkeypatch.setattr(CheckpointCallback, "on_step_end", crash_at_step_4)
    with pytest.raises(RuntimeError, match="killed"):
        run(config, show_progress=False)
    logs = training_dir(config.out) / "logs"
    assert [s for s, _ in training_series(read_train_log(logs))[0]["loss"]] == [1, 2, 3]  # watchable while it trains
    monkeypatch.setattr(CheckpointCallback, "on_step_end", stepped)

    out = run(config, show_progress=False)
    assert json.loads((out / "manifest.json").read_text())["counts"]["resumed_at_step"] == 2
    assert_same_series(training_series(read_train_log(out / "logs"))[0], training_series(json_log(out))[0])
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    # The interrupted run's step 3 is purged: TensorBoard shows each step once.
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a ``run-ID.wandb`` file: wandb's LevelDB-style log (a 7-byte file header,
    then 32 KiB blocks of chunks, each with a 7-byte header: CRC, length, kind 1 full / 2 first / 3 middle / 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, header = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", header
    while pos + header <= len(data):
        if block - pos % block < header:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        if kind == 0:
            break
        pending += data[pos + header : pos + header + length]
        pos += header + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_holds_the_logged_history(
    base: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = run(combined(base, report_to=["wandb"]), show_progress=False)
    assert wandb.run is None  # the run this training started is finished
    (folder,) = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")
    (log,) = folder.glob("run-*.wandb")
    records = wandb_records(log)
    kinds = [record.WhichOneof("record_type") for record in records]
    assert kinds[-1] == "exit"
    (named,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    assert named.display_name == out.name
    history = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for record in records
        if record.WhichOneof("record_type") == "history"
    ]
    logged = [entry for entry in json_log(out) if "loss" in entry]
    steps = [entry for entry in history if "train/loss" in entry]
    assert [entry["train/global_step"] for entry in steps] == [entry["step"] for entry in logged] == [1, 2]
    for entry, expected in zip(steps, logged, strict=True):
        for key in ("loss", "loss_margin-mse", "loss_infonce"):
            assert entry[f"train/{key}"] == pytest.approx(expected[key]), key
