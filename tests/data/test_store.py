"""Teacher-score stores read column-wise: vectorised lookups, and parts checked on open."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from retrodistill.artifacts import write_manifest
from retrodistill.data.candidates import Candidate, read_candidates, write_candidates
from retrodistill.data.part_store import PartChangedError, rows_fingerprint
from retrodistill.data.store import TeacherStore, part_name, write_part

PAIRS = [("q1", "d1"), ("q1", "d10"), ("q1", "d2"), ("q2", "d1"), ("q3", "d7")]
SCORES = [0.5, -1.25, 3.0, 7.5, 0.0]


def _store(path: Path, part_size: int = 2) -> TeacherStore:
    parts = {}
    for index in range(math.ceil(len(PAIRS) / part_size)):
        chunk = slice(index * part_size, (index + 1) * part_size)
        parts[part_name(index)] = write_part(path, index, PAIRS[chunk], SCORES[chunk])
    q, d = zip(*PAIRS, strict=True)
    write_manifest(
        path,
        {
            "stage": "score-teacher",
            "num_parts": len(parts),
            "parts": parts,
            "complete": True,
            "fingerprint": rows_fingerprint(q, d, SCORES),
        },
    )
    return TeacherStore.open(path)


def test_lookup_finds_stored_pairs_and_nan_for_others(tmp_path: Path) -> None:
    store = _store(tmp_path)
    got = store.lookup(["q2", "q1", "q1", "q9", "q3", "q1"], ["d1", "d2", "d7", "d1", "d7", "d10"])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([7.5, 3.0, np.nan, np.nan, 0.0, -1.25], dtype=np.float32))
    assert store.lookup([], []).shape == (0,)
    assert store.scores() == dict(zip(PAIRS, SCORES, strict=True))


def test_scores_for_aligns_with_the_candidate_rows(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    rows = [Candidate(q, d, int(d == "d1"), r, math.nan) for r, (q, d) in enumerate(PAIRS[::-1], start=1)]
    rows.append(Candidate("q3", "d404", 0, 0, math.nan))
    write_candidates(tmp_path / "cands", rows, {})
    candidates = read_candidates(tmp_path / "cands")
    expected = [dict(zip(PAIRS, SCORES, strict=True)).get((c.query_id, c.doc_id), math.nan) for c in candidates.rows]
    np.testing.assert_array_equal(store.scores_for(candidates), np.array(expected, dtype=np.float32))


def test_a_part_changed_in_place_is_refused_on_open(tmp_path: Path) -> None:
    _store(tmp_path)
    path = tmp_path / part_name(1)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(PartChangedError, match=r"part-00001.parquet: this part was changed") as info:
        TeacherStore.open(tmp_path)
    assert "retrodistill score-teacher" in str(info.value)
    path.unlink()
    with pytest.raises(PartChangedError, match="missing"):
        TeacherStore.open(tmp_path)


def test_integer_ids_are_looked_up_without_a_dictionary(tmp_path: Path) -> None:
    """MS MARCO's numeric ids: the store is in string order ("10" < "9"), the lookup parses them."""
    pairs = [("10", "7"), ("10", "70"), ("10", "8"), ("9", "0"), ("9", "123456789")]
    scores = [1.0, 2.0, 3.0, 4.0, 5.0]
    write_part(tmp_path, 0, pairs, scores)
    q, d = zip(*pairs, strict=True)
    write_manifest(
        tmp_path,
        {
            "stage": "import-scores",
            "num_parts": 1,
            "parts": {part_name(0): write_part(tmp_path, 0, pairs, scores)},
            "complete": True,
            "fingerprint": rows_fingerprint(q, d, scores),
        },
    )
    store = TeacherStore.open(tmp_path)
    got = store.lookup(["9", "10", "010", "10", "x", "9"], ["123456789", "70", "70", "07", "7", "0"])
    np.testing.assert_array_equal(got, np.array([5.0, 2.0, np.nan, np.nan, np.nan, 4.0], dtype=np.float32))
