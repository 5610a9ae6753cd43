"""``retrodistill embed-teacher`` from the command line: the documented examples, the --out guard, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app
from retrodistill.config import EmbedTeacherConfig, load_config
from retrodistill.data.teacher_embeddings import TeacherEmbeddings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
runner = CliRunner()


@pytest.fixture()
def common(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> list[str]:
    return [
        "embed-teacher",
        "--model",
        str(tiny_st_dir),
        "--dataset",
        str(toy_dir),
        "--embedding-cache-dir",
        str(tmp_path / "cache"),
    ]


def _error(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("error:"))


def test_embed_teacher_writes_a_store_and_guards_its_out(common: list[str], tmp_path: Path) -> None:
    out = tmp_path / "emb"
    result = runner.invoke(app, [*common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "corpus shards encoded 1" in result.output
    store = TeacherEmbeddings.open(out)
    assert store.manifest["config"]["embedding_cache_dir"] == str(tmp_path / "cache")

    again = runner.invoke(app, [*common, "--out", str(out)])
    assert again.exit_code == 2
    assert _error(again.output).startswith(f"error: --out {out} exists")

    replaced = runner.invoke(app, [*common, "--out", str(out), "--overwrite", "--similarity", "dot"])
    assert replaced.exit_code == 0, replaced.output
    assert "corpus shards encoded 0, read from the cache 1" in replaced.output  # the cache is shared
    assert json.loads((out / "manifest.json").read_text())["teacher"]["similarity"] == "dot"


def test_bad_options_are_one_line_errors(common: list[str], tmp_path: Path) -> None:
    bad = runner.invoke(app, [*common, "--out", str(tmp_path / "a"), "--similarity", "euclid"])
    assert bad.exit_code == 2 and "similarity 'euclid' is not one of cosine, dot" in _error(bad.output)
    assert not (tmp_path / "a").exists()  # nothing half-written is left
    (tmp_path / "cache").mkdir()
    onto_cache = runner.invoke(app, [*common, "--out", str(tmp_path / "cache")])
    assert onto_cache.exit_code == 2 and "is the input --embedding-cache-dir" in _error(onto_cache.output)
    missing = runner.invoke(app, [*common, "--out", str(tmp_path / "b"), "--candidates", str(tmp_path / "none")])
    assert missing.exit_code == 2 and str(tmp_path / "none") in _error(missing.output)
    assert "Traceback" not in bad.output + missing.output


def test_the_example_config_loads() -> None:
    config = load_config(EmbedTeacherConfig, CONFIGS / "embed_teacher.yaml")
    assert config.candidates == "runs/scifact/candidates" and config.similarity == "cosine"
    assert config.negative_pool == 30 and config.out == "runs/scifact/minilm-embeddings"
