"""The ``split-dev`` stage: carve a seeded dev split out of a training split, as a dataset of its own.

Settings (a learning rate, epochs, weights, temperatures) are chosen on data the student does not
train on and that is not the test split. ``split-dev`` draws ``dev_queries`` of the training split's
judged queries with the seed and writes a BEIR-layout folder whose ``train`` split is the rest::

    OUT/
      corpus.jsonl, queries.jsonl   links to the source files (nothing is copied)
      qrels/train.tsv               the source split's judgment lines of the other queries
      qrels/dev.tsv                 the drawn queries' lines
      manifest.json                 source, seed, the drawn query ids, counts, fingerprints

The lines are the source file's own, header included, so every judgment (grade 0, absent
documents) is kept. Use OUT as any dataset: ``mine-negatives``/``score-teacher``/``train-student
--dataset OUT`` train on ``train``, ``evaluate --dataset OUT --split dev`` chooses, and the test
split is evaluated once, from the source dataset.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from retrodistill.artifacts import publish_dir, write_manifest
from retrodistill.config import SplitDevConfig, to_dict
from retrodistill.outputs import staging_dir

STAGE = "split-dev"


def run(config: SplitDevConfig) -> Path:
    """Write the dev split of ``config.data`` at ``config.out``; returns ``config.out``.

    Raises:
        ValueError: ``dev_queries`` is not below the number of judged queries, or the source has no
            qrels file for the split.
    """
    import shutil

    from retrodistill.data.collections import load_beir
    from retrodistill.data.download import resolve_dataset

    if config.dev_queries < 1:
        raise ValueError(f"dev_queries must be at least 1, got {config.dev_queries}")
    source = resolve_dataset(config.data.dataset, config.data.data_dir)
    qrels_file = source / "qrels" / f"{config.data.split}.tsv"
    if not qrels_file.is_file():
        raise ValueError(f"{config.data.dataset} has no {config.data.split} split ({qrels_file} is missing)")
    collection = load_beir(source, config.data.split)
    judged = sorted(q for q, docs in collection.qrels.items() if any(grade > 0 for grade in docs.values()))
    if config.dev_queries >= len(judged):
        raise ValueError(
            f"dev_queries {config.dev_queries} would leave no training query: {config.data.split} has "
            f"{len(judged)} queries with a relevant judgment"
        )
    dev = frozenset(random.Random(config.seed).sample(judged, config.dev_queries))
    train_lines, dev_lines = _partition(qrels_file, dev)

    out = Path(config.out)
    staged = staging_dir(out)
    try:
        (staged / "qrels").mkdir()
        for name in ("corpus.jsonl", "queries.jsonl"):
            os.symlink((source / name).resolve(), staged / name)
        (staged / "qrels" / "train.tsv").write_text("".join(train_lines), encoding="utf-8")
        (staged / "qrels" / "dev.tsv").write_text("".join(dev_lines), encoding="utf-8")
        write_manifest(
            staged,
            {
                "stage": STAGE,
                "config": to_dict(config),
                "source": str(source.resolve()),
                "inputs": dict(collection.fingerprints),
                "dev_query_ids": sorted(dev),
                "counts": {
                    "train_queries": len(judged) - len(dev),
                    "dev_queries": len(dev),
                    "train_judgments": _judgments(train_lines),
                    "dev_judgments": _judgments(dev_lines),
                },
            },
        )
        publish_dir(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out


def _query_id(line: str) -> str | None:
    """The query id of a judgment line; ``None`` for the header or a blank line."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) < 3 or not fields[-1].strip().lstrip("-").isdigit():
        return None
    return fields[0].lstrip("\ufeff")


def _judgments(lines: list[str]) -> int:
    return sum(1 for line in lines if _query_id(line) is not None)


def _partition(qrels_file: Path, dev: frozenset[str]) -> tuple[list[str], list[str]]:
    """The file's lines of the other queries and of ``dev``; a header line starts both."""
    train_lines: list[str] = []
    dev_lines: list[str] = []
    with qrels_file.open(encoding="utf-8-sig", newline="") as handle:
        for number, line in enumerate(handle):
            if not line.endswith("\n"):
                line += "\n"
            qid = _query_id(line)
            if qid is None:
                if number == 0:
                    train_lines.append(line)
                    dev_lines.append(line)
                continue
            (dev_lines if qid in dev else train_lines).append(line)
    return train_lines, dev_lines
