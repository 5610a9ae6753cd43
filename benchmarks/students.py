"""Students worth publishing: the two recipes of issue 13, end to end on SciFact, with dev and test figures.

* ``compress``: ``configs/compress_2layer.yaml`` — all-MiniLM-L6-v2 pruned to 2 layers, an embedding
  stage over documents, training queries and pseudo-queries, then Margin-MSE + InfoNCE on the
  teacher's scores. Target: SciFact test nDCG@10 ≥ 0.613 (95% of the teacher's 0.6451).
* ``self-improve``: ``configs/self_improve_ensemble.yaml`` — all-MiniLM-L6-v2 distilled from the
  calibrated mean of BM25 and itself. Target: test nDCG@10 ≥ 0.6651 (+2 points over 0.6451),
  significant against the teacher by our harness's paired tests (t-test and randomization, Holm).

The method (no choice is made on test):

1. The inputs of ``quickstart_lr.py``: a dev split of 100 SciFact train queries (``split-dev``, seed
   42), BM25 top-100 candidates and all-MiniLM-L6-v2's scores for the other 709; then BM25's scores
   of the same candidates (``score-teacher``, teacher ``bm25``) and their ensemble with MiniLM's
   (``ensemble-teachers``, temperatures fitted on those training qrels).
2. Each recipe is its config with the dataset and stores pointed at those inputs and, for every stage,
   evaluation on the dev split while training (nDCG@10 over the whole corpus every ``--eval-steps``):
   the stage publishes its best dev checkpoint (``load_best_model_at_end``), so the dev curve chooses
   how long each stage trains. The curves are in each student's ``train_log.json`` and in the table.
3. The teacher and each final student are evaluated once on the dev split and once on SciFact test,
   with the teacher as the significance baseline.

Run from the repository root (re-runs skip finished inputs, stages and evaluations; a killed stage
resumes from its checkpoints)::

    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 RETRODISTILL_DATA=../shared/data/beir \\
        .venv/bin/python benchmarks/students.py --out /work/runs/students

Writes ``OUT/results.json`` and ``OUT/results.md`` (the measured table: ``benchmarks/students.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from retrodistill.artifacts import write_json_atomic, write_text_atomic
from retrodistill.config import ScoreTeacherConfig, TrainConfig, load_config
from retrodistill.stages.ensemble import EnsembleConfig

sys.path.append(str(Path(__file__).resolve().parent))
from quickstart_lr import inputs as quickstart_inputs  # noqa: E402  (the dev split, candidates, MiniLM scores)

from retrodistill.quickstart import QuickstartConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
RECIPES = {"compress": "compress_2layer.yaml", "self-improve": "self_improve_ensemble.yaml"}
MEASURES = ("nDCG@10", "RR@10", "R@100")


def teacher_inputs(out: Path, inputs: Path, dataset: Path) -> dict[str, Path]:
    """BM25's scores of the candidates and the calibrated BM25 + MiniLM ensemble, each made once."""
    from retrodistill.config import DataConfig, TeacherConfig
    from retrodistill.stages import ensemble, score_teacher

    stores = {"candidates": inputs / "candidates", "minilm": inputs / "teacher-scores"}
    stores["bm25"] = out / "bm25-scores"
    if not (stores["bm25"] / "manifest.json").is_file():
        config = load_config(ScoreTeacherConfig, ROOT / "configs" / "score_bm25.yaml")
        config.data = DataConfig(dataset=str(dataset), split="train")
        config.candidates, config.out = str(stores["candidates"]), str(stores["bm25"])
        config.teacher = TeacherConfig("bm25", {**config.teacher.params, "corpus": str(dataset)})
        score_teacher.run(config, show_progress=False)
    stores["ensemble"] = out / "ensemble-scores"
    if not (stores["ensemble"] / "manifest.json").is_file():
        config = EnsembleConfig(members=[str(stores["minilm"]), str(stores["bm25"])], out=str(stores["ensemble"]))
        config.calibrate.dataset, config.calibrate.split = str(dataset), "train"
        ensemble.run(config)
    return stores


def recipe_config(
    name: str, out: Path, dataset: Path, stores: dict[str, Path], args: argparse.Namespace
) -> TrainConfig:
    """The shipped recipe, its inputs pointed at this benchmark's and every stage evaluated on dev."""
    config = load_config(TrainConfig, ROOT / "configs" / RECIPES[name])
    config.data.dataset, config.data.split = str(dataset), "train"
    config.out = str(out / name / "student")
    dev = {
        "eval_dataset": str(dataset),
        "eval_split": "dev",
        "eval_corpus": "full",
        "eval_queries": None,
        "eval_steps": args.eval_steps,
        "save_steps": args.eval_steps,
        "save_total_limit": 1,
        "load_best_model_at_end": True,
        "max_steps": args.max_steps,
    }
    store = {"minilm-scores": stores["minilm"], "ensemble-scores": stores["ensemble"], "bm25-scores": stores["bm25"]}

    def local(path: str | None) -> str | None:
        return None if path is None else str(store.get(Path(path).name, out / name / Path(path).name))

    if config.stages:
        for stage in config.stages:
            if stage.get("store"):
                stage["store"] = local(stage["store"])
            if (stage.get("teacher_embeddings") or {}).get("path"):
                stage["teacher_embeddings"] = {
                    **stage["teacher_embeddings"],
                    "path": local(stage["teacher_embeddings"]["path"]),
                }
            steps = args.corpus_eval_steps if stage.get("stage") == "corpus" else args.eval_steps
            stage.update({**dev, "eval_steps": steps, "save_steps": steps})
    else:
        config.store = local(config.store)
        for key, value in dev.items():
            setattr(config, key, value)
    return config


