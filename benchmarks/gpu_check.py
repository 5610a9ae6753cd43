"""Every GPU figure in one run: the ``gpu`` tests, teacher scoring, encoding, FAISS, 50 bf16 training steps.

Run through ``benchmarks/gpu_check.sh`` (which sets the offline Hugging Face cache and the data
folder). Each step runs in its own subprocess under a timeout, and the timeouts add up to at most
``TOTAL_SECONDS`` (8 minutes); a step that fails or times out is recorded as such and the others
still run. The JSON (``--out``) is rewritten after every step, so a killed run keeps what it had:

``gpu_tests``    ``pytest -m gpu`` over the tests marked ``gpu``: passed / failed / skipped counts.
``scoring``      all-MiniLM-L6-v2 wrapped as a cross-encoder (as ``benchmarks/teacher_scoring.py``
                 wraps it, with a seeded untrained head) scores the MS MARCO dl19-sample pairs on the
                 GPU in fp32 and in bf16: pairs/s, achieved TFLOP/s (``pair_flops`` on the real
                 tokens) and their share of the bf16 (and TF32-off fp32) matmul peak measured here
                 with 8192² products, plus the bf16 scores' Spearman correlation with the fp32 ones.
``encoding``     all-MiniLM-L6-v2 encodes the SciFact corpus through the library's
                 ``iter_corpus_embeddings`` in fp32 and in bf16: documents/s, and the smallest cosine
                 between a document's bf16 and fp32 embeddings.
``faiss``        ``FaissFlatIP`` on the GPU against the CPU: 200,000 random 384-d vectors, 1,000
                 queries, top 100: ids equal, largest score difference.
``training``     BM25 candidates for SciFact's training queries (``mine-negatives``), a constant
                 teacher store (``benchmarks/constant_teacher.py``: no teacher model to time), then
                 ``train-student`` on all-MiniLM-L6-v2 in bf16 for 50 steps of 32 × (1+7): wall time,
                 steps/s from the trainer's log, the first and last loss.

Without a CUDA device it prints why and exits with status 2 before doing anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETRODISTILL_SHARED", REPO.parent / "shared"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOTAL_SECONDS = 480
STEP_SECONDS = {"gpu_tests": 110, "scoring": 110, "encoding": 60, "faiss": 50, "training": 140}
"""Each step's timeout; they add up to ``TOTAL_SECONDS`` less 10 s for starting and writing."""
NO_GPU = (
    "gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False, torch {version}); nothing was run. "
    "Run it on a machine with an NVIDIA GPU and a CUDA build of torch (pip install 'retrodistill[gpu]')."
)


