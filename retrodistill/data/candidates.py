"""Candidate lists: for each training query, its judged positives and mined negatives.

Schema (one Parquet file ``candidates.parquet`` in the artifact directory, long format)::

    query_id         string   query id in the collection
    doc_id           string   document id in the corpus
    label            int32    qrels grade for judged documents (> 0 for positives), 0 for mined negatives
    rank             int32    1-based rank in the mining run; 0 when the document was not retrieved
    retrieval_score  float32  the miner's score (BM25, dense similarity); NaN when not retrieved

Invariants: one row per (query_id, doc_id); rows sorted by (query_id, rank == 0, rank, doc_id), so a
query's positives not found by the miner come after its retrieved documents. The manifest's
``fingerprint`` is a hash of the rows, which teacher-score stores record as their ``candidates`` input.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrodistill.artifacts import atomic_path, read_manifest, sha256_strings, write_manifest
from retrodistill.data.collections import DataFormatError

CANDIDATES_FILE = "candidates.parquet"


@dataclass(frozen=True)
class Candidate:
    query_id: str
    doc_id: str
    label: int
    rank: int
    retrieval_score: float


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("query_id", pa.string()),
            ("doc_id", pa.string()),
            ("label", pa.int32()),
            ("rank", pa.int32()),
            ("retrieval_score", pa.float32()),
        ]
    )


def candidate_order(c: Candidate) -> tuple[str, bool, int, str]:
    """The row order of a candidates file: by query, retrieved before not retrieved, rank, doc id."""
    return (c.query_id, c.rank == 0, c.rank, c.doc_id)


def candidates_fingerprint(rows: Iterable[Candidate]) -> str:
    return sha256_strings(f"{c.query_id}\t{c.doc_id}\t{c.label}\t{c.rank}" for c in rows)


def write_candidates(
    out_dir: str | os.PathLike[str], rows: Iterable[Candidate], manifest: Mapping[str, Any]
) -> dict[str, Any]:
    """Write the candidates Parquet file and its manifest (adding ``fingerprint`` and ``counts``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ordered = sorted(rows, key=candidate_order)
    seen: set[tuple[str, str]] = set()
    for c in ordered:
        if (c.query_id, c.doc_id) in seen:
            raise ValueError(f"candidate ({c.query_id}, {c.doc_id}) appears twice")
        seen.add((c.query_id, c.doc_id))
    table = pa.table(
        {
            "query_id": [c.query_id for c in ordered],
            "doc_id": [c.doc_id for c in ordered],
            "label": [c.label for c in ordered],
            "rank": [c.rank for c in ordered],
            "retrieval_score": [c.retrieval_score for c in ordered],
        },
        schema=_schema(),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / CANDIDATES_FILE) as tmp:
        pq.write_table(table, tmp)
    data = dict(manifest)
    data["fingerprint"] = candidates_fingerprint(ordered)
    data["counts"] = {
        "queries": len({c.query_id for c in ordered}),
        "rows": len(ordered),
        "positives": sum(1 for c in ordered if c.label > 0),
        "negatives": sum(1 for c in ordered if c.label <= 0),
        **dict(data.get("counts", {})),
    }
    write_manifest(out, data)
    return data


@dataclass
class CandidateSet:
    """Candidates read back from an artifact directory."""

    path: Path
    rows: list[Candidate]
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    def pairs(self) -> list[tuple[str, str]]:
        """Distinct (query_id, doc_id) pairs, sorted: the order teacher scoring follows."""
        return sorted({(c.query_id, c.doc_id) for c in self.rows})

    def by_query(self) -> dict[str, list[Candidate]]:
        grouped: dict[str, list[Candidate]] = {}
        for c in self.rows:
            grouped.setdefault(c.query_id, []).append(c)
        return grouped


def read_candidates(path: str | os.PathLike[str]) -> CandidateSet:
    """Read a candidates artifact directory written by :func:`write_candidates`."""
    import pyarrow.parquet as pq

    directory = Path(path)
    manifest = read_manifest(directory)
    file = directory / CANDIDATES_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing; is {directory} a candidates artifact?")
    table = pq.read_table(file)
    missing = set(_schema().names) - set(table.column_names)
    if missing:
        raise ValueError(f"{file}: missing columns {sorted(missing)}")
    cols = {name: table.column(name).to_pylist() for name in _schema().names}
    rows = [
        Candidate(q, d, int(lab), int(r), float("nan") if s is None else float(s))
        for q, d, lab, r, s in zip(
            cols["query_id"],
            cols["doc_id"],
            cols["label"],
            cols["rank"],
            cols["retrieval_score"],
            strict=True,
        )
    ]
    if candidates_fingerprint(rows) != manifest.get("fingerprint"):
        raise ValueError(f"{file}: rows do not match the fingerprint in {directory / 'manifest.json'}")
    return CandidateSet(directory, rows, manifest)


def read_triples(path: str | os.PathLike[str]) -> list[Candidate]:
    """Read an MS MARCO id-triples TSV (``qid <TAB> pid+ <TAB> pid-``) into candidates.

    Each positive gets label 1 and each negative label 0; ranks are 0 (not from a miner). A pair
    listed as both positive and negative is an error naming the line.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    rows: dict[tuple[str, str], Candidate] = {}
    with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3 or not all(p.strip() for p in parts):
                raise DataFormatError(file, number, "expected 'qid<TAB>pid_positive<TAB>pid_negative'")
            qid, pos, neg = (p.strip() for p in parts)
            for doc_id, label in ((pos, 1), (neg, 0)):
                prior = rows.get((qid, doc_id))
                if prior is not None and prior.label != label:
                    raise DataFormatError(file, number, f"({qid}, {doc_id}) is both a positive and a negative")
                rows[qid, doc_id] = Candidate(qid, doc_id, label, 0, math.nan)
    if not rows:
        raise DataFormatError(file, None, "empty file: no triples")
    return list(rows.values())
