"""Pair stores: top-m comparison selection, the resumable writer and the (1+N, 1+N) matrix reader."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.artifacts import ArtifactMismatchError
from retrodistill.data.candidates import Candidate
from retrodistill.data.pair_store import (
    PairStore,
    comparison_rows,
    pair_rows_fingerprint,
    ranking_by_candidates,
    ranking_by_scores,
    select_comparisons,
)
from retrodistill.data.store import TeacherStore, part_name
from retrodistill.stages.score_pairwise import score_comparisons_to_store
from retrodistill.stages.score_teacher import score_pairs_to_store
from retrodistill.teachers.base import Teacher
from retrodistill.teachers.pairwise import PairwiseTeacher

QUERIES = {"q1": "first query", "q2": "second query", "q3": "third query"}
DOCS = {f"d{k}": f"document number {k}" for k in range(1, 9)}
RANKING = {
    "q1": ["d3", "d1", "d4", "d2", "d5"],
    "q2": ["d6", "d7", "d8"],
    "q3": ["d2"],  # one candidate: no pair
}
INPUTS = {"corpus": "sha256:c", "queries": "sha256:q", "candidates": "sha256:k"}
SELECTION = {"m": 4, "ranked_by": "candidates-rank", "max_rank_gap": None}


def _raw(query: str, first: str, second: str) -> float:
    """The test double's P(first ≻ second): a fixed function of the texts, with a position bias."""
    digest = hashlib.sha256(f"{query}\t{first}\t{second}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32


class LookupPairwiseTeacher(PairwiseTeacher):
    """A test double: ``_raw`` of the texts; counts the triples it scored."""

    def __init__(self, batch_size: int = 8) -> None:
        self.batch_size = batch_size
        self.scored = 0

    def score(
        self, queries: Sequence[str], docs_i: Sequence[str], docs_j: Sequence[str], show_progress: bool = False
    ) -> np.ndarray:
        self.scored += len(queries)
        return np.array([_raw(*t) for t in zip(queries, docs_i, docs_j, strict=True)], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": "lookup", "model": "sha256", "device": "cpu", "batch_size": self.batch_size}


def _write(out: Path, orders: str = "symmetrised", teacher: PairwiseTeacher | None = None, **kwargs: Any) -> PairStore:
    comparisons = select_comparisons(RANKING, m=4)
    options: dict[str, Any] = {
        "orders": orders,
        "part_size": 2,
        "inputs": INPUTS,
        "selection": SELECTION,
        "config": {},
        "show_progress": False,
    }
    options.update(kwargs)
    return score_comparisons_to_store(teacher or LookupPairwiseTeacher(), comparisons, QUERIES, DOCS, out, **options)


def _p(q: str, i: str, j: str) -> float:
    """The raw probability of the double for ids."""
    return _raw(QUERIES[q], DOCS[i], DOCS[j])


# --- selection -----------------------------------------------------------------------------------


def test_select_comparisons_pairs_the_top_m_once_higher_ranked_first() -> None:
    comparisons = select_comparisons(RANKING, m=3)
    assert comparisons == [
        ("q1", "d3", "d1"),
        ("q1", "d3", "d4"),
        ("q1", "d1", "d4"),
        ("q2", "d6", "d7"),
        ("q2", "d6", "d8"),
        ("q2", "d7", "d8"),
    ]
    for m in (2, 4, 5, 9):
        expected = sum(math.comb(min(m, len(docs)), 2) for docs in RANKING.values())
        assert len(select_comparisons(RANKING, m=m)) == expected  # m (m - 1) / 2 per query with >= m docs
    assert select_comparisons(RANKING, m=5, max_rank_gap=1) == [
        ("q1", "d3", "d1"),
        ("q1", "d1", "d4"),
        ("q1", "d4", "d2"),
        ("q1", "d2", "d5"),
        ("q2", "d6", "d7"),
        ("q2", "d7", "d8"),
    ]


def test_select_comparisons_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="m must be at least 2"):
        select_comparisons(RANKING, m=1)
    with pytest.raises(ValueError, match="max_rank_gap"):
        select_comparisons(RANKING, m=3, max_rank_gap=0)
    with pytest.raises(ValueError, match="query q: its top-3 documents list a document twice"):
        select_comparisons({"q": ["a", "b", "a"]}, m=3)


def test_rankings_by_scores_and_by_mining_rank() -> None:
    scores = {("q", "a"): 1.0, ("q", "b"): 3.0, ("q", "c"): float("nan"), ("q", "d"): 3.0, ("r", "x"): 0.0}
    assert ranking_by_scores(scores) == {"q": ["b", "d", "a", "c"], "r": ["x"]}  # ties by id, NaN last
    rows = [
        Candidate("q", "pos", 1, 0, float("nan")),  # a positive the miner did not retrieve
        Candidate("q", "n2", 0, 2, 0.5),
        Candidate("q", "n1", 0, 1, 0.9),
    ]
    assert ranking_by_candidates(rows) == {"q": ["n1", "n2", "pos"]}


def test_top_m_from_a_teacher_score_store(tmp_path: Path) -> None:
    pointwise = {("q1", d): float(k) for k, d in enumerate(["d5", "d2", "d8", "d1", "d7", "d3"])}
    pointwise |= {("q2", d): -float(k) for k, d in enumerate(["d4", "d6", "d1"])}

    class Lookup(Teacher):
        def score(self, queries: Any, docs: Any, show_progress: bool = False) -> np.ndarray:
            by_text = {(QUERIES[q], DOCS[d]): s for (q, d), s in pointwise.items()}
            return np.array([by_text[q, d] for q, d in zip(queries, docs, strict=True)], dtype=np.float32)

        def describe(self) -> dict[str, Any]:
            return {"name": "lookup"}

    score_pairs_to_store(
        Lookup(), sorted(pointwise), QUERIES, DOCS, tmp_path, part_size=4, inputs=INPUTS, config={}, show_progress=False
    )
    ranking = ranking_by_scores(TeacherStore.open(tmp_path).scores())
    assert select_comparisons(ranking, m=3) == [
        ("q1", "d3", "d7"),  # scores 5 > 4 > 3: the highest-scored three, best first
        ("q1", "d3", "d1"),
        ("q1", "d7", "d1"),
        ("q2", "d4", "d6"),  # scores 0 > -1 > -2
        ("q2", "d4", "d1"),
        ("q2", "d6", "d1"),
    ]


# --- the writer -------------------------------------------------------------------------------------


def test_rows_of_each_order_convention(tmp_path: Path) -> None:
    comparisons = select_comparisons(RANKING, m=4)
    expected_rows = [row for q, a, b in comparisons for row in ((q, a, b), (q, b, a))]
    assert comparison_rows(comparisons, "both") == expected_rows
    assert comparison_rows(comparisons, "ranked") == comparisons

    both = _write(tmp_path / "both", orders="both").table()
    probs = dict(zip(comparison_rows(comparisons, "both"), both.column("prob").to_pylist(), strict=True))
    assert all(p == pytest.approx(_p(*row), abs=1e-7) for row, p in probs.items())  # raw, each order

    sym = _write(tmp_path / "sym").table()
    values = sym.column("prob").to_numpy()
    for k, (q, a, b) in enumerate(comparisons):
        assert values[2 * k] == pytest.approx((_p(q, a, b) + 1 - _p(q, b, a)) / 2, abs=1e-7)
        assert float(values[2 * k]) + float(values[2 * k + 1]) == 1.0  # exactly complementary

    ranked = _write(tmp_path / "ranked", orders="ranked").table()
    assert list(zip(ranked.column("doc_i").to_pylist(), ranked.column("doc_j").to_pylist(), strict=True)) == [
        (a, b) for _, a, b in comparisons
    ]
    with pytest.raises(ValueError, match="orders 'sideways' is not one of"):
        _write(tmp_path / "bad", orders="sideways")


def test_manifest_records_the_store(tmp_path: Path) -> None:
    store = _write(tmp_path)
    manifest = store.manifest
    comparisons = select_comparisons(RANKING, m=4)
    assert manifest["stage"] == "score-pairwise" and manifest["complete"]
    assert manifest["inputs"] == INPUTS
    assert manifest["teacher"] == LookupPairwiseTeacher().describe()
    assert (manifest["m"], manifest["ranked_by"], manifest["max_rank_gap"]) == (4, "candidates-rank", None)
    assert manifest["orders"] == "symmetrised"
    assert manifest["num_comparisons"] == len(comparisons) == 9  # 6 among q1's top 4, 3 among q2's 3
    assert manifest["num_rows"] == 18 and manifest["num_parts"] == math.ceil(9 / 2)
    assert sorted(manifest["parts"]) == [part_name(i) for i in range(5)]
    table = store.table()
    assert manifest["fingerprint"] == pair_rows_fingerprint(*(table.column(c).to_pylist() for c in table.column_names))
    assert store.query_ids == ["q1", "q2"] and "q1" in store and "q3" not in store


def test_resume_scores_only_missing_parts_and_rewrites_damaged_ones(tmp_path: Path) -> None:
    whole = _write(tmp_path / "whole")
    out = tmp_path / "damaged"
    partial = _write(out, stop_after_parts=3)
    assert not partial.manifest["complete"]
    with pytest.raises(ValueError, match=r"incomplete \(3/5 parts\)"):
        PairStore.open(out)
    (out / part_name(3)).write_bytes(b"PAR1 half-written")  # not in the manifest: a crash mid-write
    (out / part_name(1)).write_bytes(b"bit rot")  # listed, but its sha256 no longer matches
    teacher = LookupPairwiseTeacher(batch_size=64)  # a runtime field: may change between sessions
    resumed = _write(out, teacher=teacher)
    assert teacher.scored == 2 * (2 + 2 + 1)  # parts 1, 3 and 4 (2, 2 and 1 comparisons), both orders
    assert resumed.table().equals(whole.table())
    assert resumed.fingerprint == whole.fingerprint
    again = LookupPairwiseTeacher()
    assert _write(out, teacher=again).fingerprint == whole.fingerprint
    assert again.scored == 0  # a complete store is returned as it is


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"orders": "both"}, "orders: store has 'symmetrised', given 'both'"),
        ({"part_size": 3}, "part_size: store has 2, given 3"),
        ({"inputs": {**INPUTS, "candidates": "sha256:other"}}, "inputs.candidates"),
        ({"selection": {**SELECTION, "ranked_by": "teacher-scores"}}, "ranked_by: store has 'candidates-rank'"),
    ],
)
def test_resume_with_other_settings_is_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    _write(tmp_path, stop_after_parts=1)
    with pytest.raises(ArtifactMismatchError, match="new --out") as info:
        _write(tmp_path, **change)
    assert message in str(info.value)


