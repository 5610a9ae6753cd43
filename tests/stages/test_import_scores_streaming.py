"""import-scores reads blocks and merges column-wise: the same store and candidates as a row-by-row reference."""

from __future__ import annotations

import gzip
import math
import random
from pathlib import Path

import numpy as np
import pytest

from retrodistill.data import import_merge, import_readers
from retrodistill.data.collections import Collection, DataFormatError, Document
from retrodistill.stages import import_scores as importers
from retrodistill.stages.import_scores import import_scores


def _doc(i: int, ids: str) -> str:
    """Document ids: "d7" (strings), "7" (MS MARCO's integers), or integers with every 5th one "x7"."""
    if ids == "strings":
        return f"d{i}"
    return f"x{i}" if ids == "mixed" and i % 5 == 0 else str(i)


def _collection(queries: int, docs: int, ids: str = "strings") -> Collection:
    corpus = {_doc(i, ids): Document("", f"text {i}") for i in range(docs)}
    qid = "q{}" if ids == "strings" else "{}"
    qids = {qid.format(i): f"query {i}" for i in range(queries)}
    qrels = {qid.format(i): {_doc((7 * i) % docs, ids): 1 + i % 2} for i in range(0, queries, 3)}
    return Collection("synthetic", corpus, qids, qrels, "train", {"corpus": "sha256:c", "queries": "sha256:q"})


def _reference(lines: list[str], collection: Collection, rank: str) -> tuple[list[tuple], list[tuple], int, int]:
    """The import's documented rules, row by row: store rows, candidate rows, duplicates, conflicts."""
    entries: dict[tuple[str, str], tuple[float, bool, int]] = {}
    order: dict[str, list[str]] = {}
    duplicates = conflicts = 0
    for number, line in enumerate(lines):
        pos_score, neg_score, qid, pos, neg = line.split("\t")
        for doc, score, positive in ((pos, pos_score, True), (neg, neg_score, False)):
            value = float(np.float32(float(score)))
            prior = entries.get((qid, doc))
            if prior is None:
                entries[qid, doc] = (value, positive, number)
                order.setdefault(qid, []).append(doc)
            elif prior[0] == value:
                duplicates += 1
            else:
                conflicts += 1
    store = [(q, d, entries[q, d][0]) for q, d in sorted(entries)]
    candidates = []
    for qid in sorted(order):
        docs = order[qid]
        if rank == "score":
            ranked = sorted(docs, key=lambda d: (-entries[qid, d][0], d))
            ranks = {d: i for i, d in enumerate(ranked, start=1)}
        else:
            ranks = {d: i for i, d in enumerate(docs, start=1)}
        judged = collection.qrels.get(qid, {})
        rows = [(qid, d, judged.get(d, int(entries[qid, d][1])), ranks[d]) for d in docs]
        candidates.extend(sorted(rows, key=lambda r: (r[0], r[3] == 0, r[3], r[1])))
    return store, candidates, duplicates, conflicts


@pytest.mark.parametrize(
    ("rank", "ids"), [("file", "strings"), ("score", "strings"), ("file", "integers"), ("score", "mixed")]
)
def test_blocks_give_the_reference_store_and_candidates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: str, ids: str
) -> None:
    monkeypatch.setattr(import_readers, "CSV_BLOCK", 4096)  # many blocks, so codes grow across them
    monkeypatch.setattr(import_merge, "BUCKET", 997)  # and many buckets of queries in the merge
    monkeypatch.setattr(importers, "_SLICE", 50)  # and many slices of queries for the candidates
    collection = _collection(queries=60, docs=400, ids=ids)
    rng = random.Random(0)
    lines = []
    for number in range(3000):
        q = rng.randrange(60)
        # Integer ids only in the first half of a "mixed" file: the codes switch to strings midway.
        kind = ids if ids != "mixed" or number > 1500 else "integers"
        neg = _doc(rng.randrange(400), kind)
        pos = _doc((7 * q) % 400, ids)
        if neg == pos or neg not in collection.corpus:
            continue
        qid = f"q{q}" if ids == "strings" else str(q)
        # Scores repeat for a pair mostly (duplicates) and sometimes differ (conflicts).
        lines.append(f"{9 + q % 3}.5\t{rng.choice([0.25, 0.25, 0.25, -1.5])}\t{qid}\t{pos}\t{neg}")
    source = tmp_path / "scores.tsv.gz"
    source.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    result = import_scores(
        source, "hofstaetter-tsv", collection=collection, out=tmp_path / "store", rank=rank, part_size=97
    )
    store, candidates, duplicates, conflicts = _reference(lines, collection, rank)
    table = result.store.table()
    got = list(zip(*(table.column(c).to_pylist() for c in ("query_id", "doc_id", "score")), strict=True))
    assert got == store
    assert [(c.query_id, c.doc_id, c.label, c.rank) for c in result.candidates.rows] == candidates
    assert (result.report["duplicates"], result.report["conflicts"]) == (duplicates, conflicts)
    assert result.report["records"] == 2 * len(lines)
    assert all(math.isnan(s) for s in result.candidates.table.column("retrieval_score").to_pylist())


def test_lines_are_named_across_blocks_and_blank_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_readers, "CSV_BLOCK", 256)
    monkeypatch.setattr(import_merge, "BUCKET", 13)
    collection = _collection(queries=10, docs=50)
    body = [f"1.0\t0.5\tq{i % 10}\td{i % 50}\td{(i + 1) % 50}" for i in range(40)]
    body[30] = "1.0\t0.75\tq0\td0\td1"  # line 1 said (q0, d1) scores 0.5
    text = "\n".join(body[:10]) + "\n\n\n" + "\n".join(body[10:]) + "\n"  # two blank lines after line 10
    source = tmp_path / "s.tsv"
    source.write_text(text)
    result = import_scores(source, "hofstaetter-tsv", collection=collection, out=tmp_path / "a")
    assert result.report["conflicts"] == 1
    assert result.report["conflict_examples"] == [f"{source}:33: ('q0', 'd1') has score 0.75 here but 0.5 on line 1"]
    with pytest.raises(DataFormatError, match="has score 0.75 here but 0.5 on line 1") as info:
        import_scores(source, "hofstaetter-tsv", collection=collection, out=tmp_path / "b", on_conflict="error")
    assert info.value.line == 33
    # A malformed line far into the file, and a line of spaces (pyarrow refuses it; the rule skips it).
    bad = text.replace(body[35], "1.0\tq1\td1\td2")
    (tmp_path / "bad.tsv").write_text(bad)
    with pytest.raises(DataFormatError, match="expected 5 tab-separated columns") as info:
        import_scores(tmp_path / "bad.tsv", "hofstaetter-tsv", collection=collection, out=tmp_path / "c")
    assert info.value.line == 38
    spaced = text.replace("\n\n\n", "\n   \n\n")
    (tmp_path / "spaced.tsv").write_text(spaced)
    kept = import_scores(tmp_path / "spaced.tsv", "hofstaetter-tsv", collection=collection, out=tmp_path / "d")
    assert kept.store.fingerprint == result.store.fingerprint


def test_non_utf8_bytes_name_their_line(tmp_path: Path) -> None:
    collection = _collection(queries=5, docs=20)
    source = tmp_path / "s.tsv"
    source.write_bytes(b"1.0\t0.5\tq1\td1\td2\n1.0\t0.5\tq1\td\xff\td3\n")
    with pytest.raises(DataFormatError, match="not UTF-8") as info:
        import_scores(source, "hofstaetter-tsv", collection=collection, out=tmp_path / "a")
    assert info.value.line == 2
