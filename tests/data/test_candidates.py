"""Candidates read column-wise: the table, the sorted pairs, and the fingerprint of today's rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from retrodistill.artifacts import sha256_strings
from retrodistill.data.candidates import (
    Candidate,
    CandidateSet,
    candidate_order,
    candidates_fingerprint,
    candidates_table,
    read_candidates,
    write_candidates,
)

ROWS = [
    Candidate("q2", "d9", 0, 0, math.nan),
    Candidate("q1", "d2", 0, 2, 1.5),
    Candidate("q1", "d1", 1, 1, 2.5),
    Candidate("q10", "d1", -1, 3, 0.25),
    Candidate("q1", "d0", 2, 0, math.nan),
    Candidate("q2", "d3", 0, 1, 9.0),
]


def _old_fingerprint(rows: list[Candidate]) -> str:
    """The definition the manifests of earlier versions hold."""
    return sha256_strings(f"{c.query_id}\t{c.doc_id}\t{c.label}\t{c.rank}" for c in rows)


def test_table_is_in_canonical_order_with_the_old_fingerprint(tmp_path: Path) -> None:
    manifest = write_candidates(tmp_path, ROWS, {"stage": "mine-negatives"})
    expected = sorted(ROWS, key=candidate_order)
    assert manifest["fingerprint"] == _old_fingerprint(expected)
    back = read_candidates(tmp_path)
    assert back.table.schema.names == ["query_id", "doc_id", "label", "rank", "retrieval_score"]
    assert back.table.column("doc_id").to_pylist() == [c.doc_id for c in expected]
    assert [c.doc_id for c in back.rows] == [c.doc_id for c in expected]
    assert manifest["counts"] == {"queries": 3, "rows": 6, "positives": 2, "negatives": 4}


def test_a_table_and_rows_write_the_same_artifact(tmp_path: Path) -> None:
    from_rows = write_candidates(tmp_path / "a", ROWS, {})
    from_table = write_candidates(tmp_path / "b", candidates_table(ROWS[::-1]), {})
    assert from_rows["fingerprint"] == from_table["fingerprint"]
    a, b = read_candidates(tmp_path / "a").table, read_candidates(tmp_path / "b").table
    names = ["query_id", "doc_id", "label", "rank"]
    assert a.select(names).equals(b.select(names))
    np.testing.assert_array_equal(a.column("retrieval_score").to_numpy(), b.column("retrieval_score").to_numpy())


def test_pair_table_is_sorted_and_distinct(tmp_path: Path) -> None:
    write_candidates(tmp_path, ROWS, {})
    pairs = read_candidates(tmp_path).pair_table()
    expected = sorted({(c.query_id, c.doc_id) for c in ROWS})
    assert list(zip(pairs.column("query_id").to_pylist(), pairs.column("doc_id").to_pylist(), strict=True)) == expected
    # Built from rows (a triples file), order kept and duplicates of a pair dropped from the pairs.
    rows = [Candidate("q", "b", 0, 0, math.nan), Candidate("q", "a", 1, 0, math.nan)]
    subset = CandidateSet(tmp_path / "t.tsv", rows, {"fingerprint": candidates_fingerprint(rows)})
    assert subset.table.column("doc_id").to_pylist() == ["b", "a"]
    assert subset.pairs() == [("q", "a"), ("q", "b")]


def test_fingerprint_of_a_table_equals_that_of_its_rows() -> None:
    table = candidates_table(ROWS)
    assert candidates_fingerprint(table) == candidates_fingerprint(ROWS) == _old_fingerprint(ROWS)
    assert candidates_fingerprint(pa.table(table.to_pydict())) == _old_fingerprint(ROWS)  # other integer widths


def test_duplicates_in_a_table_are_refused(tmp_path: Path) -> None:
    table = candidates_table([Candidate("q", "d", 0, 1, 1.0), Candidate("q", "d", 0, 2, 0.5)])
    with pytest.raises(ValueError, match=r"candidate \(q, d\) appears twice"):
        write_candidates(tmp_path, table, {})


def test_empty_candidates_round_trip(tmp_path: Path) -> None:
    manifest = write_candidates(tmp_path, [], {})
    assert manifest["fingerprint"] == sha256_strings([])
    assert len(read_candidates(tmp_path)) == 0


def test_triples_read_column_wise_keep_the_row_rules(tmp_path: Path) -> None:
    from retrodistill.data.candidates import _read_triples_rows, read_triples, read_triples_table, triples_candidates
    from retrodistill.data.collections import DataFormatError

    path = tmp_path / "triples.tsv"
    path.write_text("q2\td1\td2\nq1\td1\td3\n\nq2\td1\td4\r\nq1\t d5\td3\n")
    rows = _read_triples_rows(path)

    def key(c: Candidate) -> tuple[str, str, int, int]:
        return (c.query_id, c.doc_id, c.label, c.rank)

    assert [key(c) for c in read_triples(path)] == [key(c) for c in rows]  # same rows, first-appearance order
    assert read_triples_table(path).column("doc_id").to_pylist() == ["d1", "d2", "d1", "d3", "d4", "d5"]
    assert triples_candidates(path).fingerprint == candidates_fingerprint(sorted(rows, key=candidate_order))
    path.write_text("q1\td1\td2\nq1\td3\td1\n")
    with pytest.raises(DataFormatError, match=r"\(q1, d1\) is both a positive and a negative") as info:
        read_triples_table(path)
    assert info.value.line == 2
    path.write_text("q1\td1\td2\nq1\td3\n")
    with pytest.raises(DataFormatError, match="expected 'qid<TAB>pid_positive<TAB>pid_negative'") as info:
        read_triples_table(path)
    assert info.value.line == 2
    path.write_text("")
    with pytest.raises(DataFormatError, match="empty file"):
        read_triples_table(path)
