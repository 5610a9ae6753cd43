"""The students benchmark runs the shipped recipes on its own inputs, every stage evaluated on dev (no model)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from retrodistill.train.multistage import stage_configs

# Loaded under another name: `students` is also the test package tests/students.
_SPEC = importlib.util.spec_from_file_location(
    "benchmark_students", Path(__file__).resolve().parents[2] / "benchmarks" / "students.py"
)
assert _SPEC is not None and _SPEC.loader is not None
students = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(students)


def test_recipes_point_at_the_benchmark_inputs_and_choose_on_dev(tmp_path: Path) -> None:
    dataset = tmp_path / "dev-split"
    stores = {name: tmp_path / f"{name}-store" for name in ("minilm", "ensemble", "bm25")}
    args = argparse.Namespace(eval_steps=25, corpus_eval_steps=125, max_steps=-1)

    compress = students.recipe_config("compress", tmp_path, dataset, stores, args)
    resolved = dict(stage_configs(compress))
    embed, scores = resolved["embed"], resolved["scores"]
    assert embed.teacher_embeddings.path == str(tmp_path / "compress" / "minilm-text-embeddings")
    assert scores.store == str(stores["minilm"]) and embed.store is None
    assert (embed.eval_steps, scores.eval_steps) == (125, 25)
    for stage in (embed, scores):
        assert stage.data.dataset == str(dataset) and stage.data.split == "train"
        assert (stage.eval_dataset, stage.eval_split, stage.eval_corpus) == (str(dataset), "dev", "full")
        assert stage.load_best_model_at_end and stage.save_steps == stage.eval_steps

    improve = students.recipe_config("self-improve", tmp_path, dataset, stores, args)
    assert improve.store == str(stores["ensemble"]) and improve.eval_split == "dev"
    assert improve.out == str(tmp_path / "self-improve" / "student")
