"""train-student's data path alone: examples (query + 1 + N documents, teacher scores) per second.

Builds the training examples exactly as ``train-student`` does (``retrodistill.train.training_data.query_data``:
store and candidates checked, examples drawn as integer arrays, texts looked up per batch), then times:

* ``transform``: batches read from the dataset (its transform looks up the query and document texts);
* ``collated``: the same batches through the trainer's own data collator (tokenisation included), with
  the student's tokenizer; this is what the GPU waits for when the loader has no worker processes.

Target (issue "MS MARCO at its real size"): ≥ 3,000 examples of 1 + 7 documents per second. Run on the
store that ``benchmarks/scale.py``'s import stage wrote::

    nice python benchmarks/loader_speed.py --dataset /tmp/retrodistill-scale/data/p1M-…/msmarco-synthetic \\
        --store /tmp/retrodistill-scale/runs/p1M-…/store --student /tmp/retrodistill-scale/data/p1M-…/models/student

It prints one line per measurement, the load average, the peak RSS, and OK or FAIL.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="BEIR-layout folder the store was made from")
    parser.add_argument("--store", required=True, help="teacher-score store (import-scores or score-teacher)")
    parser.add_argument("--student", required=True, help="student model folder (its tokenizer collates)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--batches", type=int, default=200, help="batches timed per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="transform passes over fresh random rows")
    parser.add_argument("--max-seq-length", type=int, default=128, help="tokenizer truncation when collating")
    parser.add_argument("--min-rate", type=float, default=3000.0, help="examples/s the transform must reach")
    args = parser.parse_args(argv)

    import numpy as np

    from retrodistill.config import DataConfig, TrainConfig
    from retrodistill.data.download import load_dataset
    from retrodistill.losses import LOSSES, required_inputs
    from retrodistill.train.training_data import query_data as _query_data

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    config = TrainConfig(
        data=DataConfig(dataset=args.dataset, split=args.split),
        store=args.store,
        negatives=args.negatives,
        batch_size=args.batch_size,
    )
    start = time.perf_counter()
    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    loss = LOSSES.build(config.loss.name, config.loss.params)
    data = _query_data(config, collection, config.loss.name, frozenset(required_inputs(loss)), False)
    dataset = data.dataset(collection)
    prepared = time.perf_counter() - start
    print(f"examples built: {len(dataset):,} in {prepared:.1f} s (collection load, store join, seeded draw)")

    rng = np.random.default_rng(0)
    need = args.batches * args.batch_size
    rates = []
    for repeat in range(args.repeats):
        # Fresh random rows each repeat: the first reads texts the OS has not cached yet, later ones a
        # mix; the median is what a long run sees once its corpus is (partly) in the page cache.
        order = np.resize(rng.permutation(len(dataset)), need)
        batches = [order[i : i + args.batch_size].tolist() for i in range(0, need, args.batch_size)]
        start = time.perf_counter()
        for batch in batches:
            dataset[batch]
        rates.append(need / (time.perf_counter() - start))
        print(f"transform, repeat {repeat + 1}: {rates[-1]:,.0f} examples/s (1 + {args.negatives} documents, "
              f"batch {args.batch_size})")
    transform_rate = float(np.median(rates))

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    model = SentenceTransformer(args.student, device="cpu")
    model.max_seq_length = args.max_seq_length
    collator = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)
    start = time.perf_counter()
    for batch in batches[: max(1, len(batches) // 4)]:
        rows = dataset[batch]
        features = [{k: rows[k][i] for k in rows} for i in range(len(batch))]
        collator(features)
    collated_rate = max(1, len(batches) // 4) * args.batch_size / (time.perf_counter() - start)
    print(f"collated (tokenised, max {args.max_seq_length} tokens): {collated_rate:,.0f} examples/s")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak RSS: {peak:.2f} GB; load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ok = transform_rate >= args.min_rate
    verdict = "OK" if ok else "FAIL"
    print(f"transform median {transform_rate:,.0f} examples/s, required >= {args.min_rate:,.0f}: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
