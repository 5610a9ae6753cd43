"""The quickstart's learning rate, chosen on a dev split carved from SciFact train (never on test).

The quickstart (``retrodistill quickstart``) distils all-MiniLM-L6-v2 into its first 2 layers with
Margin-MSE. Its learning rate had been chosen on SciFact *test*. This script chooses it again the
way the project's rules ask:

1. ``split-dev``: 100 of SciFact's judged train queries, drawn with seed 42, become a dev split;
2. BM25 candidates and the teacher's scores for the other train queries (the quickstart's steps);
3. for each learning rate of ``--grid``: the quickstart's student trained on those queries with
   every other quickstart setting unchanged, then evaluated on the dev split (nDCG@10 over the
   whole corpus);
4. the best dev nDCG@10 names the learning rate. Test is not read here: the quickstart, run once
   with the chosen value, reports it.

Run from the repository root (re-runs skip every finished student and evaluation)::

    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 RETRODISTILL_DATA=../shared/data/beir \\
        .venv/bin/python benchmarks/quickstart_lr.py --out /work/runs/quickstart-lr

Writes ``OUT/results.json`` and ``OUT/results.md`` (the measured table: ``benchmarks/quickstart_lr.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from retrodistill.artifacts import write_json_atomic, write_text_atomic
from retrodistill.config import (
    DataConfig,
    MineConfig,
    SplitDevConfig,
    TrainConfig,
)
from retrodistill.quickstart import QuickstartConfig, student_train_config, teacher_score_config

GRID = (2e-4, 5e-4, 1e-3, 2e-3)


def inputs(out: Path, quickstart: QuickstartConfig, dev_queries: int) -> Path:
    """The dev split, candidates and teacher scores, each made once; returns the dev-split folder."""
    from retrodistill.stages import mine_negatives, score_teacher, split_dev
    from retrodistill.teachers.bi_encoder import BiEncoderTeacher

    dataset = out / "dev-split"
    if not (dataset / "manifest.json").is_file():
        source = DataConfig(dataset=quickstart.dataset, data_dir=quickstart.data_dir, split="train")
        split_dev.run(SplitDevConfig(data=source, dev_queries=dev_queries, seed=quickstart.seed, out=str(dataset)))
    train = DataConfig(dataset=str(dataset), split="train")
    if not (out / "candidates" / "manifest.json").is_file():
        mine_negatives.run(MineConfig(data=train, out=str(out / "candidates"), k=quickstart.k))
    if not (out / "teacher-scores" / "manifest.json").is_file():
        score_config = teacher_score_config(quickstart, train, out)
        score_teacher.run(score_config, teacher=BiEncoderTeacher(**score_config.teacher.params))
    return dataset


def train_config(out: Path, dataset: Path, quickstart: QuickstartConfig, learning_rate: float) -> TrainConfig:
    """The quickstart's training step (``retrodistill.quickstart.student_train_config``) with ``learning_rate``."""
    settings = dataclasses.replace(quickstart, learning_rate=learning_rate)
    data = DataConfig(dataset=str(dataset), split="train")
    return student_train_config(settings, data, out, out / "students" / f"lr-{learning_rate:g}")


def evaluate_dev(student: Path, dataset: Path, out: Path) -> dict[str, float]:
    from retrodistill.data.collections import load_beir
    from retrodistill.evaluate.suite import collection_entry, evaluate_suite

    collection = load_beir(dataset, "dev", name="scifact-dev").for_evaluation()
    result = evaluate_suite([str(student)], [collection_entry(collection)], out_dir=out, show_progress=False)
    return dict(result.results[str(student)][collection.name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grid", type=float, nargs="+", default=list(GRID), help="learning rates to try")
    parser.add_argument("--dev-queries", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=-1, help="a smoke test: stop each run here")
    args = parser.parse_args()
    from retrodistill.train import run as train

    quickstart = dataclasses.replace(QuickstartConfig(), max_steps=args.max_steps)
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = inputs(args.out, quickstart, args.dev_queries)
    rows: list[dict[str, Any]] = []
    for learning_rate in args.grid:
        config = train_config(args.out, dataset, quickstart, learning_rate)
        student = Path(config.out)
        timing = student.with_name(student.name + ".time.json")
        if not timing.is_file():
            start = time.perf_counter()
            train.run(config, show_progress=False)
            write_json_atomic(timing, {"train_s": round(time.perf_counter() - start, 1), "load": os.getloadavg()})
        metrics = evaluate_dev(student, dataset, args.out / "eval" / student.name)
        steps = json.loads((student / "manifest.json").read_text())["counts"]["steps"]
        rows.append({"learning_rate": learning_rate, "steps": steps, **json.loads(timing.read_text()), "dev": metrics})
        print(f"lr {learning_rate:g}: dev nDCG@10 {metrics['nDCG@10']:.4f}", flush=True)
    best = max(rows, key=lambda row: row["dev"]["nDCG@10"])
    write_json_atomic(args.out / "results.json", {"rows": rows, "chosen": best["learning_rate"]})
    lines = ["| learning rate | dev nDCG@10 | dev RR@10 | dev R@100 | steps | train s |", "|---|---|---|---|---|---|"]
    for row in rows:
        mark = " (chosen)" if row is best else ""
        dev = row["dev"]
        lines.append(
            f"| {row['learning_rate']:g}{mark} | {dev['nDCG@10']:.4f} | {dev['RR@10']:.4f} | {dev['R@100']:.4f} "
            f"| {row['steps']} | {row['train_s']} |"
        )
    write_text_atomic(args.out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
