"""Speed of cross-encoder teacher scoring: CrossEncoderTeacher against sentence-transformers' CrossEncoder.

All scorers score the same ~1,300 real MS MARCO (query, passage) pairs (30 candidates per query) with
the same model, ``max_length``, batch size and torch threads, in one process, alternating their order,
``--repeats`` times; each figure is a ratio of median throughputs measured in this one run:

* ``CrossEncoder.predict`` (fp32): the baseline;
* ours in fp32 (oneDNN linear layers): must reach ``--min-ratio`` with every score within
  ``--max-diff`` of the baseline's;
* ours in bf16 (``dtype="bf16"``: bf16 encoder, oneDNN bf16 linear layers, fp32 head): must reach
  ``--min-bf16-ratio`` with a Spearman correlation of at least ``--min-spearman`` with our fp32 scores;
* ours in bf16 under CPU autocast (``linear_backend="torch"``), for comparison only; ``--ablate``
  adds ours in fp32 with PyTorch's own linear layers.

Each scorer's rate is also given as achieved GFLOP/s: the model's FLOPs on the real, unpadded tokens
of all pairs (:func:`pair_flops`) over its median wall time, against matrix-multiplication peaks
measured in the same run, in the same alternation (fp32 and bf16, ``torch.matmul`` and oneDNN's
linear kernel, 2048² matrices).

The model is the real all-MiniLM-L6-v2 encoder wrapped as a 1-logit ``BertForSequenceClassification``
whose head is freshly initialised (seeded): no real cross-encoder can be had offline, so its scores are
meaningless and only speed and agreement between scorers are checked. Exit status 1 if a check fails.

Run from the repository root::

    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 python benchmarks/teacher_scoring.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETRODISTILL_SHARED", REPO.parent / "shared"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BASELINE = "CrossEncoder.predict fp32"
OURS = "ours fp32"
OURS_BF16 = "ours bf16"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "msmarco" / "dl19-sample")
    parser.add_argument("--split", default="test", help="qrels split whose judged queries are used")
    parser.add_argument("--per-query", type=int, default=30, help="passages per query")
    parser.add_argument("--max-length", type=int, default=512, help="same for all scorers")
    parser.add_argument("--batch-size", type=int, default=32, help="same for all scorers")
    parser.add_argument("--max-tokens-per-batch", type=int, default=None, help="ours only")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for all scorers and the peaks")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ablate", action="store_true", help="also time ours in fp32 with linear_backend='torch'")
    parser.add_argument("--min-ratio", type=float, default=1.6, help="ours fp32 / baseline")
    parser.add_argument("--max-diff", type=float, default=1e-4, help="ours fp32 vs baseline, any score")
    parser.add_argument("--min-bf16-ratio", type=float, default=3.0, help="ours bf16 / baseline (fp32)")
    parser.add_argument("--min-spearman", type=float, default=0.999, help="ours bf16 vs ours fp32")
    parser.add_argument(
        "--max-load",
        type=float,
        default=1.0,
        help="1-minute load average before the run above which it is flagged NOT QUIET",
    )
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=0.25,
        help="CPUs that other processes may use on average during the run before it is flagged NOT QUIET",
    )
    return parser.parse_args(argv)


def benchmark_pairs(data: Path, split: str, per_query: int) -> list[tuple[str, str]]:
    """``per_query`` passages for each judged query: its judged passages first, then others, by hash order."""
    from retrodistill.data.collections import load_beir

    collection = load_beir(data, split)

    def order(qid: str, doc_ids: list[str]) -> list[str]:
        return sorted(doc_ids, key=lambda d: hashlib.sha256(f"{qid}\t{d}".encode()).hexdigest())

    all_docs = sorted(collection.corpus)
    pairs = []
    for qid in sorted(collection.queries):
        judged = order(qid, sorted(collection.qrels.get(qid, {})))
        chosen = (judged + [d for d in order(qid, all_docs) if d not in set(judged)])[:per_query]
        pairs.extend((collection.queries[qid], collection.doc_text(d)) for d in chosen)
    return pairs


def wrap_as_cross_encoder(out: Path) -> None:
    """Save all-MiniLM-L6-v2 with a seeded, untrained 1-logit classification head to ``out``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=1, use_safetensors=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(MODEL).save_pretrained(out)


