"""A full disk and a read-only folder: one line, exit 2, and a re-run after freeing space resumes.

Needs root to mount a small tmpfs (as CI and the developers' machines run); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    if not _mount(disk, "size=24k"):
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


@pytest.fixture()
def read_only(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "ro"
    if not _mount(folder, "ro,size=1m"):
        pytest.skip("cannot mount a tmpfs here")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def _one_line(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def _ok(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def candidates(tmp_path_factory: pytest.TempPathFactory, toy_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("full-disk") / "candidates"
    _ok(["mine-negatives", "--dataset", str(toy_dir), "--split", "train", "--out", str(out), "--k", "20"])
    return out


def test_score_teacher_on_a_full_disk_stops_in_one_line_and_resumes(
    small_disk: Path, candidates: Path, toy_dir: Path, tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    args = ["score-teacher", "--model", str(tiny_cross_encoder_dir), "--dataset", str(toy_dir)]
    args += ["--candidates", str(candidates), "--part-size", "8"]
    _ok([*args, "--out", str(tmp_path / "reference")])
    (small_disk / "filler").write_bytes(b"\0" * 8_000)  # leaves room for the lock, the manifest and a part or two
    line = _one_line([*args, "--out", str(small_disk / "scores")])
    assert "no space left on device" in line and "run the same command again" in line
    manifest = json.loads((small_disk / "scores" / "manifest.json").read_text())
    assert not manifest.get("complete") and manifest["parts"], "some parts were written before the disk filled"
    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,size=10m", str(small_disk)], check=True)
    _ok([*args, "--out", str(small_disk / "scores")])
    resumed = json.loads((small_disk / "scores" / "manifest.json").read_text())
    reference = json.loads((tmp_path / "reference" / "manifest.json").read_text())
    assert resumed["complete"] and resumed["fingerprint"] == reference["fingerprint"]


def test_evaluate_mine_and_train_on_a_full_disk(
    small_disk: Path, toy_dir: Path, candidates: Path, tiny_st_dir: Path
) -> None:
    (small_disk / "filler").write_bytes(b"\0" * 20_000)
    line = _one_line(["evaluate", "--dataset", str(toy_dir), "--model", "bm25s", "--out", str(small_disk / "ev")])
    assert "no space left on device" in line
    line = _one_line(["mine-negatives", "--dataset", str(toy_dir), "--split", "train", "--out", str(small_disk / "c")])
    assert "no space left on device" in line
    line = _one_line(
        ["train-student", "--set", "store=null", "--candidates", str(candidates), "--student", str(tiny_st_dir),
         "--dataset", str(toy_dir), "--loss", "infonce", "--negatives", "2", "--max-steps", "1",
         "--out", str(small_disk / "student")]
    )
    assert "no space left on device" in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no half-written student or staging left


@pytest.mark.parametrize("command", ["mine-negatives", "evaluate", "score-teacher", "train-student"])
def test_a_read_only_output_is_one_line(
    command: str, read_only: Path, candidates: Path, toy_dir: Path, tiny_cross_encoder_dir: Path, tiny_st_dir: Path,
    tmp_path: Path,
) -> None:
    out = str(read_only / "out")
    args = {
        "mine-negatives": ["mine-negatives", "--dataset", str(toy_dir), "--split", "train", "--out", out],
        "evaluate": ["evaluate", "--dataset", str(toy_dir), "--model", "bm25s", "--out", out],
        "score-teacher": [
            "score-teacher", "--model", str(tiny_cross_encoder_dir), "--dataset", str(toy_dir),
            "--candidates", str(candidates), "--out", out,
        ],
        "train-student": [  # no store: the teacher-free loss draws negatives from the candidates
            "train-student", "--set", "store=null", "--candidates", str(candidates), "--student", str(tiny_st_dir),
            "--dataset", str(toy_dir), "--loss", "infonce", "--negatives", "2", "--max-steps", "1", "--out", out,
        ],
    }[command]
    line = _one_line(args)
    assert "read-only file system" in line and str(read_only) in line, line
