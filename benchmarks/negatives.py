"""Which negatives help: the same student and budget trained on differently mined negatives (issue 14).

Setup (SciFact; nothing is chosen on test):

1. ``split-dev``: 100 of SciFact's judged train queries (seed 42) become a dev split; the other 709
   are the training queries (``--inputs`` reuses ``benchmarks/quickstart_lr.py``'s split, BM25
   candidates and teacher scores when given).
2. Candidates of the training queries, top-100 each, from
   - ``bm25``: bm25s (the quickstart's);
   - ``dense``: the teacher itself (all-MiniLM-L6-v2) searching SciFact's corpus (exact inner product);
   - ``dense-denoised``: ``dense`` filtered with ``mine-negatives --from-candidates … --teacher-margin 0``:
     a negative the teacher scores above its query's (lowest) positive is dropped as a suspected false
     negative (RocketQA's denoising). The margin 0 is the rule's natural value, not searched;
   - ``tas-balanced``: ``dense`` candidates, batches drawn TAS-balanced (``batch_sampling: tas-balanced``:
     queries clustered, one cluster per batch, negatives balanced over the teacher's margin bins);
   - ``tas-balanced-bm25``: the same on the ``bm25`` candidates (TAS-B's own setting: BM25 negatives).
   Each candidate set is scored by the teacher (cosine), as the quickstart does.
3. The student and budget are the quickstart's, fixed: the teacher's first 2 layers, Margin-MSE,
   7 negatives drawn from each query's top 30, 2 epochs of batches of 16, learning rate 1e-3 (chosen on
   this dev split by ``quickstart_lr.py``), texts cut to 128 tokens while training, seed 42.
4. Each student is evaluated over the whole corpus on the dev queries and, once, on SciFact test.

Columns: dev and test nDCG@10; ``pos in pool``: the share of the miner's top-30 documents (the pool
negatives are drawn from, read label-blind) that are judged positives of the query, i.e. what would
be a false negative were those judgments missing; ``negatives``: the negatives left in the pool
after the rules, and how many the rules removed.

Run from the repository root (re-runs skip every finished step)::

    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 RETRODISTILL_DATA=../shared/data/beir \\
        .venv/bin/python benchmarks/negatives.py --out /work/runs/negatives --inputs /work/runs/quickstart-lr

Writes ``OUT/results.json`` (after every arm) and ``OUT/results.md``; the measured table is in
``benchmarks/negatives.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrodistill.artifacts import write_json_atomic, write_text_atomic
from retrodistill.config import DataConfig, MineConfig, SplitDevConfig, TrainConfig
from retrodistill.quickstart import QuickstartConfig, student_train_config, teacher_score_config

ARMS = ("bm25", "dense", "dense-denoised", "tas-balanced", "tas-balanced-bm25")
POOL = 30


def _done(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def dev_split(out: Path, inputs: Path | None, quickstart: QuickstartConfig, dev_queries: int) -> Path:
    from retrodistill.stages import split_dev

    if inputs is not None and _done(inputs / "dev-split"):
        return inputs / "dev-split"
    dataset = out / "dev-split"
    if not _done(dataset):
        source = DataConfig(dataset=quickstart.dataset, data_dir=quickstart.data_dir, split="train")
        split_dev.run(SplitDevConfig(data=source, dev_queries=dev_queries, seed=quickstart.seed, out=str(dataset)))
    return dataset


def candidates_and_scores(
    arm: str, out: Path, inputs: Path | None, dataset: Path, quickstart: QuickstartConfig
) -> Path:
    """The folder holding ``candidates`` and ``teacher-scores`` of the arm's negatives (made once)."""
    from retrodistill.stages import mine_negatives, score_teacher
    from retrodistill.teachers.bi_encoder import BiEncoderTeacher

    train = DataConfig(dataset=str(dataset), split="train")
    if arm == "bm25" and inputs is not None and _done(inputs / "candidates") and _done(inputs / "teacher-scores"):
        return inputs
    if arm.startswith("tas-balanced"):
        miner = "bm25" if arm.endswith("-bm25") else "dense"
        return candidates_and_scores(miner, out, inputs, dataset, quickstart)
    folder = out / "inputs" / arm
    candidates = folder / "candidates"
    if arm == "dense-denoised":
        parent = candidates_and_scores("dense", out, inputs, dataset, quickstart)
        if not _done(candidates):
            config = MineConfig(
                data=train,
                out=str(candidates),
                from_candidates=str(parent / "candidates"),
                teacher_scores=str(parent / "teacher-scores"),
                teacher_margin=0.0,
            )
            mine_negatives.run(config, show_progress=False)
        scores = folder / "teacher-scores"
        if not scores.exists():  # the parent's store: the filtered rows are a subset of what it scored
            scores.symlink_to((parent / "teacher-scores").resolve())
        return folder
    if not _done(candidates):
        retrievers = ["bm25s"] if arm == "bm25" else [quickstart.teacher]
        mine_negatives.run(MineConfig(data=train, out=str(candidates), k=quickstart.k, retrievers=retrievers))
    if not _done(folder / "teacher-scores"):
        config = teacher_score_config(quickstart, train, folder)
        score_teacher.run(config, teacher=BiEncoderTeacher(**config.teacher.params))
    return folder


