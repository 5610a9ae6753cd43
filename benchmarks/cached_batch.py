"""The largest InfoNCE batch that fits a memory budget, with and without GradCache (``cached: true``).

Builds a BERT student offline (hidden 256, 4 layers, vocabulary 30,522, ``max_seq_length`` 128;
random weights, a generated WordPiece vocabulary), then for each mode and each batch size runs one
training step in a fresh subprocess: ``B`` queries of ``--query-tokens`` (16) tokens and ``B x (1+N)``
documents of ``--doc-tokens`` (64) tokens are embedded in train mode (sentence-transformers'
``embed_columns`` uncached, :func:`retrodistill.losses.grad_cache.cached_embed_columns` cached),
scored in-batch (``B x B(1+N)``), and InfoNCE is back-propagated into the student: the training
adapter's path. The child reports its peak RSS (``ru_maxrss``); the parent doubles ``B`` from
``--start`` (``--start-cached`` when cached: smaller batches fit if it does) until a step exceeds
``--limit-gb`` or ``B`` passes ``--max-batch``, then bisects between the last size that fit and the
first that did not, to ``--resolution`` rows. Writes JSON with every step's figures; a cached
largest batch equal to ``--max-batch`` means the search stopped there, not that the next size fails.

    nice python benchmarks/cached_batch.py --out benchmarks/cached_batch.json

Token ids are random (no tokenization to time) and every text has its full length, the worst case
for memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VOCAB = 30522


def build_student(directory: Path, hidden: int, layers: int, max_seq_length: int) -> None:
    """Save a random BERT bi-encoder (mean pooling) under ``directory``; no download."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizer

    bert = directory / "bert"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, model_max_length=max_seq_length)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    transformer = Transformer(str(bert), max_seq_length=max_seq_length)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(directory / "student"))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def one_step(args: argparse.Namespace) -> dict[str, Any]:
    """One forward + backward of InfoNCE on ``args.batch`` rows, in this process."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.losses.merged_forward import embed_columns

    from retrodistill.losses import InfoNCE
    from retrodistill.losses.grad_cache import cached_embed_columns
    from retrodistill.train.st_loss import in_batch_scores

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(args.work / "student"), device="cpu")
    model.train()
    after_load = peak_rss_gb()
    generator = torch.Generator().manual_seed(0)

    def column(tokens: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(5, VOCAB, (args.batch, tokens), generator=generator)
        ids[:, 0], ids[:, -1] = 2, 3  # [CLS] … [SEP]
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids),
        }

    features = [column(args.query_tokens)] + [column(args.doc_tokens) for _ in range(1 + args.negatives)]
    start = time.perf_counter()
    if args.mode == "cached":
        embeddings = cached_embed_columns(model, features, args.mini_batch_size)
    else:
        embeddings = embed_columns(model, features)
    query, documents = embeddings[0], torch.stack(embeddings[1:], dim=1)  # (B, D), (B, 1+N, D)
    scores, positive = in_batch_scores(query, documents, "cosine")  # (B, B(1+N))
    loss = InfoNCE(scale=20.0)(scores, positive)
    loss.backward()
    return {
        "mode": args.mode,
        "batch": args.batch,
        "texts": args.batch * (2 + args.negatives),
        "loss": loss.item(),
        "seconds": round(time.perf_counter() - start, 1),
        "rss_after_load_gb": round(after_load, 3),
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }


def run_child(args: argparse.Namespace, mode: str, batch: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--mode", mode, "--batch", str(batch)]
    for name in ("work", "query_tokens", "doc_tokens", "negatives", "mini_batch_size", "threads"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    load = os.getloadavg()[0]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.step_timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "batch": batch, "error": f"timed out after {args.step_timeout} s", "load": load}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"mode": mode, "batch": batch, "error": f"exit {done.returncode}: {' | '.join(tail)}", "load": load}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = round(load, 2)
    return result


def largest_fitting(args: argparse.Namespace, mode: str, steps: list[dict[str, Any]]) -> int | None:
    """Double, then bisect, the batch size; ``None`` if even ``--start`` does not fit."""

    def fits(batch: int) -> bool:
        result = run_child(args, mode, batch)
        steps.append(result)
        print(json.dumps(result), flush=True)
        return "error" not in result and result["peak_rss_gb"] <= args.limit_gb

    good, bad = None, None
    batch = args.start_cached if mode == "cached" else args.start
    while batch <= args.max_batch:
        if not fits(batch):
            bad = batch
            break
        good, batch = batch, batch * 2
    if good is None or bad is None:
        return good
    while bad - good > args.resolution:
        middle = (good + bad) // 2 // args.resolution * args.resolution or good + args.resolution
        if middle <= good or middle >= bad:
            break
        good, bad = (middle, bad) if fits(middle) else (good, middle)
    return good


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/retrodistill-cached-batch"))
    parser.add_argument("--out", type=Path, default=None, help="JSON of every step (default: print only)")
    parser.add_argument("--modes", default="uncached,cached")
    parser.add_argument("--limit-gb", type=float, default=4.0, help="peak-RSS budget of one step")
    parser.add_argument("--start", type=int, default=8, help="first batch size tried uncached")
    parser.add_argument(
        "--start-cached", type=int, default=64, help="first batch size tried cached (the smaller fit if it does)"
    )
    parser.add_argument("--max-batch", type=int, default=512, help="stop doubling past this many queries")
    parser.add_argument("--resolution", type=int, default=8, help="bisect to this many queries")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--query-tokens", type=int, default=16)
    parser.add_argument("--doc-tokens", type=int, default=64)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--mini-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--step-timeout", type=int, default=1800)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="uncached", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_step(args)))
        return
    if not (args.work / "student").exists():
        build_student(args.work, args.hidden, args.layers, args.max_seq_length)
    steps: list[dict[str, Any]] = []
    largest = {mode: largest_fitting(args, mode, steps) for mode in args.modes.split(",")}
    summary = {
        "largest_batch_within_limit": largest,
        "limit_gb": args.limit_gb,
        "max_batch_tried": args.max_batch,
        "student": {"hidden": args.hidden, "layers": args.layers, "max_seq_length": args.max_seq_length},
        "rows": f"{args.query_tokens}-token query x (1+{args.negatives}) {args.doc_tokens}-token documents",
        "mini_batch_size": args.mini_batch_size,
        "steps": steps,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "steps"}))
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
