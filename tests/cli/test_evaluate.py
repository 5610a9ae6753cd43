"""``retrodistill evaluate`` with several models, a baseline and the run cache; ``retrodistill datasets``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from retrodistill.cli.app import app

runner = CliRunner()


def test_two_models_against_a_baseline_then_cached(tmp_path: Path, toy_dir: Path, tiny_st_dir: Path) -> None:
    args = [
        "evaluate",
        "--dataset",
        str(toy_dir),
        "--model",
        f"bm25s,{tiny_st_dir}",
        "--baseline",
        "bm25s",
        "--measure",
        "nDCG@10",
        "--measure",
        "R@5",
        "--k",
        "10",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--set",
        "permutations=100",
    ]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert "0 cached, 2 computed" in first.output
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert list(results["models"]) == ["bm25s", str(tiny_st_dir)]
    assert {c["model"] for c in results["significance"]} == {str(tiny_st_dir)}
    assert (tmp_path / "a" / "results.csv").read_text().startswith("model,dataset,measure,value\n")

    second = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert "2 cached, 0 computed" in second.output
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert again["results"] == results["results"]


def test_unknown_baseline_is_a_clean_error(tmp_path: Path, toy_dir: Path) -> None:
    result = runner.invoke(
        app, ["evaluate", "--dataset", str(toy_dir), "--model", "bm25s", "--baseline", "x", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "baseline 'x' is not one of the models" in result.output


def test_datasets_lists_the_registry_with_its_rules() -> None:
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0, result.output
    for name in ("scifact", "arguana", "cqadupstack", "trec-dl-2019", "msmarco-dev-small"):
        assert name in result.output
