"""The documented pipeline through the CLI on the toy BEIR fixture: mine → score → train → evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder_dir: Path, tiny_st_dir: Path) -> dict:
    from conftest import TOY

    work = tmp_path_factory.mktemp("e2e")
    data = str(TOY)
    paths = {name: str(work / name) for name in ("candidates", "scores", "student", "eval")}
    invoke("mine-negatives", "--dataset", data, "--split", "train", "--out", paths["candidates"], "--k", "20")
    invoke(
        "score-teacher",
        "--teacher",
        "cross-encoder",
        "--model",
        str(tiny_cross_encoder_dir),
        "--dataset",
        data,
        "--candidates",
        paths["candidates"],
        "--out",
        paths["scores"],
        "--part-size",
        "8",
    )
    invoke(
        "train-student",
        "--store",
        paths["scores"],
        "--student",
        str(tiny_st_dir),
        "--layers",
        "2",
        "--dataset",
        data,
        "--out",
        paths["student"],
        "--max-steps",
        "3",
        "--batch-size",
        "4",
        "--negatives",
        "3",
        "--set",
        "student.similarity=dot",
    )
    output = invoke(
        "evaluate", "--dataset", data, "--model", paths["student"], "--out", paths["eval"], "--measures", "nDCG@10,R@5"
    )
    return {"work": work, "data": data, "eval_output": output, **paths}


def test_every_stage_writes_its_artifact(pipeline: dict) -> None:
    cand = json.loads(Path(pipeline["candidates"], "manifest.json").read_text())
    store = json.loads(Path(pipeline["scores"], "manifest.json").read_text())
    student = json.loads(Path(pipeline["student"], "manifest.json").read_text())
    assert cand["stage"] == "mine-negatives"
    assert store["stage"] == "score-teacher" and store["complete"] is True
    assert store["inputs"]["candidates"] == cand["fingerprint"]
    assert store["num_parts"] == -(-store["num_pairs"] // 8) > 1
    assert student["stage"] == "train-student"
    assert student["inputs"]["teacher_scores"] == store["fingerprint"]
    assert student["counts"]["steps"] == 3
    assert student["config"]["student"]["layers"] == 2
    assert (Path(pipeline["student"]) / "config.yaml").is_file()


def test_evaluate_prints_and_writes_the_table(pipeline: dict) -> None:
    assert "nDCG@10" in pipeline["eval_output"] and "mean" in pipeline["eval_output"]
    results = json.loads(Path(pipeline["eval"], "results.json").read_text())
    (name,) = results["datasets"]
    (label,) = results["models"]
    assert 0.0 <= results["results"][label][name]["nDCG@10"] <= 1.0
    metrics_path = Path(pipeline["eval"], results["per_query"][label][name])
    run_lines = (metrics_path.parent / "run.trec").read_text().splitlines()
    assert run_lines and len(run_lines[0].split()) == 6


def test_store_from_another_collection_is_refused(pipeline: dict, tmp_path: Path, tiny_st_dir: Path) -> None:
    import shutil

    other = tmp_path / "toy-edited"
    shutil.copytree(pipeline["data"], other)
    with open(other / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": "extra", "title": "", "text": "one more document"}) + "\n")
    result = runner.invoke(
        app,
        [
            "train-student",
            "--store",
            pipeline["scores"],
            "--student",
            str(tiny_st_dir),
            "--dataset",
            str(other),
            "--out",
            str(tmp_path / "s"),
            "--max-steps",
            "1",
        ],
    )
    assert result.exit_code == 2
    assert "was not made from" in result.output and "corpus" in result.output
    assert not (tmp_path / "s").exists()


def test_bad_config_key_is_a_clean_error(pipeline: dict) -> None:
    result = runner.invoke(app, ["train-student", "--store", pipeline["scores"], "--set", "studnt.layers=2"])
    assert result.exit_code == 2
    assert "studnt" in result.output


def test_plugins_lists_every_registered_plugin() -> None:
    # A fresh interpreter, so nothing registered by other tests' imports can hide a missing one.
    output = subprocess.run(
        [sys.executable, "-c", "from retrodistill.cli.app import main; main()", "plugins"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    from retrodistill.cli.plugins import registries
    from retrodistill.registry import parameters

    for registry in registries().values():
        for name in registry.names():
            assert name in output
            for parameter in parameters(registry.get(name)):
                assert parameter.name in output, f"{name}.{parameter.name}"
    for name in ("colbert", "pairwise-cross-encoder", "listnet", "ranknet", "lambdaloss", "infonce", "combined"):
        assert name in output


def test_triples_file_scores_and_trains(tmp_path: Path, tiny_cross_encoder_dir: Path, tiny_st_dir: Path) -> None:
    from conftest import TOY

    triples = tmp_path / "triples.tsv"
    triples.write_text("q1\td3\td7\nq1\td4\td12\nq3\td10\td1\nq3\td9\td2\n")
    invoke(
        "score-teacher",
        "--model",
        str(tiny_cross_encoder_dir),
        "--dataset",
        str(TOY),
        "--triples",
        str(triples),
        "--out",
        str(tmp_path / "scores"),
    )
    store = json.loads((tmp_path / "scores" / "manifest.json").read_text())
    assert store["num_pairs"] == 8
    invoke(
        "train-student",
        "--store",
        str(tmp_path / "scores"),
        "--student",
        str(tiny_st_dir),
        "--dataset",
        str(TOY),
        "--negatives",
        "1",
        "--batch-size",
        "2",
        "--out",
        str(tmp_path / "student"),
    )
    student = json.loads((tmp_path / "student" / "manifest.json").read_text())
    assert student["counts"]["examples"] == 4  # one per positive, each with one of the query's negatives
