"""Kill -9 a real training run, run the same command again, and compare with an uninterrupted run.

The by-hand check of issue 12 ("once by hand on SciFact with all-MiniLM-L6-v2's 2 layers: the
nDCG@10 of both students"), as a script. Both runs are the same ``train-student`` command: the
2-layer student of all-MiniLM-L6-v2, Margin-MSE on a teacher-score store of SciFact train, with
checkpoints every ``--save-steps`` and evaluation on held-out training queries every
``--eval-steps`` (so the uninterrupted run also gives the dev nDCG@10 / τ curves). The second run
is SIGKILLed once a checkpoint at or past ``--kill-after`` exists and the next step has started,
then started again; it must say "resuming" and end with the first run's weights. Both students are
then evaluated on SciFact test with ``retrodistill evaluate``.

Run from the repository root (the store: ``benchmarks/objectives.py`` writes one, under
``OUT/inputs/teacher-scores``)::

    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 RETRODISTILL_DATA=../shared/data/beir \\
        .venv/bin/python benchmarks/resume_scifact.py \\
        --store /work/runs/objectives/inputs/teacher-scores --out /work/runs/resume-scifact

Writes ``OUT/resume.json``: the largest weight difference, both nDCG@10 figures, wall times. A
finished part (a trained student, an evaluation) is not redone on a re-run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TEACHER = "sentence-transformers/all-MiniLM-L6-v2"


def train_command(args: argparse.Namespace, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "retrodistill", "train-student",
        "--store", args.store,
        "--dataset", args.dataset,
        "--student", TEACHER,
        "--layers", "2",
        "--epochs", str(args.epochs),
        "--batch-size", "16",
        "--save-steps", str(args.save_steps),
        "--eval-holdout", str(args.eval_holdout),
        "--eval-steps", str(args.eval_steps),
        "--set", "learning_rate=5e-4",
        "--set", "train_max_seq_length=128",
        "--set", "student.similarity=cosine",
        "--set", f"eval_queries={args.eval_holdout}",
        "--out", str(out),
    ]  # fmt: skip


def newest_checkpoint(out: Path) -> int:
    folder = out.with_name(f".{out.name}.training") / "checkpoints"
    steps = [int(p.parent.name.split("-")[1]) for p in folder.glob("checkpoint-*/checkpoint.json")]
    return max(steps, default=0)


def killed_and_resumed(args: argparse.Namespace, out: Path) -> dict[str, object]:
    if (out / "manifest.json").is_file():
        return json.loads((out.parent / "resumed-run.json").read_text())
    command = train_command(args, out)
    start = time.perf_counter()
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while newest_checkpoint(out) < args.kill_after:
        if process.poll() is not None:
            raise SystemExit(f"the run ended (exit {process.returncode}) before checkpoint {args.kill_after}")
        time.sleep(1)
    time.sleep(args.kill_delay)  # into the steps after the checkpoint, whose work the kill loses
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = newest_checkpoint(out)
    first = time.perf_counter() - start
    again = subprocess.run(command, capture_output=True, text=True, check=True)
    said = [line for line in again.stderr.splitlines() + again.stdout.splitlines() if "resuming" in line]
    record = {
        "killed_after_checkpoint": killed_at,
        "resumed_message": said[0].strip() if said else None,
        "first_run_s": round(first, 1),
        "second_run_s": round(time.perf_counter() - start - first, 1),
    }
    (out.parent / "resumed-run.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def evaluate(args: argparse.Namespace, student: Path, out: Path) -> float:
    results = out / "results.json"
    if not results.is_file():
        subprocess.run(
            [sys.executable, "-m", "retrodistill", "evaluate", "--beir", args.dataset, "--model",
             f"{student.name}={student}", "--out", str(out), "--measure", "nDCG@10"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    data = json.loads(results.read_text())
    return float(data["results"][student.name][args.dataset]["nDCG@10"])


def max_weight_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    left, right = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert left.keys() == right.keys()
    return max(float((left[k].double() - right[k].double()).abs().max()) for k in left)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="teacher-score store of the dataset's train split")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--save-steps", type=int, default=15)
    parser.add_argument("--eval-steps", type=int, default=15)
    parser.add_argument("--eval-holdout", type=int, default=100)
    parser.add_argument("--kill-after", type=int, default=45, help="SIGKILL once this checkpoint exists")
    parser.add_argument("--kill-delay", type=float, default=20.0, help="seconds after it")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    uninterrupted, resumed = args.out / "uninterrupted", args.out / "resumed"
    timing = args.out / "uninterrupted-run.json"
    if not (uninterrupted / "manifest.json").is_file():
        start = time.perf_counter()
        subprocess.run(train_command(args, uninterrupted), check=True, stdout=subprocess.DEVNULL)
        timing.write_text(json.dumps({"uninterrupted_s": round(time.perf_counter() - start, 1)}) + "\n")
    record = killed_and_resumed(args, resumed)
    figures = {
        **json.loads(timing.read_text()),
        **record,
        "max_abs_weight_difference": max_weight_difference(uninterrupted, resumed),
        "nDCG@10_uninterrupted": evaluate(args, uninterrupted, args.out / "eval-uninterrupted"),
        "nDCG@10_resumed": evaluate(args, resumed, args.out / "eval-resumed"),
        "load_average": os.getloadavg(),
    }
    (args.out / "resume.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
