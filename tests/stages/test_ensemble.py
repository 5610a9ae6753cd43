"""Teacher ensembles: per-query normalisations, weights, pair checks, calibration, the manifest."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from retrodistill.artifacts import check_inputs
from retrodistill.config import DataConfig, TrainConfig, load_config
from retrodistill.data.candidates import Candidate, write_candidates
from retrodistill.data.collections import Collection, load_beir
from retrodistill.data.part_store import pairs_fingerprint, rows_fingerprint
from retrodistill.data.store import TeacherStore
from retrodistill.stages.ensemble import EnsembleConfig, ensemble_stores
from retrodistill.stages.ensemble_calibration import (
    QueryGroups,
    fit_temperature,
    normalize_per_query,
    qrels_fingerprint,
)
from retrodistill.stages.score_teacher import score_pairs_to_store
from retrodistill.teachers.base import Teacher

INPUTS = {"corpus": "sha256:c", "queries": "sha256:q", "candidates": "sha256:k"}
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class LookupTeacher(Teacher):
    """A test double: returns the score it was given for each (query text, document text)."""

    def __init__(self, scores: Mapping[tuple[str, str], float], name: str) -> None:
        self.scores, self.name = dict(scores), name

    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return np.array([self.scores[q, d] for q, d in zip(queries, docs, strict=True)], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": "lookup", "model": self.name, "device": "cpu"}


def make_store(
    path: Path,
    scores: Mapping[tuple[str, str], float],
    name: str = "t",
    inputs: Mapping[str, str] = INPUTS,
    config: dict[str, Any] | None = None,
    part_size: int = 3,
) -> TeacherStore:
    """A complete store of ``scores`` (texts are the ids), in parts of 3 so queries straddle parts."""
    pairs = sorted(scores)
    return score_pairs_to_store(
        LookupTeacher(scores, name),
        pairs,
        {q: q for q, _ in pairs},
        {d: d for _, d in pairs},
        path,
        part_size=part_size,
        inputs=dict(inputs),
        config=config or {},
        show_progress=False,
    )


# Two queries: q1 has four candidates (a tie in member A), q2 two.
A = {("q1", "d1"): 3.0, ("q1", "d2"): 1.0, ("q1", "d3"): 3.0, ("q1", "d4"): 2.0, ("q2", "d1"): 0.5, ("q2", "d5"): -1.5}
B = {("q1", "d1"): 0.25, ("q1", "d2"): 0.5, ("q1", "d3"): -0.5, ("q1", "d4"): 1.0, ("q2", "d1"): 2.0, ("q2", "d5"): 2.0}


@pytest.fixture()
def members(tmp_path: Path) -> list[TeacherStore]:
    return [make_store(tmp_path / "a", A, "a"), make_store(tmp_path / "b", B, "b")]


def combined(store: TeacherStore) -> dict[tuple[str, str], float]:
    return store.scores()


def zscores(values: dict[str, float]) -> dict[str, float]:
    mean = sum(values.values()) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values.values()) / len(values))
    return {d: (v - mean) / std if std else 0.0 for d, v in values.items()}


def test_mean_ensemble_is_the_mean_of_raw_scores(members: list[TeacherStore], tmp_path: Path) -> None:
    store = ensemble_stores(members, tmp_path / "mean")
    assert combined(store) == pytest.approx({pair: (A[pair] + B[pair]) / 2 for pair in A})
    assert list(combined(store)) == sorted(A)  # the store invariant: pairs in sorted order


def test_weights_are_normalised_to_sum_one(members: list[TeacherStore], tmp_path: Path) -> None:
    store = ensemble_stores(members, tmp_path / "w", weights=[3, 1])
    assert combined(store) == pytest.approx({pair: 0.75 * A[pair] + 0.25 * B[pair] for pair in A})
    assert store.manifest["teacher"]["weights"] == [0.75, 0.25]
    with pytest.raises(ValueError, match="got 3 weights for 2 members"):
        ensemble_stores(members, tmp_path / "w3", weights=[1, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        ensemble_stores(members, tmp_path / "wneg", weights=[1, -1])


def test_zscore(members: list[TeacherStore], tmp_path: Path) -> None:
    store = ensemble_stores(members, tmp_path / "z", normalization="zscore")
    expected = {}
    for q in ("q1", "q2"):
        za = zscores({d: s for (qq, d), s in A.items() if qq == q})
        zb = zscores({d: s for (qq, d), s in B.items() if qq == q})
        expected.update({(q, d): (za[d] + zb[d]) / 2 for d in za})
    # By hand: A q1 has mean 9/4 and variance 11/16; B q1 mean 5/16, variance 75/256; A q2 is ±1
    # and B's q2 is constant, so its z-scores are 0.
    assert expected["q1", "d1"] == pytest.approx(((3 - 9 / 4) / math.sqrt(11 / 16) - 1 / math.sqrt(75)) / 2)
    assert expected["q2", "d1"] == pytest.approx((1.0 + 0.0) / 2)
    assert combined(store) == pytest.approx(expected)


def test_minmax(members: list[TeacherStore], tmp_path: Path) -> None:
    store = ensemble_stores(members, tmp_path / "mm", normalization="minmax")
    # A q1: min 1, max 3; B q1: min -0.5, max 1; A q2: 0.5 → 1, -1.5 → 0; B q2 constant → 0.5.
    assert combined(store) == pytest.approx(
        {
            ("q1", "d1"): ((3 - 1) / 2 + (0.25 + 0.5) / 1.5) / 2,
            ("q1", "d2"): ((1 - 1) / 2 + (0.5 + 0.5) / 1.5) / 2,
            ("q1", "d3"): ((3 - 1) / 2 + (-0.5 + 0.5) / 1.5) / 2,
            ("q1", "d4"): ((2 - 1) / 2 + (1 + 0.5) / 1.5) / 2,
            ("q2", "d1"): (1 + 0.5) / 2,
            ("q2", "d5"): (0 + 0.5) / 2,
        }
    )


def test_rank_with_ties(members: list[TeacherStore], tmp_path: Path) -> None:
    store = ensemble_stores(members, tmp_path / "rank", normalization="rank")

    # score 1 − (r − 1)/(n − 1). A q1 ranks: d1, d3 tie for ranks 1 and 2 → 1.5; d4 3; d2 4.
    # B q1 ranks: d4 1, d2 2, d1 3, d3 4. A q2: d1 1, d5 2. B q2: tie → both (1 + 2)/2.
    def r(rank: float, n: int) -> float:
        return 1 - (rank - 1) / (n - 1)

    assert combined(store) == pytest.approx(
        {
            ("q1", "d1"): (r(1.5, 4) + r(3, 4)) / 2,
            ("q1", "d2"): (r(4, 4) + r(2, 4)) / 2,
            ("q1", "d3"): (r(1.5, 4) + r(4, 4)) / 2,
            ("q1", "d4"): (r(3, 4) + r(1, 4)) / 2,
            ("q2", "d1"): (r(1, 2) + r(1.5, 2)) / 2,
            ("q2", "d5"): (r(2, 2) + r(1.5, 2)) / 2,
        }
    )


def test_single_candidate_and_unknown_normalisation() -> None:
    groups = QueryGroups.from_first_flags(np.array([True, True, False]))
    assert normalize_per_query(np.array([7.0, 1.0, 2.0]), groups, "zscore").tolist() == [0.0, -1.0, 1.0]
    assert normalize_per_query(np.array([7.0, 1.0, 2.0]), groups, "rank").tolist() == [0.5, 0.0, 1.0]
    with pytest.raises(ValueError, match="not one of none, zscore, minmax, rank"):
        normalize_per_query(np.array([1.0]), groups, "softmax")


def test_members_with_other_pairs_are_refused(members: list[TeacherStore], tmp_path: Path) -> None:
    other = {**{k: v for k, v in B.items() if k != ("q1", "d2")}, ("q3", "d9"): 1.0, ("q3", "d8"): 2.0}
    c = make_store(tmp_path / "c", other, "c")
    with pytest.raises(ValueError) as info:
        ensemble_stores([members[0], c], tmp_path / "bad")
    message = str(info.value)
    assert "member 1" in message and "has 7 pairs, member 0" in message and "has 6" in message
    assert "2 pairs only in member 1 (e.g. [('q3', 'd8'), ('q3', 'd9')])" in message
    assert "1 pairs of member 0 missing from member 1 (e.g. [('q1', 'd2')])" in message
    assert "--pairs intersection" in message
    assert not (tmp_path / "bad").exists()

    store = ensemble_stores([members[0], c], tmp_path / "common", pairs="intersection")
    common = sorted(set(A) & set(other))
    assert list(combined(store)) == common
    assert combined(store) == pytest.approx({p: (A[p] + other[p]) / 2 for p in common})
    assert store.manifest["dropped_pairs"] == [1, 2]
    assert "candidates" not in store.inputs  # covers no candidates file in full
    assert store.manifest["pairs_fingerprint"] == pairs_fingerprint(common)


def test_members_from_other_inputs_are_refused(members: list[TeacherStore], tmp_path: Path) -> None:
    c = make_store(tmp_path / "c", B, "c", inputs={**INPUTS, "candidates": "sha256:other"})
    with pytest.raises(ValueError, match=r"candidates: member 0 .* has sha256:k, member 1 .* has sha256:other"):
        ensemble_stores([members[0], c], tmp_path / "bad")
    d = make_store(tmp_path / "d", B, "d", inputs={**INPUTS, "queries": "sha256:other"})
    with pytest.raises(ValueError, match="queries: member 0"):
        ensemble_stores([members[0], d], tmp_path / "bad", pairs="intersection")


def test_bad_arguments(members: list[TeacherStore], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least two"):
        ensemble_stores(members[:1], tmp_path / "one")
    with pytest.raises(ValueError, match="normalization 'softmax'"):
        ensemble_stores(members, tmp_path / "x", normalization="softmax")
    with pytest.raises(ValueError, match="is one of the members"):
        ensemble_stores(members, members[0].path)
    ensemble_stores(members, tmp_path / "out")
    with pytest.raises(ValueError, match="exists and is not empty; pass --overwrite"):
        ensemble_stores(members, tmp_path / "out", weights=[1, 3])
    again = ensemble_stores(members, tmp_path / "out", weights=[1, 3], overwrite=True)
    assert again.manifest["teacher"]["weights"] == [0.25, 0.75]


def synthetic_logits(queries: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True logits ``(queries, n)`` and one positive per query drawn from softmax(logits)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(queries, n))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    positive = np.zeros((queries, n), dtype=bool)
    positive[np.arange(queries), [rng.choice(n, p=row) for row in p]] = True
    return z, positive


@pytest.mark.parametrize("t_true", [0.05, 4.0])
def test_calibration_recovers_a_known_temperature(t_true: float) -> None:
    z, positive = synthetic_logits(4000, 8, seed=1)
    groups = QueryGroups.from_first_flags(np.tile([True] + [False] * 7, 4000))
    fit = fit_temperature((z * t_true).ravel(), groups, positive.ravel())
    assert fit.temperature == pytest.approx(t_true, rel=0.08)
    assert not fit.at_bound and fit.queries == 4000 and fit.positives == 4000
    assert fit.objective <= fit.objective_at_1
    # The objective is the mean NLL written out: log Σ exp(s/T) − s_p/T.
    s = z * t_true / fit.temperature
    nll = np.log(np.exp(s).sum(axis=1)) - s[positive]
    assert fit.objective == pytest.approx(nll.mean(), rel=1e-9)


def test_calibrated_ensemble_records_temperatures_in_its_manifest(tmp_path: Path) -> None:
    z, positive = synthetic_logits(600, 5, seed=2)
    qids, dids = [f"q{i:04d}" for i in range(600)], [f"d{j}" for j in range(5)]
    pairs = [(q, d) for q in qids for d in dids]
    sharp = make_store(tmp_path / "sharp", dict(zip(pairs, (z * 0.1).ravel(), strict=True)), "sharp", part_size=1000)
    flat = make_store(tmp_path / "flat", dict(zip(pairs, (z * 5).ravel(), strict=True)), "flat", part_size=1000)
    qrels = {q: {dids[j]: 1} for q, row in zip(qids, positive, strict=True) for j in np.flatnonzero(row)}
    qrels["q-unscored"] = {"d0": 1}
    store = ensemble_stores([sharp, flat], tmp_path / "calibrated", calibrate_on=qrels)

    calibration = store.manifest["teacher"]["calibration"]
    t_sharp, t_flat = calibration["temperatures"]
    assert t_sharp == pytest.approx(0.1, rel=0.2) and t_flat == pytest.approx(5, rel=0.2)
    assert t_flat / t_sharp == pytest.approx(50, rel=1e-3)  # same logits, scaled: same fit up to scale
    assert calibration["qrels"]["fingerprint"] == qrels_fingerprint(qrels)
    assert calibration["qrels"]["queries"] == 601
    assert [m["queries"] for m in calibration["members"]] == [600, 600]
    assert all(m["objective"] < m["objective_at_1"] for m in calibration["members"])
    # Calibrated, both members become ≈ the true logits, so the mean is ≈ z.
    scores = np.array([v for _, v in sorted(store.scores().items())])
    assert scores == pytest.approx(0.5 * (z * 0.1 / t_sharp + z * 5 / t_flat).ravel(), rel=1e-5, abs=1e-5)


def test_manifest_describes_members_and_inputs(members: list[TeacherStore], tmp_path: Path) -> None:
    store = ensemble_stores(members, tmp_path / "ens", normalization="rank", part_size=4)
    manifest = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    assert manifest["stage"] == "ensemble" and manifest["complete"]
    teacher = manifest["teacher"]
    assert teacher["name"] == "ensemble" and teacher["normalization"] == "rank" and teacher["calibration"] is None
    assert [m["teacher"]["model"] for m in teacher["members"]] == ["a", "b"]
    assert [m["fingerprint"] for m in teacher["members"]] == [m.fingerprint for m in members]
    assert [Path(m["path"]) for m in teacher["members"]] == [m.path.resolve() for m in members]
    assert manifest["inputs"] == INPUTS
    assert manifest["num_parts"] == 2 and manifest["counts"] == {"pairs": 6, "queries": 2, "documents": 5, "parts": 2}
    assert manifest["pairs_fingerprint"] == members[0].manifest["pairs_fingerprint"]
    table = store.table()
    assert store.fingerprint == rows_fingerprint(
        table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), table.column("score").to_pylist()
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ens")]  # no staging folder left


@pytest.fixture(scope="module")
def toy(toy_dir: Path) -> Collection:
    return load_beir(toy_dir, "train")


def test_train_student_accepts_the_ensemble(toy: Collection, toy_dir: Path, tmp_path: Path) -> None:
    """The checks train-student makes before training (train/run.py), on an ensemble store."""
    from retrodistill.train.examples import build_examples
    from retrodistill.train.training_data import load_candidates as _load_candidates

    doc_ids = sorted(toy.corpus)
    rows = [
        Candidate(q, doc_ids[(i + j) % len(doc_ids)], int(j == 0), j + 1, 1.0 / (j + 1))
        for i, q in enumerate(sorted(toy.queries))
        for j in range(4)
    ]
    candidates = write_candidates(
        tmp_path / "candidates", rows, {"stage": "mine-negatives", "inputs": toy.fingerprints}
    )
    inputs = {
        "corpus": toy.fingerprints["corpus"],
        "queries": toy.fingerprints["queries"],
        "candidates": candidates["fingerprint"],
    }
    config = {"data": {"dataset": str(toy_dir), "split": "train"}, "candidates": str(tmp_path / "candidates")}
    pairs = sorted({(c.query_id, c.doc_id) for c in rows})
    stores = [
        make_store(tmp_path / name, {p: float(k * i % 7) for i, p in enumerate(pairs)}, name, inputs, config)
        for k, name in ((1, "a"), (3, "b"))
    ]
    ensemble_stores(stores, tmp_path / "ens", normalization="zscore")

    train = TrainConfig(data=DataConfig(dataset=str(toy_dir), split="train"), store=str(tmp_path / "ens"))
    store = TeacherStore.open(train.store)
    check_inputs(
        {k: v for k, v in store.inputs.items() if k in ("corpus", "queries")},
        toy.fingerprints,
        artifact="ensemble",
        given="toy",
    )
    found = _load_candidates(train, store)  # from the store's recorded config: no --candidates needed
    assert store.inputs["candidates"] == found.fingerprint
    examples = build_examples(toy, found, store.scores(), negatives=2, negative_pool=30, epochs=1, seed=0)
    assert len(examples) == len(toy.queries)


def test_example_config_loads() -> None:
    cfg = load_config(EnsembleConfig, CONFIGS / "ensemble_t2.yaml")
    assert len(cfg.members) == 3 and cfg.normalization == "none" and cfg.weights == [1.0, 1.0, 1.0]


def test_cli(members: list[TeacherStore], tmp_path: Path) -> None:
    from retrodistill.cli.ensemble import ensemble_teachers

    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("ensemble-teachers")(ensemble_teachers)
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td4\t1\nq2\td1\t1\n")
    args = [str(m.path) for m in members] + [
        "--weights",
        "1,3",
        "--normalization",
        "minmax",
        "--out",
        str(tmp_path / "cli"),
    ]
    result = CliRunner().invoke(app, ["ensemble-teachers", *args, "--calibrate-qrels", str(qrels)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "normalization minmax" in result.output
    manifest = TeacherStore.open(tmp_path / "cli").manifest
    assert manifest["teacher"]["weights"] == [0.25, 0.75]
    assert manifest["teacher"]["calibration"]["qrels"]["source"] == str(qrels)
    assert manifest["config"]["calibrate"]["qrels"] == str(qrels)

    result = CliRunner().invoke(app, ["ensemble-teachers", *args])
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = CliRunner().invoke(app, ["ensemble-teachers", str(members[0].path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "at least two" in result.output