def test_invalid_comparisons_are_refused(tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "orders": "ranked",
        "part_size": 2,
        "inputs": INPUTS,
        "selection": SELECTION,
        "config": {},
    }
    teacher = LookupPairwiseTeacher()
    with pytest.raises(ValueError, match="distinct"):
        score_comparisons_to_store(
            teacher, [("q1", "d1", "d2"), ("q1", "d2", "d1")], QUERIES, DOCS, tmp_path, **options
        )
    with pytest.raises(ValueError, match="1 pairs name 1 unknown document ids"):
        score_comparisons_to_store(teacher, [("q1", "d1", "d404")], QUERIES, DOCS, tmp_path, **options)
    with pytest.raises(ValueError, match="no comparisons"):
        score_comparisons_to_store(teacher, [], QUERIES, DOCS, tmp_path, **options)


# --- the reader -------------------------------------------------------------------------------------


def test_matrix_holds_scored_probabilities_and_nan_elsewhere(tmp_path: Path) -> None:
    store = PairStore.open(_write(tmp_path).path)
    # A training example: positive d1, then negatives in any order, one outside the top 4 (d5) and one
    # the store never saw (d404).
    docs = ["d1", "d5", "d2", "d404", "d3"]
    matrix = store.matrix("q1", docs)
    assert matrix.shape == (5, 5) and matrix.dtype == np.float32
    top = {"d3", "d1", "d4", "d2"}
    for i, a in enumerate(docs):
        for j, b in enumerate(docs):
            if a != b and a in top and b in top:
                expected = (_p("q1", a, b) + 1 - _p("q1", b, a)) / 2  # symmetrised
                assert matrix[i, j] == pytest.approx(expected, abs=1e-7), (a, b)
            else:
                assert np.isnan(matrix[i, j]), (a, b)
    among_top = matrix[np.ix_([0, 2, 4], [0, 2, 4])]  # d1, d2, d3
    assert np.all((among_top + among_top.T)[~np.eye(3, dtype=bool)] == 1.0)  # symmetrised: complements
    assert np.isnan(store.matrix("q3", ["d2", "d1"])).all()  # a query without scored pairs
    assert np.isnan(store.matrix("q404", ["d1", "d3"])).all()
    with pytest.raises(ValueError, match="name a document twice"):
        store.matrix("q1", ["d1", "d3", "d1"])


