"""Multi-stage recipes (``stages:``): one command equals the stages run by hand, and resumes by stage."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from retrodistill.config import (
    ConfigError,
    LossConfig,
    StudentConfig,
    TeacherEmbeddingsConfig,
    TrainConfig,
    load_config,
)
from retrodistill.outputs import OutputExistsError
from retrodistill.train.multistage import stage_configs, stages_dir
from retrodistill.train.run import run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def weights(folder: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(Path(folder).rglob("model.safetensors"))))


def manifest(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "manifest.json").read_text())


def two_stages(base: TrainConfig, tiny_st_dir: Path, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A corpus stage (embedding loss, teacher = the tiny model) then a Margin-MSE queries stage."""
    corpus = {
        "name": "corpus",
        "stage": "corpus",
        "store": None,
        "corpus_documents": 10,
        "teacher_embeddings": {"path": str(tmp_path / "teacher-embeddings"), "model": str(tiny_st_dir)},
        "loss": {"name": "embedding", "params": {"distance": "cosine"}},
        "learning_rate": 5e-3,
    }
    scores = {"name": "scores", "max_steps": 3, "loss": {"name": "margin-mse"}}
    return corpus, scores


def test_a_two_stage_run_equals_the_stages_run_by_hand(base: TrainConfig, tiny_st_dir: Path, tmp_path: Path) -> None:
    base = dataclasses.replace(base, student=dataclasses.replace(base.student, layers=1))
    corpus, scores = two_stages(base, tiny_st_dir, tmp_path)
    recipe = dataclasses.replace(base, out=str(tmp_path / "recipe"), stages=[corpus, scores])
    run(recipe, show_progress=False)

    by_hand_1 = dataclasses.replace(
        base,
        out=str(tmp_path / "hand-1"),
        stage="corpus",
        store=None,
        corpus_documents=10,
        teacher_embeddings=TeacherEmbeddingsConfig(path=str(tmp_path / "teacher-embeddings"), model=str(tiny_st_dir)),
        loss=LossConfig("embedding", {"distance": "cosine"}),
        learning_rate=5e-3,
    )
    run(by_hand_1, show_progress=False)
    student = StudentConfig(model=by_hand_1.out, layers=None, max_seq_length=64, similarity="cosine")
    by_hand_2 = dataclasses.replace(
        base, out=str(tmp_path / "hand-2"), student=student, max_steps=3, loss=LossConfig("margin-mse", {})
    )
    run(by_hand_2, show_progress=False)

    first = stages_dir(recipe.out) / "1-corpus"
    for mine, theirs in ((first, by_hand_1.out), (recipe.out, by_hand_2.out)):
        a, b = weights(mine), weights(theirs)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(weights(first)[k], weights(recipe.out)[k]) for k in weights(first))  # stage 2 trained
    record = manifest(recipe.out)
    assert record["recipe_stage"] == {"index": 2, "of": 2, "name": "scores"}
    assert [s["name"] for s in record["stages"]] == ["corpus"]
    assert record["stages"][0]["config"]["stage"] == "corpus" and record["stages"][0]["steps"] == 2
    assert record["config"]["student"]["model"] == str(first) and record["config"]["student"]["layers"] is None
    assert record["recipe"]["stages"][1]["name"] == "scores"
    assert manifest(first)["config"]["student"]["layers"] == 1  # pruned by the first stage only
    assert "corpus (2 steps)" in (Path(recipe.out) / "README.md").read_text()  # the card names the stages
    assert "10 documents (embedding distillation)" in (first / "README.md").read_text()


def test_rerunning_reuses_finished_stages_and_refuses_stale_ones(
    base: TrainConfig, tiny_st_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus, scores = two_stages(base, tiny_st_dir, tmp_path)
    recipe = dataclasses.replace(base, out=str(tmp_path / "recipe"), stages=[corpus, scores])
    first = stages_dir(recipe.out) / "1-corpus"
    run(recipe, show_progress=False)
    stamp = (first / "manifest.json").stat().st_mtime_ns
    with pytest.raises(OutputExistsError):  # the finished recipe's output, as for any run
        run(recipe, show_progress=False)

    # The last stage changed: the first is reused (not retrained), the last retrained with --overwrite.
    changed = dataclasses.replace(recipe, stages=[corpus, {**scores, "max_steps": 4}])
    with caplog.at_level("WARNING"):
        run(changed, show_progress=False, overwrite=True)
    assert (first / "manifest.json").stat().st_mtime_ns == stamp
    assert "reusing the finished student" in caplog.text
    assert manifest(recipe.out)["counts"]["steps"] == 4 and manifest(recipe.out)["stages"][0]["reused"] is True

    # The first stage changed: its folder holds another run's student, refused without --overwrite.
    stale = dataclasses.replace(recipe, stages=[{**corpus, "learning_rate": 1e-3}, scores])
    shutil.rmtree(recipe.out)  # so only the stage folder is in the way
    with pytest.raises(OutputExistsError, match="1-corpus.*other settings"):
        run(stale, show_progress=False)
    assert (first / "manifest.json").stat().st_mtime_ns == stamp  # nothing touched


def test_bad_stage_lists_are_refused_before_training(base: TrainConfig, tmp_path: Path) -> None:
    cases = [
        ([{"stage": "corpus"}], "stages\\[0\\].name"),
        ([{"name": "a"}, {"name": "a"}], "names two stages"),
        ([{"name": "a", "out": "x"}], "out belong to the recipe"),
        ([{"name": "a", "student": {"layers": 2}}], "student.layers belong to the recipe"),
        ([{"name": "a", "learning_rat": 1e-3}], "unknown key.*stages\\[0\\].learning_rat"),
        ([{"name": "a", "epochs": "two"}], "stages\\[0\\].epochs: expected an integer"),
    ]
    for stages, message in cases:
        with pytest.raises(ConfigError, match=message):
            run(dataclasses.replace(base, stages=stages), show_progress=False)
    assert not Path(base.out).exists()


def test_shipped_recipes_resolve(tmp_path: Path) -> None:
    for file in ("prod_ladder.yaml", "compress_2layer.yaml"):
        config = load_config(TrainConfig, CONFIGS / file)
        resolved = stage_configs(config)
        assert len(resolved) >= 2
        assert resolved[0][1].student.layers == config.student.layers
        assert all(stage.student.layers is None for _, stage in resolved[1:])
