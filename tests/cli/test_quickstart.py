"""The quickstart, one of the README's two commands, at toy size: every step, one evaluation folder."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from retrodistill.cli.app import app

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_quickstart_on_the_toy_set_writes_an_evaluation_folder_that_report_reads(
    toy_dir: Path, tiny_st_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "quick"
    shown = invoke(
        "quickstart", "--dataset", str(toy_dir), "--teacher", str(tiny_st_dir), "--layers", "1",
        "--epochs", "1", "--negatives", "2", "--out", str(out),
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["nDCG@10"]) == {"teacher", "student-before", "student-after"}
    assert all(0.0 <= v <= 1.0 for v in summary["nDCG@10"].values())
    # The figures are the evaluation folder's, which is what `retrodistill evaluate` writes.
    results = json.loads((out / "eval" / "results.json").read_text())
    assert list(results["models"]) == ["teacher", "student-before", "student-after"]
    assert results["models"]["student-after"]["id"] == str(out / "student")
    (dataset,) = results["datasets"]
    for label, value in summary["nDCG@10"].items():
        assert results["results"][label][dataset]["nDCG@10"] == value
        assert f"{value:.4f}" in shown
    card = (out / "student" / "README.md").read_text()
    assert f"{summary['nDCG@10']['student-after']:.4f}" in card  # the card carries the measured figure
    # An independent evaluation of the distilled student gives the same figure.
    invoke("evaluate", "--dataset", str(toy_dir), "--model", str(out / "student"), "--out", str(tmp_path / "again"))
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    (row,) = again["results"].values()
    assert row[next(iter(again["datasets"]))]["nDCG@10"] == summary["nDCG@10"]["student-after"]
    # report reads the quickstart's output (it used to fail: "'models' must be an object").
    invoke("report", str(out / "eval"))
    assert (out / "eval" / "report" / "report.html").is_file()
    # The same command again writes into its own earlier output (no --overwrite needed) and agrees.
    invoke(
        "quickstart", "--dataset", str(toy_dir), "--teacher", str(tiny_st_dir), "--layers", "1",
        "--epochs", "1", "--negatives", "2", "--out", str(out),
    )  # fmt: skip
    assert json.loads((out / "summary.json").read_text())["nDCG@10"] == summary["nDCG@10"]


def test_quickstart_refuses_a_folder_it_did_not_make(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    result = runner.invoke(
        app, ["quickstart", "--dataset", str(toy_dir), "--teacher", str(tiny_st_dir), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "thesis.tex" in result.output and "--overwrite" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"] and (out / "thesis.tex").read_text() == "keep me"
