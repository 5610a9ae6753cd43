"""TREC run files and metrics JSON.

A run file holds one line per retrieved document, whitespace-separated::

    query_id  Q0  doc_id  rank  score  tag
    1         Q0  31715818  1  0.7312614917755127  all-MiniLM-L6-v2

Invariants: ids and the tag hold no whitespace; within a query, lines are written best first in
trec_eval order (score descending, ties by document id descending) with ranks 1, 2, …; a
(query, document) pair appears once. Scores are written with ``repr`` so they read back as the
same float. trec_eval ignores the rank column and re-sorts by score, and so does
:func:`read_run`.

Metrics JSON (:func:`write_metrics_json`)::

    {
      ...extra,                                    # e.g. dataset, split, model
      "aggregate": {"nDCG@10": 0.6451, ...},       # mean over judged queries
      "per_query": {"1": {"nDCG@10": 1.0, ...}, ...}
    }
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrodistill.artifacts import write_json_atomic
from retrodistill.data.collections import DataFormatError
from retrodistill.data.records import iter_lines
from retrodistill.evaluate.metrics import MetricResult, Run, trec_order
from retrodistill.temporaries import writer_atomic_path


def _check_token(value: str, what: str) -> None:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError(f"{what} {value!r} cannot be written to a TREC run: it is empty or holds whitespace")


def write_run(
    path: str | os.PathLike[str],
    run: Mapping[str, Mapping[str, float]],
    tag: str = "retrodistill",
) -> Path:
    """Write ``run`` (query id → document id → score) as a TREC run file, atomically.

    Queries are written in the order of ``run``; documents in trec_eval order.

    Raises:
        ValueError: an id or the tag is empty or holds whitespace.
    """
    _check_token(tag, "tag")
    path = Path(path)
    with writer_atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for qid, docs in run.items():
            _check_token(qid, "query id")
            for rank, (doc_id, score) in enumerate(trec_order(docs), start=1):
                _check_token(doc_id, "document id")
                f.write(f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")
    return path


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run file into query id → document id → score.

    Raises:
        FileNotFoundError: there is no such file.
        DataFormatError: a line does not have 6 columns, a rank or score does not parse (or the
            score is not finite), a (query, document) pair repeats, or the file is not UTF-8; the
            message names ``FILE:LINE``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such run file")
    run: Run = {}
    first_line: dict[tuple[str, str], int] = {}
    for number, line in iter_lines(path):  # blank lines skipped; a BOM dropped; a bad byte named by line
        parts = line.split()
        if len(parts) != 6:
            raise DataFormatError(path, number, f"expected 6 columns (qid Q0 docid rank score tag), found {len(parts)}")
        qid, _q0, doc_id, rank, score_text, _tag = parts
        try:
            int(rank)
        except ValueError:
            raise DataFormatError(path, number, f"rank {rank!r} is not an integer") from None
        try:
            score = float(score_text)
        except ValueError:
            raise DataFormatError(path, number, f"score {score_text!r} is not a number") from None
        if not math.isfinite(score):
            raise DataFormatError(path, number, f"score {score_text!r} is not a finite number")
        if (qid, doc_id) in first_line:
            raise DataFormatError(
                path,
                number,
                f"({qid}, {doc_id}) listed twice (first on line {first_line[qid, doc_id]})",
            )
        first_line[qid, doc_id] = number
        run.setdefault(qid, {})[doc_id] = score
    return run


def write_metrics_json(
    path: str | os.PathLike[str],
    result: MetricResult,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``extra`` fields, the aggregate and the per-query metrics as JSON, atomically."""
    data: dict[str, Any] = dict(extra or {})
    data.update(result.to_json())
    write_json_atomic(path, data)
    return Path(path)
