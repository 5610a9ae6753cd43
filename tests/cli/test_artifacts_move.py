"""Artifacts work from anywhere: a store finds its candidates after a `cd` and after both folders moved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app

runner = CliRunner()


def _ok(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output


def test_a_store_finds_its_candidates_after_cd_and_move(
    tmp_path: Path, toy_dir: Path, tiny_cross_encoder_dir: Path, tiny_st_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)  # relative paths, as a user types them
    _ok("mine-negatives", "--dataset", str(toy_dir), "--split", "train", "--out", "runs/cand", "--k", "20")
    _ok(
        "score-teacher", "--model", str(tiny_cross_encoder_dir), "--dataset", str(toy_dir),
        "--candidates", "runs/cand", "--out", "runs/scores", "--part-size", "16",
    )
    manifest = json.loads((work / "runs/scores/manifest.json").read_text())
    assert manifest["config"]["candidates"] == "runs/cand"
    assert manifest["relative_paths"]["candidates"] == "../cand"

    moved = tmp_path / "elsewhere" / "runs"
    shutil.move(str(work / "runs"), str(moved))
    monkeypatch.chdir(tmp_path)
    train = [
        "train-student", "--store", str(moved / "scores"), "--student", str(tiny_st_dir), "--dataset", str(toy_dir),
        "--negatives", "2", "--max-steps", "1",
    ]
    _ok(*train, "--out", str(tmp_path / "student"))

    shutil.rmtree(moved / "cand")
    result = runner.invoke(app, [*train, "--out", str(tmp_path / "student2")])
    assert result.exit_code == 2, result.output
    assert "was made from candidates runs/cand, which is not at" in result.output
    assert "pass --candidates" in result.output