def pair_flops(tokens: int, hidden: int, intermediate: int, layers: int, labels: int) -> int:
    """FLOPs of a BERT-like cross-encoder on one pair of ``tokens`` real (unpadded) tokens.

    Per layer: ``2·L·(4h² + 2·h·i)`` for the linear layers (Q, K, V, attention output: ``h×h``
    each; feed-forward: ``h×i`` and ``i×h``) plus ``4·L²·h`` for attention scores ``QKᵀ`` and their
    weighted sum over ``V``; then the head: ``2h²`` (BERT's pooler, on one token) + ``2·h·labels``.
    A multiply-add counts 2; biases, layer norms, softmax and GELU (``O(L·h)``) are not counted.

    Example:
        >>> pair_flops(10, hidden=4, intermediate=8, layers=1, labels=1)  # 2·10·(64+64) + 4·100·4 + 32 + 8
        4200
    """
    per_layer = 2 * tokens * (4 * hidden**2 + 2 * hidden * intermediate) + 4 * tokens**2 * hidden
    return layers * per_layer + 2 * hidden**2 + 2 * hidden * labels


def matmul_probes(n: int = 2048) -> dict[str, Callable[[], Any]]:
    """Square ``n×n`` products (``2n³`` FLOPs each) through the kernels the scorers can use."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator)
    a16, b16 = a.bfloat16(), b.bfloat16()
    linear = torch.ops.mkldnn._linear_pointwise
    return {
        "fp32 torch.matmul": lambda: a @ b,
        "fp32 oneDNN linear": lambda: linear(a, b, None, "none", [], ""),
        "bf16 torch.matmul": lambda: a16 @ b16,
        "bf16 oneDNN linear": lambda: linear(a16, b16, None, "none", [], ""),
    }


def best_seconds(fn: Callable[[], Any], tries: int = 4) -> float:
    """Fastest of ``tries`` calls, after one warm-up call: a peak, as little disturbed as can be."""
    fn()
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_it(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = fn()
    return time.perf_counter() - start, np.asarray(scores, dtype=np.float32)


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process) so far.

    The difference of two readings, one minus the other, is what *other* processes used in between:
    the load average cannot tell, since this benchmark's own threads raise it to about ``--threads``.
    """
    import resource

    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers
    from host import cpu_model
    from scipy.stats import spearmanr
    from sentence_transformers import CrossEncoder

    from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    cpu_start, wall_start = cpu_seconds(), time.perf_counter()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    pairs = benchmark_pairs(args.data, args.split, args.per_query)
    queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
    n_queries = len(set(queries))
    print(f"pairs: {len(pairs):,} from {args.data} ({n_queries} queries × {args.per_query} passages)")
    print(f"model: {MODEL} wrapped as a cross-encoder; its classification head is UNTRAINED (seeded random),")
    print("       so the scores are meaningless: only speed and agreement between scorers are checked")
    print(
        f"cpu: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, max_length {args.max_length}, batch_size {args.batch_size}"
    )

    with tempfile.TemporaryDirectory(prefix="retrodistill-bench-") as tmp:
        wrap_as_cross_encoder(Path(tmp))
        identity = torch.nn.Identity()
        reference = CrossEncoder(tmp, max_length=args.max_length, activation_fn=identity, device="cpu")

        def teacher(**kwargs: Any) -> CrossEncoderTeacher:
            return CrossEncoderTeacher(
                tmp,
                max_length=args.max_length,
                batch_size=args.batch_size,
                max_tokens_per_batch=args.max_tokens_per_batch,
                device="cpu",
                **kwargs,
            )

        teachers = {
            OURS: teacher(),
            OURS_BF16: teacher(dtype="bf16"),
            "ours bf16 autocast": teacher(dtype="bf16", linear_backend="torch"),
        }
        if args.ablate:
            teachers["ours fp32, torch linear"] = teacher(linear_backend="torch")
        for name, ours in teachers.items():
            print(f"  {name}: linear_backend {ours.linear_backend}")
        config = teachers[OURS].model.config
        lengths = teachers[OURS].tokenizer(
            queries, docs, truncation="longest_first", max_length=teachers[OURS].max_length
        )["input_ids"]
        flops = sum(
            pair_flops(
                len(ids), config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_labels
            )
            for ids in lengths
        )
        n_tokens = sum(len(ids) for ids in lengths)
        print(
            f"work: {n_tokens:,} real tokens (mean {n_tokens / len(pairs):.1f} per pair), "
            f"{flops / 1e9:,.0f} GFLOP (h={config.hidden_size}, i={config.intermediate_size}, "
            f"{config.num_hidden_layers} layers)"
        )

        scorers: dict[str, Callable[[list[tuple[str, str]]], np.ndarray]] = {
            BASELINE: lambda batch: reference.predict(
                batch, batch_size=args.batch_size, activation_fn=identity, show_progress_bar=False
            ),
        }
        for name, ours in teachers.items():
            scorers[name] = lambda batch, ours=ours: ours.score([q for q, _ in batch], [d for _, d in batch])
        names = list(scorers)
        for fn in scorers.values():  # warm-up: thread pools, kernels, first allocations
            fn(pairs[:64])
        probes = matmul_probes()
        probe_flops = 2 * 2048**3
        seconds: dict[str, list[float]] = {name: [] for name in names}
        peaks: dict[str, list[float]] = {name: [] for name in probes}
        scores: dict[str, np.ndarray] = {}
        for repeat in range(args.repeats):
            order = names if repeat % 2 == 0 else names[::-1]
            for name in order:
                elapsed, scores[name] = time_it(lambda name=name: scorers[name](pairs))
                seconds[name].append(elapsed)
                print(f"  repeat {repeat + 1}: {name}: {elapsed:.2f} s")
            with torch.inference_mode():
                for name, probe in probes.items():
                    peaks[name].append(probe_flops / best_seconds(probe) / 1e9)
            print("  repeat {}: peaks {}".format(repeat + 1, ", ".join(f"{k} {v[-1]:.0f}" for k, v in peaks.items())))

    peak = {name: statistics.median(values) for name, values in peaks.items()}
    rates = {name: len(pairs) / statistics.median(seconds[name]) for name in names}
    gflops = {name: flops / statistics.median(seconds[name]) / 1e9 for name in names}
    print()
    print(f"matmul peaks, {args.threads} threads (median over repeats of the best of 4 products, 2048²):")
    for name, value in peak.items():
        print(f"  {name:22s} {value:7.1f} GFLOP/s")
    print()
    print(f"{'scorer':28s} {'pairs/s':>8s} {'ratio':>6s} {'GFLOP/s':>8s} {'fp32 peak':>10s} {'bf16 peak':>10s}")
    for name in names:
        print(
            f"{name:28s} {rates[name]:8.1f} {rates[name] / rates[BASELINE]:5.2f}x {gflops[name]:8.1f} "
            f"{gflops[name] / peak['fp32 oneDNN linear']:9.0%} {gflops[name] / peak['bf16 oneDNN linear']:9.0%}"
        )
    print("(peak fractions against oneDNN linear, the fastest kernel for each dtype here)")
    print()
    ratio = rates[OURS] / rates[BASELINE]
    diff = float(np.abs(scores[OURS] - scores[BASELINE]).max())
    bf16_ratio = rates[OURS_BF16] / rates[BASELINE]
    rho = float(spearmanr(scores[OURS_BF16], scores[OURS]).statistic)
    checks = [
        (f"ours fp32 / CrossEncoder.predict: {ratio:.2f}x", f">= {args.min_ratio}", ratio >= args.min_ratio),
        (f"ours fp32 max |score difference|: {diff:.2e}", f"<= {args.max_diff:g}", diff <= args.max_diff),
        (
            f"ours bf16 / CrossEncoder.predict (fp32): {bf16_ratio:.2f}x",
            f">= {args.min_bf16_ratio}",
            bf16_ratio >= args.min_bf16_ratio,
        ),
        (f"ours bf16 Spearman vs ours fp32: {rho:.6f}", f">= {args.min_spearman}", rho >= args.min_spearman),
    ]
    cpu_end, elapsed = cpu_seconds(), time.perf_counter() - wall_start
    others = max(0.0, (cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / elapsed
    quiet = load_before[0] <= args.max_load and others <= args.max_other_cpu
    checks += [
        (
            f"machine quiet before: load average {load_before[0]:.2f}",
            f"<= {args.max_load:g}",
            load_before[0] <= args.max_load,
        ),
        (
            f"machine quiet during: other processes {others:.2f} CPUs",
            f"<= {args.max_other_cpu:g}",
            others <= args.max_other_cpu,
        ),
    ]
    for text, bar, passed in checks:
        print(f"{text:50s} required {bar:8s} {'OK' if passed else 'FAIL'}")
    ok = all(passed for _, _, passed in checks)
    if not quiet:
        print("NOT QUIET: other work shared the CPUs; the speed ratios above are not evidence, rerun idle")
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