def test_ranked_store_leaves_the_other_order_unscored(tmp_path: Path) -> None:
    store = _write(tmp_path, orders="ranked")
    matrix = store.matrix("q2", ["d8", "d6", "d7"])
    assert matrix[1, 0] == pytest.approx(_p("q2", "d6", "d8"), abs=1e-7)  # d6 ranked above d8: scored
    assert np.isnan(matrix[0, 1])  # (d8, d6): the other order, not scored
    assert np.isnan(matrix).sum() == 3 + 3  # the diagonal and one order of each of the 3 pairs


def test_matrices_batch_feeds_the_pairwise_loss(tmp_path: Path) -> None:
    import torch

    from retrodistill.losses.pairwise_kl import PairwiseKL

    store = _write(tmp_path)
    batch = store.matrices(["q1", "q2"], [["d3", "d1", "d2"], ["d8", "d6", "d5"]])
    assert batch.shape == (2, 3, 3)
    np.testing.assert_array_equal(batch[1], store.matrix("q2", ["d8", "d6", "d5"]))
    loss = PairwiseKL()(torch.zeros(2, 3), torch.from_numpy(batch))
    # Student scores all equal: q = 1/2, so each pair's KL is log 2 - H(p), averaged over the scored cells.
    p = batch[~np.isnan(batch)].astype(np.float64)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert float(loss) == pytest.approx(float(np.mean(np.log(2) - entropy)), abs=1e-6)
    with pytest.raises(ValueError, match="same number of documents"):
        store.matrices(["q1", "q2"], [["d3", "d1"], ["d8", "d6", "d5"]])


def test_open_refuses_other_artifacts(tmp_path: Path) -> None:
    score_pairs_to_store(
        _PointwiseConstant(),
        [("q1", "d1")],
        QUERIES,
        DOCS,
        tmp_path,
        part_size=1,
        inputs=INPUTS,
        config={},
        show_progress=False,
    )
    with pytest.raises(ValueError, match="not a pairwise teacher store"):
        PairStore.open(tmp_path)


class _PointwiseConstant(Teacher):
    def score(self, queries: Any, docs: Any, show_progress: bool = False) -> np.ndarray:
        return np.zeros(len(queries), dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": "constant"}