def train(config: TrainConfig) -> dict[str, Any]:
    """Train the recipe (finished stages are reused) and return each stage's record, dev curve included."""
    from retrodistill.train import run as train_student
    from retrodistill.train.multistage import stage_configs

    out = Path(config.out)
    if not (out / "manifest.json").is_file():
        train_student.run(config, show_progress=False)
    folders = [Path(stage.out) for _, stage in stage_configs(config)] if config.stages else [out]
    names = [name for name, _ in stage_configs(config)] if config.stages else ["scores"]
    stages = []
    for name, folder in zip(names, folders, strict=True):
        manifest = json.loads((folder / "manifest.json").read_text())
        log = json.loads((folder / "train_log.json").read_text())
        curve = [
            (entry["step"], round(value, 4))
            for entry in log
            for key, value in entry.items()
            if key.startswith("eval_") and key.endswith("_nDCG@10")
        ]
        stages.append(
            {
                "name": name,
                "steps": manifest["counts"]["steps"],
                "wall_time_s": manifest["wall_time_s"],
                "dev_curve": curve,
                # Among the checkpoints (step 0, the starting student, is evaluated but never saved).
                "best_step": max((p for p in curve if p[0] > 0), key=lambda point: point[1])[0] if curve else None,
            }
        )
    return {"student": str(out), "stages": stages}


def encoder_flops(model_path: str, tokens: int = 32) -> float:
    """Forward FLOPs of a BERT-style encoder for one ``tokens``-long text (multiply-adds × 2).

    Per layer: the Q, K, V, output and two feed-forward projections (2·L·(4h² + 2h·f)) and the
    attention products (2·2·L²·h). Embedding lookups and pooling are left out (no multiply-adds).
    """
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)  # a student folder holds its transformer's config.json
    h, f, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    return float(n * (2 * tokens * (4 * h * h + 2 * h * f) + 4 * tokens * tokens * h))


def evaluate(models: dict[str, str], dataset: Path, out: Path, split: str) -> Any:
    """Every model on the dev split or on SciFact test, with the teacher as the baseline."""
    from retrodistill.data.collections import load_beir
    from retrodistill.data.download import load_dataset
    from retrodistill.evaluate.suite import collection_entry, evaluate_suite

    if split == "dev":
        collection = load_beir(dataset, "dev", name="scifact-dev").for_evaluation()
    else:
        collection = load_dataset("scifact", "test").for_evaluation()
    return evaluate_suite(
        [f"{label}={path}" for label, path in models.items()],
        [collection_entry(collection)],
        measures=list(MEASURES),
        out_dir=out,
        baseline="teacher",
        show_progress=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument(
        "--inputs", type=Path, help="where the dev split, candidates and MiniLM scores are (default: OUT)"
    )
    parser.add_argument("--eval-steps", type=int, default=25, help="steps between dev evaluations (and checkpoints)")
    parser.add_argument("--corpus-eval-steps", type=int, default=125, help="the same for corpus (embedding) stages")
    parser.add_argument("--max-steps", type=int, default=-1, help="a smoke test: stop each stage here")
    parser.add_argument("--dev-queries", type=int, default=100)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = args.inputs or args.out
    dataset = quickstart_inputs(inputs, QuickstartConfig(), args.dev_queries)
    stores = teacher_inputs(args.out, inputs, dataset)

    rows: dict[str, Any] = {}
    for name in args.recipes:
        start = time.perf_counter()
        rows[name] = train(recipe_config(name, args.out, dataset, stores, args))
        rows[name]["seconds_this_call"] = round(time.perf_counter() - start, 1)
        print(f"{name}: trained ({rows[name]['stages']})", flush=True)

    models = {"teacher": TEACHER, **{name: row["student"] for name, row in rows.items()}}
    figures: dict[str, Any] = {}
    for split in ("dev", "test"):
        result = evaluate(models, dataset, args.out / "eval" / split, split)
        marks = result.marks()
        name = next(iter(result.datasets))
        figures[split] = {
            label: {m: round(result.results[label][name][m], 4) for m in MEASURES}
            | {f"{m} mark": marks.get((label, name, m), "") for m in MEASURES}
            for label in models
        }
        figures[split]["tests"] = [
            {k: getattr(c, k) for k in ("model", "measure", "mean_diff", "p_ttest_holm", "p_randomization_holm")}
            | {"significant": c.significant}
            for c in result.significance
        ]
    teacher_flops = encoder_flops(TEACHER)
    for row in rows.values():
        row["flops_vs_teacher"] = round(encoder_flops(row["student"]) / teacher_flops, 4)
    write_json_atomic(args.out / "results.json", {"recipes": rows, "figures": figures, "load": os.getloadavg()})
    lines = [
        "| model | dev nDCG@10 | test nDCG@10 | test RR@10 | test R@100 | encoder FLOPs / teacher "
        "| stages: steps (best dev step), train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in models:
        dev, test = figures["dev"][label], figures["test"][label]
        row = rows.get(label)
        stages = (
            "; ".join(f"{s['name']}: {s['steps']} ({s['best_step']}), {s['wall_time_s']:.0f} s" for s in row["stages"])
            if row
            else "–"
        )
        flops = f"{row['flops_vs_teacher']:.3f}" if row else "1.000"
        lines.append(
            f"| {label} | {dev['nDCG@10']:.4f}{dev['nDCG@10 mark']} | {test['nDCG@10']:.4f}{test['nDCG@10 mark']} "
            f"| {test['RR@10']:.4f}{test['RR@10 mark']} | {test['R@100']:.4f}{test['R@100 mark']} "
            f"| {flops} | {stages} |"
        )
    write_text_atomic(args.out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
