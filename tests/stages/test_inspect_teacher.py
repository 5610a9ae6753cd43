"""inspect-teacher: distributions, nDCG on judged candidates, label noise, agreement, plots, CLI."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from retrodistill.data.store import TeacherStore
from retrodistill.evaluate.metrics import compute_metrics
from retrodistill.stages.ensemble import ensemble_stores
from retrodistill.stages.ensemble_calibration import Judgments, QueryGroups
from retrodistill.stages.inspect_teacher import inspect_store, label_noise
from retrodistill.stages.score_teacher import score_pairs_to_store
from retrodistill.teachers.base import Teacher

INPUTS = {"corpus": "sha256:c", "queries": "sha256:q", "candidates": "sha256:k"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class LookupTeacher(Teacher):
    """A test double: returns the score it was given for each (query text, document text)."""

    def __init__(self, scores: Mapping[tuple[str, str], float], name: str) -> None:
        self.scores, self.name = dict(scores), name

    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return np.array([self.scores[q, d] for q, d in zip(queries, docs, strict=True)], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": "lookup", "model": self.name, "device": "cpu"}


def make_store(path: Path, scores: Mapping[tuple[str, str], float], name: str = "t") -> TeacherStore:
    pairs = sorted(scores)
    return score_pairs_to_store(
        LookupTeacher(scores, name),
        pairs,
        {q: q for q, _ in pairs},
        {d: d for _, d in pairs},
        path,
        part_size=3,
        inputs=INPUTS,
        config={},
        show_progress=False,
    )


# q1: positives p1 (grade 2), p2 (grade 1); negatives n1 (judged 0) and n2 (unjudged).
# Pairs (p, n): (p1, n1) 4 > 3 ok, (p1, n2) 4 > 1 ok, (p2, n1) 2 < 3 inverted, (p2, n2) 2 > 1 ok.
# q2: its only positive is outscored by both negatives, so its top-1 is not relevant.
# q3: unjudged.
SCORES = {
    ("q1", "n1"): 3.0,
    ("q1", "n2"): 1.0,
    ("q1", "p1"): 4.0,
    ("q1", "p2"): 2.0,
    ("q2", "a"): 5.0,
    ("q2", "b"): 6.0,
    ("q2", "p"): 0.5,
    ("q3", "x"): 1.0,
    ("q3", "y"): 2.0,
    ("q3", "z"): 3.0,
}
QRELS = {"q1": {"p1": 2, "p2": 1, "n1": 0, "elsewhere": 1}, "q2": {"p": 1}, "q9": {"d": 1}}


def test_label_noise_counts_inverted_pairs_and_wrong_top1() -> None:
    rows = sorted(SCORES)
    groups = QueryGroups.from_first_flags(np.array([i == 0 or rows[i][0] != rows[i - 1][0] for i in range(len(rows))]))
    positive = np.array([QRELS.get(q, {}).get(d, 0) >= 1 for q, d in rows])
    noise = label_noise(np.array([SCORES[r] for r in rows]), groups, positive)
    # q1: 1 of 4 pairs inverted; q2: 2 of 2.
    assert noise["queries"] == 2 and noise["pairs"] == 4 + 2 and noise["inverted"] == 1 + 2
    assert noise["inverted_fraction"] == pytest.approx(3 / 6)
    assert noise["inverted_fraction_query_mean"] == pytest.approx((1 / 4 + 2 / 2) / 2)
    assert noise["top1_queries"] == 2 and noise["top1_not_relevant"] == pytest.approx(1 / 2)

    one_query = label_noise(
        np.array([3.0, 1.0, 4.0, 2.0]), QueryGroups.from_first_flags(np.array([1, 0, 0, 0], bool)), positive[:4]
    )
    assert one_query["inverted_fraction"] == 0.25


def test_ties_are_not_inversions_and_top1_ties_go_to_the_highest_doc_id() -> None:
    groups = QueryGroups.from_first_flags(np.array([True, False, False]))
    positive = np.array([True, False, False])  # rows sorted by doc id: "a" (positive), "b", "c"
    noise = label_noise(np.array([1.0, 1.0, 0.0]), groups, positive)
    assert noise["inverted"] == 0 and noise["pairs"] == 2
    assert noise["top1_not_relevant"] == 1.0  # "a" and "b" tie; trec_eval ranks "b" first
    assert label_noise(np.array([1.0, 0.0, 1.0]), groups, np.array([False, False, True]))["top1_not_relevant"] == 0.0


def test_plain_store_report(tmp_path: Path) -> None:
    store = make_store(tmp_path / "ce", SCORES, "ce")
    report = inspect_store(store, Judgments(QRELS, "qrels"))
    (member,) = report["members"]
    values = np.array([SCORES[p] for p in sorted(SCORES)])
    stats = member["stats"]
    assert stats["count"] == 10 and stats["mean"] == pytest.approx(values.mean())
    assert stats["std"] == pytest.approx(values.std()) and stats["min"] == 0.5 and stats["max"] == 6.0
    assert stats["p50"] == pytest.approx(np.median(values))
    assert sum(member["histogram"]["counts"]) == 10
    assert member["label_noise"]["inverted_fraction"] == pytest.approx(3 / 6)
    assert report["counts"] == {"pairs": 10, "queries": 3, "queries_with_positive": 2, "judged_pairs": 4}

    # nDCG: the run is each query's candidates with the store's scores; the qrels are restricted to
    # the candidates ("elsewhere" and q9 are not candidates), over queries with a positive candidate.
    run = {"q1": {"n1": 3.0, "n2": 1.0, "p1": 4.0, "p2": 2.0}, "q2": {"a": 5.0, "b": 6.0, "p": 0.5}}
    qrels = {"q1": {"p1": 2, "p2": 1, "n1": 0}, "q2": {"p": 1}}
    expected = compute_metrics(qrels, run, ["nDCG@10"]).aggregate["nDCG@10"]
    assert member["ndcg"] == {"measure": "nDCG@10", "value": pytest.approx(expected), "queries": 2}
    assert 0 < expected < 1
    assert report["agreement"]["kendall_tau"] == [[1.0]]


def test_without_qrels_only_distribution_and_agreement(tmp_path: Path) -> None:
    report = inspect_store(make_store(tmp_path / "ce", SCORES), None)
    assert report["members"][0]["ndcg"] is None and report["members"][0]["label_noise"] is None
    assert report["qrels"] is None and report["members"][0]["stats"]["count"] == 10


@pytest.fixture()
def ensemble(tmp_path: Path) -> TeacherStore:
    """Members: "same" = SCORES, "reversed" = −SCORES, "copy" = SCORES; ensemble = 0.5·same − 0.25·rev + ..."""
    same = make_store(tmp_path / "same", SCORES, "same")
    reversed_ = make_store(tmp_path / "reversed", {p: -s for p, s in SCORES.items()}, "reversed")
    copy = make_store(tmp_path / "copy", SCORES, "copy")
    return ensemble_stores([same, reversed_, copy], tmp_path / "ens", weights=[2, 1, 1])


def test_ensemble_members_and_agreement(ensemble: TeacherStore) -> None:
    report = inspect_store(ensemble, Judgments(QRELS, "qrels"))
    labels = [m["label"] for m in report["members"]]
    assert labels == ["same", "reversed", "copy", "ensemble"]
    agreement = report["agreement"]
    assert agreement["labels"] == labels
    tau = np.array(agreement["kendall_tau"], dtype=float)
    # ensemble = (2·s − s + s)/4 = s/2: ranks like "same" and "copy", against "reversed".
    assert tau == pytest.approx(np.array([[1, -1, 1, 1], [-1, 1, -1, -1], [1, -1, 1, 1], [1, -1, 1, 1]], dtype=float))
    assert agreement["sampled_queries"] == 3 and agreement["queries"][0][1] == 3
    noise = [m["label_noise"]["inverted_fraction"] for m in report["members"]]
    assert noise[0] == noise[2] == noise[3] == pytest.approx(3 / 6)
    assert noise[1] == pytest.approx(3 / 6)  # reversed: q1 has 3 of 4 inverted, q2 0 of 2
    assert report["members"][3]["teacher"]["weights"] == [0.5, 0.25, 0.25]


def test_kendall_tau_is_averaged_over_queries(tmp_path: Path) -> None:
    a = make_store(
        tmp_path / "a", {("q1", "x"): 1.0, ("q1", "y"): 2.0, ("q1", "z"): 3.0, ("q2", "x"): 1.0, ("q2", "y"): 2.0}
    )
    b = make_store(
        tmp_path / "b", {("q1", "x"): 1.0, ("q1", "y"): 3.0, ("q1", "z"): 2.0, ("q2", "x"): 2.0, ("q2", "y"): 1.0}
    )
    report = inspect_store(ensemble_stores([a, b], tmp_path / "ens", weights=[1, 0]), None)
    # q1: 2 concordant, 1 discordant of 3 pairs → τ = 1/3; q2: τ = −1. Mean (1/3 − 1)/2.
    assert report["agreement"]["kendall_tau"][0][1] == pytest.approx((1 / 3 - 1) / 2)


def test_missing_member_is_named(ensemble: TeacherStore, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(tmp_path / "reversed")
    with pytest.raises(FileNotFoundError, match="reversed: member 1 of the ensemble"):
        inspect_store(ensemble)


def test_files_are_written_and_valid(ensemble: TeacherStore, tmp_path: Path) -> None:
    import matplotlib.image

    report = inspect_store(ensemble, Judgments(QRELS, "qrels"), out=tmp_path / "inspect")
    names = sorted(Path(f).name for f in report["files"])
    assert names == ["agreement.png", "inspect.json", "score_hist.png"]
    for name in ("agreement.png", "score_hist.png"):
        path = tmp_path / "inspect" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, _ = matplotlib.image.imread(path).shape
        assert height > 200 and width > 200
    saved = json.loads((tmp_path / "inspect" / "inspect.json").read_text())
    assert saved["members"][0]["label_noise"] == report["members"][0]["label_noise"]
    assert saved["agreement"]["kendall_tau"] == report["agreement"]["kendall_tau"]


def test_cli(ensemble: TeacherStore, toy_dir: Path, tmp_path: Path) -> None:
    from retrodistill.cli.inspect_teacher import inspect_teacher

    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("inspect-teacher")(inspect_teacher)
    qrels = tmp_path / "qrels.trec"
    qrels.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in QRELS.items() for d, g in docs.items()))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["inspect-teacher", str(ensemble.path), "--qrels", str(qrels), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ensemble" in result.output and "50.00%" in result.output and "Kendall" in result.output
    saved = json.loads((out / "inspect.json").read_text())
    assert saved["qrels"]["source"] == str(qrels)
    assert [m["label_noise"]["inverted_fraction"] for m in saved["members"]] == [0.5] * 4
    assert (out / "score_hist.png").is_file() and (out / "agreement.png").is_file()

    result = CliRunner().invoke(app, ["inspect-teacher", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "nowhere" in result.output
    # The toy dataset's queries are not those the store was scored with (INPUTS are made up).
    result = CliRunner().invoke(app, ["inspect-teacher", str(ensemble.path), "--dataset", str(toy_dir)])
    assert result.exit_code == 2 and "queries: artifact has sha256:q" in result.output


@pytest.mark.parametrize("n", [2, 12, 300])
def test_kendall_tau_matrix_matches_scipy(n: int) -> None:
    from scipy.stats import kendalltau

    from retrodistill.stages.inspect_teacher import DIRECT_TAU_MAX, kendall_tau_matrix

    rng = np.random.default_rng(n)
    rankings = [rng.integers(0, 5, size=n).astype(float), rng.normal(size=n), rng.integers(0, 3, size=n) * 1.0]
    tau = kendall_tau_matrix(rankings)
    for i in range(3):
        for j in range(3):
            expected = 1.0 if i == j else kendalltau(rankings[i], rankings[j]).statistic
            assert tau[i, j] == pytest.approx(expected, nan_ok=True)
    assert (n > DIRECT_TAU_MAX) == (n == 300)  # both code paths are exercised
    constant = kendall_tau_matrix([np.ones(n), np.arange(n, dtype=float)])
    assert np.isnan(constant[0, 0]) and np.isnan(constant[0, 1]) and constant[1, 1] == 1.0


def test_members_are_inspected_on_the_pairs_of_an_intersection_ensemble(tmp_path: Path) -> None:
    extra = make_store(tmp_path / "extra", {**SCORES, ("q4", "w"): 9.0}, "extra")
    plain = make_store(tmp_path / "plain", SCORES, "plain")
    store = ensemble_stores([extra, plain], tmp_path / "ens", pairs="intersection")
    report = inspect_store(store)
    assert [m["stats"]["count"] for m in report["members"]] == [10, 10, 10]
    assert report["members"][0]["stats"]["max"] == 6.0  # q4's 9.0 is not among the ensemble's pairs
