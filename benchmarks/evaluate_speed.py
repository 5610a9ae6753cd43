"""Speed of dense evaluation: retrodistill's evaluate against sentence-transformers' InformationRetrievalEvaluator.

Both evaluate all-MiniLM-L6-v2 on BEIR SciFact (test) in one process, alternating which goes first,
``--repeats`` times, with the same torch threads, batch size, ``max_seq_length`` (the model's 256),
document texts (``title + " " + text``), queries (the 300 judged ones) and retrieval depth ``--k``:

- ours: ``evaluate_suite([model], [collection_entry(collection)], ["nDCG@10"], out_dir=tmp, k=K)`` on a model
  loaded by ``retrodistill.evaluate.retrieval.load_model`` (oneDNN linear layers on CPU); this
  includes writing the run, metrics, table and manifest files;
- theirs: ``InformationRetrievalEvaluator(...)(model)`` on a plain ``SentenceTransformer``, the whole
  corpus in one chunk, every ``*_at_k`` list at 10 except ``map_at_k=[K]``, so both rank the top K.

The figure is the ratio of median wall times. Both nDCG@10 values are reported (SciFact's qrels are
binary, so the two definitions coincide); the check fails (exit 1) if the ratio is under
``--min-ratio`` or the two nDCG@10 differ by more than ``--max-ndcg-diff``. Time spent in
``encode_query``/``encode_document`` is measured separately for each, so the rest (search,
metrics, files) is the difference. A JSON summary is printed and written to ``--out``.

Run from the repository root (about 2 min per evaluation on 2 cores, so ~12 min for 3 repeats)::

    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 python benchmarks/evaluate_speed.py

A quick check on part of the corpus: ``--repeats 1 --limit-docs 1000``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETRODISTILL_SHARED", REPO.parent / "shared"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OURS, THEIRS = "retrodistill evaluate_suite", "sentence-transformers InformationRetrievalEvaluator"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "beir" / "scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--batch-size", type=int, default=64, help="same for both (our default)")
    parser.add_argument("--k", type=int, default=100, help="documents ranked per query, both (default 100)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--limit-docs",
        type=int,
        default=None,
        help="keep only this many documents (all judged ones, then the first others in corpus order); "
        "for a quick check, not for the figure",
    )
    parser.add_argument("--min-ratio", type=float, default=1.3)
    parser.add_argument("--max-ndcg-diff", type=float, default=1e-6)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks" / "evaluate_speed.json")
    return parser.parse_args(argv)


def subset(collection: Any, limit_docs: int | None, limit_queries: int | None = None) -> Any:
    """A copy of ``collection`` with its first ``limit_queries`` queries and at most ``limit_docs``
    documents: every document judged for those queries, then the others in corpus order."""
    queries = dict(list(collection.queries.items())[:limit_queries])
    qrels = {qid: collection.qrels[qid] for qid in queries}
    judged = {doc_id for docs in qrels.values() for doc_id in docs}
    limit = len(collection.corpus) if limit_docs is None else limit_docs
    if limit < len(judged):
        raise ValueError(f"--limit-docs {limit} is below the {len(judged)} judged documents")
    others = [doc_id for doc_id in collection.corpus if doc_id not in judged][: limit - len(judged)]
    keep = judged | set(others)
    corpus = {doc_id: doc for doc_id, doc in collection.corpus.items() if doc_id in keep}
    return replace(collection, corpus=corpus, queries=queries, qrels=qrels)


class EncodeTimer:
    """Wraps a model's ``encode_query``/``encode_document`` (instance attributes) to add up their time."""

    def __init__(self, model: Any) -> None:
        self.seconds = 0.0
        for name in ("encode_query", "encode_document"):
            setattr(model, name, self._timed(getattr(model, name)))

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def machine_facts(threads: int) -> dict[str, Any]:
    import sentence_transformers
    import torch
    from host import cpu_model

    cpu = cpu_model()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "torch_threads": threads,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from retrodistill.artifacts import write_json_atomic
    from retrodistill.data.collections import load_beir
    from retrodistill.evaluate.retrieval import load_model
    from retrodistill.evaluate.suite import collection_entry, evaluate_suite

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    collection = subset(load_beir(args.data, args.split), args.limit_docs)
    print(collection.describe())

    ours_model = load_model(args.model, device="cpu")
    theirs_model = SentenceTransformer(args.model, device="cpu")
    if ours_model.max_seq_length != theirs_model.max_seq_length:
        raise RuntimeError(f"max_seq_length differs: {ours_model.max_seq_length} vs {theirs_model.max_seq_length}")
    onednn = any("forward" in vars(m) for m in ours_model.modules() if type(m) is torch.nn.Linear)
    ours_timer, theirs_timer = EncodeTimer(ours_model), EncodeTimer(theirs_model)
    similarity = theirs_model.similarity_fn_name
    print(
        f"model {args.model}: max_seq_length {ours_model.max_seq_length}, similarity {similarity}; "
        f"ours with {'oneDNN' if onednn else 'PyTorch'} linear layers"
    )
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch_size {args.batch_size}, "
        f"k {args.k}, {os.cpu_count()} CPUs"
    )

    def make_evaluator(c: Any) -> Any:
        # Judged queries only (the evaluator drops the others too); texts exactly as ours encodes them.
        return InformationRetrievalEvaluator(
            queries=dict(c.queries),
            corpus={doc_id: doc.joined() for doc_id, doc in c.corpus.items()},
            relevant_docs={qid: {d for d, g in docs.items() if g >= 1} for qid, docs in c.qrels.items()},
            corpus_chunk_size=len(c.corpus),
            mrr_at_k=[10],
            ndcg_at_k=[10],
            accuracy_at_k=[10],
            precision_recall_at_k=[10],
            map_at_k=[args.k],
            batch_size=args.batch_size,
            show_progress_bar=False,
            write_csv=False,
        )

    def run_ours(c: Any, out: Path) -> float:
        result = evaluate_suite(
            [args.model],
            [collection_entry(c)],
            ["nDCG@10"],
            out_dir=out,
            k=args.k,
            batch_size=args.batch_size,
            encoders={args.model: ours_model},  # the model loaded (and timed) above
            use_cache=False,  # every repeat computes its run
            show_progress=False,
        )
        return float(result.results[args.model][c.name]["nDCG@10"])

    def run_theirs(c: Any, evaluator: Any) -> float:
        return float(evaluator(theirs_model)[f"{similarity}_ndcg@10"])

    evaluator = make_evaluator(collection)
    load_before = os.getloadavg()  # the machine is shared: other jobs' load makes timings noisy
    seconds: dict[str, list[float]] = {OURS: [], THEIRS: []}
    encode_seconds: dict[str, list[float]] = {OURS: [], THEIRS: []}
    ndcg: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="retrodistill-bench-") as tmp:
        # Warm-up on a small slice: imports (faiss, pytrec_eval), thread pools, oneDNN primitives.
        small = subset(collection, 200, 20)
        run_ours(small, Path(tmp) / "warmup")
        run_theirs(small, make_evaluator(small))

        runners: dict[str, Callable[[int], float]] = {
            OURS: lambda repeat: run_ours(collection, Path(tmp) / f"ours-{repeat}"),
            THEIRS: lambda repeat: run_theirs(collection, evaluator),
        }
        timers = {OURS: ours_timer, THEIRS: theirs_timer}
        names = list(runners)
        for repeat in range(args.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                timers[name].seconds = 0.0
                start = time.perf_counter()
                ndcg[name] = runners[name](repeat)
                seconds[name].append(time.perf_counter() - start)
                encode_seconds[name].append(timers[name].seconds)
                print(
                    f"  repeat {repeat + 1}: {name}: {seconds[name][-1]:.2f} s "
                    f"(encoding {encode_seconds[name][-1]:.2f} s), nDCG@10 {ndcg[name]:.6f}"
                )

    load_after = os.getloadavg()
    median = {name: statistics.median(values) for name, values in seconds.items()}
    paired = [theirs / ours for ours, theirs in zip(seconds[OURS], seconds[THEIRS], strict=True)]
    ratio = median[THEIRS] / median[OURS]
    diff = abs(ndcg[OURS] - ndcg[THEIRS])
    ok = ratio >= args.min_ratio and diff <= args.max_ndcg_diff
    summary = {
        "benchmark": "evaluate_speed",
        "dataset": {
            "path": str(args.data),
            "split": args.split,
            "documents": len(collection.corpus),
            "queries": len(collection.queries),
            "limit_docs": args.limit_docs,
        },
        "model": args.model,
        "settings": {
            "batch_size": args.batch_size,
            "k": args.k,
            "max_seq_length": ours_model.max_seq_length,
            "repeats": args.repeats,
            "ours_linear": "onednn" if onednn else "torch",
        },
        "machine": {
            **machine_facts(torch.get_num_threads()),
            "load_average_1_5_15_min": {"before": load_before, "after": load_after},
        },
        "seconds": seconds,
        "encode_seconds": encode_seconds,
        "median_seconds": median,
        "median_encode_seconds": {name: statistics.median(v) for name, v in encode_seconds.items()},
        "ratio": ratio,
        "ratio_per_repeat": paired,
        "ndcg@10": ndcg,
        "ndcg@10_abs_diff": diff,
        "required": {"min_ratio": args.min_ratio, "max_ndcg_diff": args.max_ndcg_diff},
        "ok": ok,
    }
    print()
    for name in names:
        print(f"{name:55s} {median[name]:8.2f} s (median of {args.repeats}), nDCG@10 {ndcg[name]:.6f}")
    print(f"ratio (theirs / ours wall time): {ratio:.2f}x   required >= {args.min_ratio}")
    print("ratio per repeat: " + ", ".join(f"{r:.2f}x" for r in paired))
    print(f"|nDCG@10 difference|: {diff:.2e}   required <= {args.max_ndcg_diff:g}")
    print(json.dumps(summary, indent=2))
    write_json_atomic(args.out, summary)
    print(f"written to {args.out}")
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
