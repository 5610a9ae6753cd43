"""evaluate's run files, qrels and identical-id rule can come from the YAML config too."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from retrodistill.cli.app import app
from retrodistill.evaluate.run_files import write_run


def test_runs_qrels_and_the_rule_from_yaml(toy_dir: Path, tmp_path: Path) -> None:
    run = {"q1": {"q1": 3.0, "d1": 2.0}, "q2": {"d3": 1.0}}
    write_run(tmp_path / "mine.trec", run, tag="mine")
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"runs: [mine={tmp_path / 'mine.trec'}]\n"
        f"qrels: {toy_dir / 'qrels' / 'test.tsv'}\n"
        "ignore_identical_ids: true\n"
        "measures: [nDCG@10]\n"
        "rel_threshold: 1\n"
    )
    result = CliRunner().invoke(app, ["evaluate", "-c", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(data["models"]) == ["mine"]
    (dataset,) = data["datasets"].values()
    assert dataset["ignore_identical_ids"] is True
