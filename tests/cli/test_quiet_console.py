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
