"""Speed of cross-encoder teacher scoring: CrossEncoderTeacher against sentence-transformers' CrossEncoder.

Both score the same ~1,300 real MS MARCO (query, passage) pairs with the same model, ``max_length``
and torch threads, in one process, alternating which goes first, ``--repeats`` times; the figure is
the ratio of median throughputs. The model is the real all-MiniLM-L6-v2 encoder wrapped as a
1-logit ``BertForSequenceClassification`` whose head is freshly initialised (seeded): no real
cross-encoder can be had offline, so its scores are meaningless and only speed is measured. The
check fails (exit 1) if our throughput is under ``--min-ratio`` × CrossEncoder.predict's or if any
score differs from it by more than ``--max-diff``.

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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETRODISTILL_SHARED", REPO.parent / "shared"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "msmarco" / "dl19-sample")
    parser.add_argument("--split", default="test", help="qrels split whose judged queries are used")
    parser.add_argument("--per-query", type=int, default=30, help="passages per query")
    parser.add_argument("--max-length", type=int, default=512, help="same for both scorers")
    parser.add_argument("--batch-size", type=int, default=32, help="same for both scorers")
    parser.add_argument("--max-tokens-per-batch", type=int, default=None, help="ours only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ablate", action="store_true", help="also time ours with linear_backend='torch'")
    parser.add_argument("--min-ratio", type=float, default=1.5)
    parser.add_argument("--max-diff", type=float, default=1e-4)
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


def time_it(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = fn()
    return time.perf_counter() - start, np.asarray(scores, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    pairs = benchmark_pairs(args.data, args.split, args.per_query)
    n_queries = len({q for q, _ in pairs})
    print(f"pairs: {len(pairs):,} from {args.data} ({n_queries} queries × {args.per_query} passages)")
    print(f"model: {MODEL} wrapped as a cross-encoder; its classification head is UNTRAINED (seeded random),")
    print(
        "       so the scores are meaningless: only speed and agreement between the two scorers are checked"
    )
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, max_length {args.max_length}, "
        f"batch_size {args.batch_size}"
    )

    with tempfile.TemporaryDirectory(prefix="retrodistill-bench-") as tmp:
        wrap_as_cross_encoder(Path(tmp))
        identity = torch.nn.Identity()
        reference = CrossEncoder(tmp, max_length=args.max_length, activation_fn=identity, device="cpu")
        ours = CrossEncoderTeacher(
            tmp,
            max_length=args.max_length,
            batch_size=args.batch_size,
            max_tokens_per_batch=args.max_tokens_per_batch,
            device="cpu",
        )
        scorers: dict[str, Callable[[list[tuple[str, str]]], np.ndarray]] = {
            "sentence-transformers CrossEncoder.predict": lambda batch: reference.predict(
                batch, batch_size=args.batch_size, activation_fn=identity, show_progress_bar=False
            ),
            f"retrodistill CrossEncoderTeacher ({ours.linear_backend} linear)": lambda batch: ours.score(
                [q for q, _ in batch], [d for _, d in batch]
            ),
        }
        if args.ablate:
            plain = CrossEncoderTeacher(
                tmp,
                max_length=args.max_length,
                batch_size=args.batch_size,
                device="cpu",
                linear_backend="torch",
            )
            scorers["retrodistill CrossEncoderTeacher (torch linear)"] = lambda batch: plain.score(
                [q for q, _ in batch], [d for _, d in batch]
            )
        names = list(scorers)
        for fn in scorers.values():  # warm-up: thread pools, kernels, first allocations
            fn(pairs[:64])
        seconds: dict[str, list[float]] = {name: [] for name in names}
        scores: dict[str, np.ndarray] = {}
        for repeat in range(args.repeats):
            order = names if repeat % 2 == 0 else names[::-1]
            for name in order:
                elapsed, scores[name] = time_it(lambda name=name: scorers[name](pairs))
                seconds[name].append(elapsed)
                print(f"  repeat {repeat + 1}: {name}: {elapsed:.2f} s")

    rates = {name: len(pairs) / statistics.median(seconds[name]) for name in names}
    base, mine = names[0], names[1]
    print()
    for name in names:
        print(f"{name:55s} {rates[name]:8.1f} pairs/s (median of {args.repeats})")
    ratio = rates[mine] / rates[base]
    diff = max(float(np.abs(scores[name] - scores[base]).max()) for name in names[1:])
    print(f"ratio (ours / CrossEncoder.predict): {ratio:.2f}x   required >= {args.min_ratio}")
    print(f"max |score difference|: {diff:.2e}   required <= {args.max_diff:g}")
    ok = ratio >= args.min_ratio and diff <= args.max_diff
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
