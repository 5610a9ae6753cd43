"""mine-negatives --ties: the order of equal BM25 scores, recorded; a bad value stops before any work."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from retrodistill.cli.app import app


def test_ties_row_is_recorded_and_a_bad_value_is_one_line(toy_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    argv = ["mine-negatives", "--dataset", str(toy_dir), "--split", "train", "--k", "5"]
    result = runner.invoke(app, [*argv, "--ties", "row", "--out", str(tmp_path / "row")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "row" / "manifest.json").read_text())
    assert manifest["retriever"]["ties"] == "row" and manifest["config"]["ties"] == "row"
    bad = runner.invoke(app, [*argv, "--ties", "random", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert "ties must be one of bm25s, row, got 'random'" in bad.output
    assert not (tmp_path / "bad").exists()
