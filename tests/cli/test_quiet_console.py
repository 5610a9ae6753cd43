"""Without -v the console holds our lines and bars only: no third-party progress bars or notices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_evaluate_prints_no_third_party_bars(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RETRODISTILL_CACHE": str(tmp_path / "cache")}
    env.pop("HF_HUB_VERBOSITY", None)
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    argv = [sys.executable, "-m", "retrodistill", "evaluate", "--dataset", str(toy_dir)]
    argv += ["--model", str(tiny_st_dir), "--out", str(tmp_path / "eval"), "--rel-threshold", "1"]
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    shown = run.stdout + run.stderr
    assert "nDCG@10" in shown
    for noise in ("Loading weights", "Batches:", "it/s]", "DEBUG"):
        assert noise not in shown, f"{noise!r} on the console:\n{shown[-2000:]}"


def test_train_student_prints_no_log_dicts_or_third_party_bars(
    toy_dir: Path, tiny_st_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RETRODISTILL_CACHE": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "retrodistill"]
    data = ["--dataset", str(toy_dir)]
    steps = [
        [*cli, "mine-negatives", *data, "--split", "train", "--k", "20", "--out", str(tmp_path / "c")],
        [*cli, "score-teacher", "--teacher", "bi-encoder", "--model", str(tiny_st_dir), *data]
        + ["--candidates", str(tmp_path / "c"), "--out", str(tmp_path / "s")],
        [*cli, "train-student", "--store", str(tmp_path / "s"), "--student", str(tiny_st_dir), "--layers", "1"]
        + [*data, "--out", str(tmp_path / "st"), "--negatives", "2", "--max-steps", "6", "--batch-size", "2"]
        + ["--set", "logging_steps=2"],
    ]
    for argv in steps:
        run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
    shown = run.stdout + run.stderr  # the train-student step's console
    assert "wrote student" in shown
    for noise in ("{'loss'", "'train_runtime'", "Computing widget examples", "warmup_ratio", "it/s]"):
        assert noise not in shown, f"{noise!r} on the console:\n{shown[-2000:]}"