def train_config(arm: str, out: Path, folder: Path, dataset: Path, quickstart: QuickstartConfig) -> TrainConfig:
    data = DataConfig(dataset=str(dataset), split="train")
    config = student_train_config(quickstart, data, folder, out / "students" / arm)
    config = dataclasses.replace(config, negative_pool=POOL)
    if arm.startswith("tas-balanced"):
        if not hasattr(config, "batch_sampling"):
            raise SystemExit("tas-balanced: this version has no batch_sampling setting")
        config = dataclasses.replace(config, batch_sampling="tas-balanced")
    return config


def pool_figures(folder: Path) -> dict[str, Any]:
    """Label-blind pool (ranks 1…POOL): its size, the share of judged positives in it; and what rules removed."""
    from retrodistill.data.candidates import read_candidates

    candidates = read_candidates(folder / "candidates")
    table = candidates.table
    rank = table.column("rank").to_numpy()
    label = table.column("label").to_numpy()
    in_pool = (rank >= 1) & (rank <= POOL)
    control = candidates.manifest.get("false_negative_control") or {}
    return {
        "pool": int(in_pool.sum()),
        "positives_in_pool": int((in_pool & (label > 0)).sum()),
        "positive_share": float((in_pool & (label > 0)).sum() / max(in_pool.sum(), 1)),
        "pool_negatives": int((in_pool & (label <= 0)).sum()),
        "removed": control.get("removed", {}),
    }


def evaluate(student: Path, collection: Any, out: Path) -> dict[str, float]:
    from retrodistill.evaluate.suite import collection_entry, evaluate_suite

    result = evaluate_suite([str(student)], [collection_entry(collection)], out_dir=out, show_progress=False)
    return dict(result.results[str(student)][collection.name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, default=None, help="quickstart_lr.py's OUT: its split, BM25 inputs")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--dev-queries", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=-1, help="a smoke test: stop each run here")
    args = parser.parse_args()
    from retrodistill.data.collections import load_beir
    from retrodistill.data.download import resolve_dataset
    from retrodistill.train import run as train

    quickstart = dataclasses.replace(QuickstartConfig(), max_steps=args.max_steps)
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = dev_split(args.out, args.inputs, quickstart, args.dev_queries)
    dev = load_beir(dataset, "dev", name="scifact-dev").for_evaluation()
    test = load_beir(resolve_dataset(quickstart.dataset, quickstart.data_dir), "test", name="scifact").for_evaluation()
    results_file = args.out / "results.json"
    done = json.loads(results_file.read_text())["rows"] if results_file.is_file() else []
    rows = list(done)  # arms measured before (any --arms) stay in the table
    for arm in args.arms:
        if any(row["arm"] == arm for row in rows):
            continue
        folder = candidates_and_scores(arm, args.out, args.inputs, dataset, quickstart)
        config = train_config(arm, args.out, folder, dataset, quickstart)
        student = Path(config.out)
        timing = student.with_name(student.name + ".time.json")
        if not timing.is_file():
            if student.exists() and not _done(student):
                shutil.rmtree(student)
            start = time.perf_counter()
            train.run(config, show_progress=False)
            write_json_atomic(timing, {"train_s": round(time.perf_counter() - start, 1), "load": os.getloadavg()})
        manifest = json.loads((student / "manifest.json").read_text())
        row = {
            "arm": arm,
            "inputs": str(folder),
            "steps": manifest["counts"]["steps"],
            **json.loads(timing.read_text()),
            **pool_figures(folder),
            "dev": evaluate(student, dev, args.out / "eval" / "dev" / arm),
            "test": evaluate(student, test, args.out / "eval" / "test" / arm),
        }
        rows.append(row)
        print(f"{arm}: dev nDCG@10 {row['dev']['nDCG@10']:.4f}, test {row['test']['nDCG@10']:.4f}", flush=True)
        write_json_atomic(results_file, {"rows": rows, "machine": _machine()})
    rows.sort(key=lambda row: ARMS.index(row["arm"]))
    write_text_atomic(args.out / "results.md", table(rows) + "\n")
    print(table(rows))


def _machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load": os.getloadavg(),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def table(rows: list[dict[str, Any]]) -> str:
    base = next((row for row in rows if row["arm"] == "bm25"), None)
    lines = [
        "| negatives | dev nDCG@10 | test nDCG@10 | Δ test vs bm25 | test R@100 | pos in pool | "
        "pool negatives (removed) | steps | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        delta = "–" if base is None or row is base else f"{row['test']['nDCG@10'] - base['test']['nDCG@10']:+.4f}"
        removed = sum(row["removed"].values())
        lines.append(
            f"| {row['arm']} | {row['dev']['nDCG@10']:.4f} | {row['test']['nDCG@10']:.4f} | {delta} "
            f"| {row['test']['R@100']:.4f} | {row['positive_share']:.2%} | {row['pool_negatives']:,}"
            f"{f' ({removed:,})' if removed else ''} | {row['steps']} | {row['train_s']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
