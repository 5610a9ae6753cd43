"""benchmarks/gpu_check.sh: without a GPU it says so and runs nothing; its steps fit in 8 minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


def gpu_check(*args: str, hide_gpus: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    if hide_gpus:  # torch then sees no CUDA device, on a GPU machine too
        env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_without_a_gpu_it_says_so_runs_nothing_and_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = gpu_check("--out", str(out), hide_gpus=True)
    assert done.returncode == 2
    assert "no CUDA GPU visible" in done.stderr and "nothing was run" in done.stderr
    assert done.stdout == ""
    assert not out.exists()


def test_the_steps_timeouts_fit_in_eight_minutes() -> None:
    done = gpu_check("--plan")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["total_seconds"] <= 8 * 60
    assert sum(plan["steps"].values()) <= plan["total_seconds"]
    assert list(plan["steps"]) == ["gpu_tests", "scoring", "encoding", "faiss", "training"]


def test_an_unknown_step_is_refused() -> None:
    done = gpu_check("--steps", "scoring,warp-drive", "--plan")
    assert done.returncode == 2
    assert "unknown step(s) warp-drive" in done.stderr
