"""Speed of ColBERT teacher scoring: encoding each distinct text once against encoding every pair.

Both scorers use the same ColBERTTeacher (same model, tokenization, length-sorted batches, torch
threads) on the same candidate lists of real MS MARCO passages, in one process, alternating which
goes first, ``--repeats`` times; the figure is the ratio of median throughputs.

* ours: ``ColBERTTeacher.score`` on an empty cache: each distinct query and passage is encoded once,
  then every pair is scored by MaxSim from the cached token vectors;
* baseline: the query and the passage of every pair are encoded (``encode_queries`` /
  ``encode_documents`` over all pairs, repeats included), then each pair is scored by MaxSim.

Candidate lists: each judged query of the sample gets ``--judged`` of its judged passages, then
passages of one shared pool (``--pool`` passages) until it has ``--per-query``, so lists share
passages the way re-ranking lists of related queries do. The gain is the ratio of encoder work,
so it depends on that sharing; the script prints how many distinct passages there are. ``--pool 0``
draws the rest from the whole corpus instead (almost no sharing).

The model is the real all-MiniLM-L6-v2 encoder saved as a Stanford ColBERT checkpoint
(``HF_ColBERT``, [unused0]/[unused1] markers, query_maxlen 32, doc_maxlen 180) with a seeded,
**untrained** 384→128 projection: no ColBERT can be had offline, so the scores mean nothing and
only speed and agreement between the two scorers are checked. The check fails (exit 1) if our
throughput is under ``--min-ratio`` × the baseline's or a score differs by more than ``--max-diff``.

Run from the repository root::

    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 python benchmarks/colbert_scoring.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
    parser.add_argument("--judged", type=int, default=5, help="judged passages per query (first in the list)")
    parser.add_argument("--pool", type=int, default=60, help="shared pool the rest is drawn from; 0: whole corpus")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass, both scorers")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-ratio", type=float, default=5.0)
    parser.add_argument("--max-diff", type=float, default=1e-4)
    return parser.parse_args(argv)


def candidate_lists(data: Path, split: str, per_query: int, judged: int, pool: int) -> list[tuple[str, str]]:
    """(query, passage) texts: per judged query, ``judged`` judged passages, then shared-pool passages."""
    from retrodistill.data.collections import load_beir

    collection = load_beir(data, split)

    def order(salt: str, doc_ids: list[str]) -> list[str]:
        return sorted(doc_ids, key=lambda d: hashlib.sha256(f"{salt}\t{d}".encode()).hexdigest())

    all_docs = sorted(collection.corpus)
    shared = order("pool", all_docs)[:pool] if pool > 0 else all_docs
    pairs = []
    for qid in sorted(collection.queries):
        chosen = order(qid, [d for d in collection.qrels.get(qid, {}) if d in collection.corpus])[:judged]
        chosen += [d for d in order(qid, shared) if d not in set(chosen)][: per_query - len(chosen)]
        pairs.extend((collection.queries[qid], collection.doc_text(d)) for d in chosen)
    return pairs


def wrap_as_stanford_colbert(out: Path) -> None:
    """Save all-MiniLM-L6-v2 as a Stanford ColBERT checkpoint with a seeded, untrained projection."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(MODEL, use_safetensors=True)
    encoder.config.architectures = ["HF_ColBERT"]
    tensors = {f"bert.{k}": v.contiguous() for k, v in encoder.state_dict().items()}
    weight = torch.randn(128, encoder.config.hidden_size, generator=torch.Generator().manual_seed(0))
    tensors["linear.weight"] = weight
    save_file(tensors, out / "model.safetensors")
    encoder.config.save_pretrained(out)
    AutoTokenizer.from_pretrained(MODEL).save_pretrained(out)
    metadata = {"query_maxlen": 32, "doc_maxlen": 180, "dim": 128, "mask_punctuation": True}
    (out / "artifact.metadata").write_text(json.dumps(metadata))


def time_it(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = fn()
    return time.perf_counter() - start, np.asarray(scores, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers

    from retrodistill.teachers.colbert import ColBERTTeacher, maxsim

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    pairs = candidate_lists(args.data, args.split, args.per_query, args.judged, args.pool)
    queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
    print(
        f"pairs: {len(pairs):,} from {args.data}: {len(set(queries))} queries, {len(set(docs))} distinct passages "
        f"({len(pairs) / len(set(docs)):.1f} pairs per passage; {args.judged} judged + shared pool of {args.pool})"
    )
    print(f"model: {MODEL} as a Stanford ColBERT; its 384->128 projection is UNTRAINED (seeded random),")
    print("       so the scores are meaningless: only speed and agreement between the two scorers are checked")

    with tempfile.TemporaryDirectory(prefix="retrodistill-bench-") as tmp:
        wrap_as_stanford_colbert(Path(tmp))
        teacher = ColBERTTeacher(tmp, batch_size=args.batch_size, device="cpu")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch_size {args.batch_size}, "
        f"linear {teacher.linear_backend}, max_length {teacher.describe()['max_length']}"
    )

    def tokens(side: str, texts: list[str]) -> int:
        return sum(len(ids) for ids, _ in teacher.tokenize(side, texts))

    work = (tokens("query", queries) + tokens("document", docs)) / (
        tokens("query", sorted(set(queries))) + tokens("document", sorted(set(docs)))
    )
    print(f"tokens through the encoder, baseline / ours: {work:.2f}x (the gain to expect if cost ~ tokens)")

    def ours(batch_q: list[str], batch_d: list[str]) -> np.ndarray:
        teacher.clear_cache()
        return teacher.score(batch_q, batch_d)

    def per_pair(batch_q: list[str], batch_d: list[str]) -> np.ndarray:
        q_vectors, d_vectors = teacher.encode_queries(batch_q), teacher.encode_documents(batch_d)
        return np.array([maxsim(q, [d])[0] for q, d in zip(q_vectors, d_vectors, strict=True)])

    scorers = {"baseline: encode every pair, then MaxSim": per_pair, "ColBERTTeacher.score (cached encodes)": ours}
    names = list(scorers)
    for fn in scorers.values():  # warm-up: thread pools, kernels, first allocations
        fn(queries[:64], docs[:64])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    scores: dict[str, np.ndarray] = {}
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            elapsed, scores[name] = time_it(lambda name=name: scorers[name](queries, docs))
            seconds[name].append(elapsed)
            print(f"  repeat {repeat + 1}: {name}: {elapsed:.2f} s")

    rates = {name: len(pairs) / statistics.median(seconds[name]) for name in names}
    base, mine = names
    print()
    for name in names:
        print(f"{name:45s} {rates[name]:8.1f} pairs/s (median of {args.repeats})")
    ratio = rates[mine] / rates[base]
    diff = float(np.abs(scores[mine] - scores[base]).max())
    print(f"ratio (ours / baseline): {ratio:.2f}x   required >= {args.min_ratio}")
    print(
        f"max |score difference|: {diff:.2e}   required <= {args.max_diff:g}   (scores span {np.ptp(scores[base]):.2f})"
    )
    ok = ratio >= args.min_ratio and diff <= args.max_diff
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