def best_seconds(fn: Callable[[], Any], tries: int = 3) -> float:
    """Fastest of ``tries`` timed calls after one warm-up, each ended by a CUDA synchronisation."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peaks(device: str, n: int = 8192) -> dict[str, float]:
    """TFLOP/s of ``n×n`` products in bf16 and in fp32 (TF32 off): the peaks the scorers are held to."""
    import torch

    peaks = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
            peaks[name] = 2 * n**3 / best_seconds(lambda a=a, b=b: a @ b) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return peaks


def step_scoring(work: Path, device: str, quick: bool) -> dict[str, Any]:
    import numpy as np
    import torch
    from scipy.stats import spearmanr
    from teacher_scoring import benchmark_pairs, pair_flops, wrap_as_cross_encoder
    from transformers import AutoConfig, AutoTokenizer

    from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

    pairs = benchmark_pairs(SHARED / "data" / "msmarco" / "dl19-sample", "test", 2 if quick else 30)
    queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
    model_dir = work / "minilm-cross-encoder"
    wrap_as_cross_encoder(model_dir)
    peaks = matmul_peaks(device, 512 if quick else 8192)
    config = AutoConfig.from_pretrained(model_dir)
    lengths = AutoTokenizer.from_pretrained(model_dir)(queries, docs, truncation="longest_first", max_length=512)
    flops = sum(
        pair_flops(len(ids), config.hidden_size, config.intermediate_size, config.num_hidden_layers, 1)
        for ids in lengths["input_ids"]
    )
    out: dict[str, Any] = {
        "pairs": len(pairs),
        "gflop": round(flops / 1e9, 1),
        "matmul_peak_tflops": {k: round(v, 1) for k, v in peaks.items()},
    }
    scores = {}
    for dtype in ("fp32", "bf16"):
        teacher = CrossEncoderTeacher(str(model_dir), max_length=512, batch_size=256, dtype=dtype, device=device)
        seconds = best_seconds(lambda t=teacher, d=dtype: scores.__setitem__(d, t.score(queries, docs)))
        tflops = flops / seconds / 1e12
        out[dtype] = {
            "pairs_per_s": round(len(pairs) / seconds, 1),
            "tflops": round(tflops, 2),
            "pct_of_bf16_peak": round(100 * tflops / peaks["bf16"], 1),
            "pct_of_fp32_peak": round(100 * tflops / peaks["fp32"], 1),
            "linear_backend": teacher.linear_backend,
        }
        del teacher
        if device == "cuda":
            torch.cuda.empty_cache()
    out["bf16_spearman_vs_fp32"] = round(float(spearmanr(scores["fp32"], scores["bf16"]).statistic), 5)
    out["bf16_max_abs_diff"] = round(float(np.abs(scores["fp32"] - scores["bf16"]).max()), 4)
    return out


def step_encoding(work: Path, device: str, quick: bool) -> dict[str, Any]:
    import numpy as np
    import torch

    from retrodistill.data.collections import load_beir
    from retrodistill.data.encoding import iter_corpus_embeddings
    from retrodistill.evaluate.retrieval import load_model

    corpus = load_beir(SHARED / "data" / "beir" / "scifact", "test").corpus
    if quick:
        corpus = {doc_id: corpus[doc_id] for doc_id in list(corpus)[:64]}
    out: dict[str, Any] = {"documents": len(corpus), "batch_size": 256}
    embeddings = {}
    for dtype in ("fp32", "bf16"):
        model = load_model(MODEL, device=device)
        model.max_seq_length = 256
        if dtype == "bf16":
            model.to(torch.bfloat16)

        def encode(model: Any = model, dtype: str = dtype) -> None:
            embeddings[dtype] = np.concatenate(list(iter_corpus_embeddings(model, corpus, batch_size=256)))

        seconds = best_seconds(encode, tries=2)
        out[dtype] = {"documents_per_s": round(len(corpus) / seconds, 1), "seconds": round(seconds, 2)}
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    fp32, bf16 = (e / np.linalg.norm(e, axis=1, keepdims=True) for e in (embeddings["fp32"], embeddings["bf16"]))
    out["bf16_min_cosine_vs_fp32"] = round(float((fp32 * bf16).sum(axis=1).min()), 5)
    return out


def step_faiss(work: Path, device: str, quick: bool) -> dict[str, Any]:
    import numpy as np

    from retrodistill.index.faiss_flat import FaissFlatIP, import_faiss

    gpus = import_faiss().get_num_gpus()
    if gpus == 0:
        return {"status": "skipped", "reason": "faiss has no GPU support here (install retrodistill[gpu])"}
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((2_000 if quick else 200_000, 384)).astype(np.float32)
    queries = rng.standard_normal((1_000, 384)).astype(np.float32)
    results, seconds = {}, {}
    for name, use_gpu in (("cpu", False), ("gpu", True)):
        start = time.perf_counter()
        index = FaissFlatIP(use_gpu=use_gpu)
        index.add(docs)
        results[name] = index.search(queries, 100)
        seconds[name] = round(time.perf_counter() - start, 2)
    (cpu_scores, cpu_ids), (gpu_scores, gpu_ids) = results["cpu"], results["gpu"]
    return {
        "faiss_gpus": gpus,
        "ids_equal_fraction": float((cpu_ids == gpu_ids).mean()),
        "max_score_diff": float(np.abs(cpu_scores - gpu_scores).max()),
        "equal": bool(np.array_equal(cpu_ids, gpu_ids) and np.allclose(cpu_scores, gpu_scores, atol=1e-4)),
        "seconds": seconds,
    }


def step_training(work: Path, device: str, quick: bool) -> dict[str, Any]:
    data = os.environ.get("RETRODISTILL_DATA", str(SHARED / "data" / "beir"))
    cli = [sys.executable, "-m", "retrodistill"]
    where = ["--dataset", "scifact", "--data-dir", data, "--split", "train"]
    commands = {
        "mine": [*cli, "mine-negatives", *where, "--k", "30", "--out", str(work / "candidates")],
        "score": [
            sys.executable,
            str(REPO / "benchmarks" / "constant_teacher.py"),
            "score-teacher",
            "--teacher",
            "constant",
            "--model",
            "constant",
            "--candidates",
            str(work / "candidates"),
            *where,
            "--out",
            str(work / "store"),
        ],
        "train": [
            *cli,
            "train-student",
            "--store",
            str(work / "store"),
            "--student",
            MODEL,
            *where,
            "--out",
            str(work / "student"),
            "--max-steps",
            "2" if quick else "50",
            "--batch-size",
            "4" if quick else "32",  # 32 x (1+7) MiniLM texts take ~16 GB of fp32 activations on CPU
            "--negatives",
            "7",
            "--set",
            f"bf16={str(device == 'cuda').lower()}",
            "--set",
            f"logging_steps={1 if quick else 10}",
        ],
    }
    out: dict[str, Any] = {
        "steps": 2 if quick else 50,
        "batch": f"{4 if quick else 32} x (1+7)",
        "bf16": device == "cuda",
    }
    for name, command in commands.items():
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        out[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed ({done.returncode}): {' | '.join(done.stderr.splitlines()[-5:])}")
    log = json.loads((work / "student" / "train_log.json").read_text())
    losses = [entry["loss"] for entry in log if "loss" in entry]
    final = [entry for entry in log if "train_runtime" in entry]
    if final:
        out["train_runtime_s"] = final[-1]["train_runtime"]
        out["steps_per_s"] = final[-1].get("train_steps_per_second")
    out["first_loss"], out["last_loss"] = (losses[0], losses[-1]) if losses else (None, None)
    return out


def step_gpu_tests(work: Path, device: str, quick: bool) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    report = work / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={report}"]
    done = subprocess.run([*command, "tests"], capture_output=True, text=True, cwd=REPO, check=False)
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "exit": done.returncode, "summary": done.stdout.strip().splitlines()[-1:]}


STEPS: dict[str, Callable[[Path, str, bool], dict[str, Any]]] = {
    "gpu_tests": step_gpu_tests,
    "scoring": step_scoring,
    "encoding": step_encoding,
    "faiss": step_faiss,
    "training": step_training,
}


def run_step(name: str, work: Path, timeout: float, device: str, quick: bool) -> dict[str, Any]:
    """Run one step in a child process under ``timeout``; its figures, or why there are none."""
    command = [sys.executable, __file__, "--step", name, "--work", str(work), "--device", device]
    command += ["--quick"] if quick else []
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": round(time.perf_counter() - start, 1), "timeout_s": round(timeout)}
    seconds = round(time.perf_counter() - start, 1)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
        return {"status": "failed", "seconds": seconds, "exit": done.returncode, "error": tail}
    figures: dict[str, Any] = json.loads(lines[-1])
    return {"status": figures.pop("status", "ok"), "seconds": seconds, **figures}


def cuda_device() -> dict[str, Any] | None:
    """The visible CUDA device's name, memory and versions, or ``None`` when there is none."""
    import torch

    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(0)
    return {
        "name": properties.name,
        "memory_gb": round(properties.total_memory / 1024**3, 1),
        "count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else REPO / "runs/gpu_check.json"
    parser.add_argument("--out", type=Path, default=default_out, help="JSON of figures (default: $OUT/gpu_check.json)")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset, in this order")
    parser.add_argument("--plan", action="store_true", help="print the steps and their timeouts, run nothing")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    # A dry run of the plumbing on a machine without a GPU: tiny sizes, no bf16 training.
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = [name for name in args.steps.split(",") if name]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
    if args.plan:
        print(json.dumps({"total_seconds": TOTAL_SECONDS, "steps": {name: STEP_SECONDS[name] for name in steps}}))
        return 0
    if args.step:  # a child: one step, its figures as the last line of stdout
        sys.path.insert(0, str(Path(__file__).parent))  # teacher_scoring's helpers
        print(json.dumps(STEPS[args.step](args.work, args.device, args.quick)))
        return 0
    device = cuda_device() if args.device == "cuda" else {"name": args.device, "quick": args.quick}
    if device is None:
        import torch

        print(NO_GPU.format(version=torch.__version__), file=sys.stderr)
        return 2
    started = time.perf_counter()
    load = os.getloadavg()
    record: dict[str, Any] = {"device": device, "load_before": [round(x, 2) for x in load], "steps": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="retrodistill-gpu-check-") as tmp:
        for name in steps:
            left = TOTAL_SECONDS - (time.perf_counter() - started) - 5
            if left < 10:
                record["steps"][name] = {"status": "not run", "reason": "the 8-minute budget was spent"}
                continue
            work = Path(tmp) / name
            work.mkdir()
            timeout = min(STEP_SECONDS[name], left) if args.device == "cuda" else 3600
            result = run_step(name, work, timeout, args.device, args.quick)
            record["steps"][name] = result
            print(f"{name}: {json.dumps(result)}", flush=True)
            record["total_seconds"] = round(time.perf_counter() - started, 1)
            args.out.write_text(json.dumps(record, indent=1) + "\n")
    statuses = {name: step["status"] for name, step in record["steps"].items()}
    print(f"gpu_check: {statuses}; {record['total_seconds']} s; figures in {args.out}")
    return 0 if all(status in ("ok", "skipped") for status in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
