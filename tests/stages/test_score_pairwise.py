"""The score-pairwise stage and command, with a tiny pairwise cross-encoder as the teacher."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.artifacts import ArtifactMismatchError
from retrodistill.config import DataConfig
from retrodistill.data.candidates import Candidate, write_candidates
from retrodistill.data.collections import Collection, load_beir
from retrodistill.data.pair_store import PairStore
from retrodistill.data.store import TeacherStore
from retrodistill.stages import score_pairwise
from retrodistill.stages.score_pairwise import PairwiseTeacherConfig, ScorePairwiseConfig, run
from retrodistill.stages.score_teacher import score_pairs_to_store
from retrodistill.teachers.pairwise import PAIRWISE_TEACHERS


@pytest.fixture(scope="module")
def toy(toy_dir: Path) -> Collection:
    return load_beir(toy_dir, "train")


# --- the score-pairwise stage -------------------------------------------------------------------


def _write_candidates(out: Path, toy: Collection, inputs: dict[str, str] | None = None) -> list[Candidate]:
    """5 candidates per toy train query, mined ranks 1..4 and one positive not retrieved (rank 0)."""
    doc_ids = sorted(toy.corpus)
    rows = [
        Candidate(q, doc_ids[(2 * i + j) % len(doc_ids)], int(j == 4), 0 if j == 4 else j + 1, 1.0 / (j + 1))
        for i, q in enumerate(sorted(toy.queries))
        for j in range(5)
    ]
    write_candidates(out, rows, {"stage": "mine-negatives", "inputs": inputs or toy.fingerprints})
    return rows


def _config(tmp_path: Path, toy_dir: Path, model: Path, **kwargs: Any) -> ScorePairwiseConfig:
    options: dict[str, Any] = {
        "data": DataConfig(dataset=str(toy_dir), split="train"),
        "candidates": str(tmp_path / "candidates"),
        "teacher": PairwiseTeacherConfig(params={"model": str(model), "device": "cpu", "batch_size": 8}),
        "m": 3,
        "out": str(tmp_path / "pairs"),
        "part_size": 5,
    }
    options.update(kwargs)
    return ScorePairwiseConfig(**options)


def _rows(store: PairStore) -> list[tuple[str, str, str, float]]:
    table = store.table()
    return list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def test_run_scores_the_top_m_by_mining_rank_symmetrised(
    pairwise_dir: Path, toy_dir: Path, toy: Collection, tmp_path: Path
) -> None:
    rows = _write_candidates(tmp_path / "candidates", toy)
    store = run(_config(tmp_path, toy_dir, pairwise_dir), show_progress=False)
    scored = _rows(store)
    queries = sorted(toy.queries)
    assert len(scored) == len(queries) * 3 * 2  # m (m - 1) ordered pairs per query, m = 3

    top = {q: [c.doc_id for c in rows if c.query_id == q and 1 <= c.rank <= 3] for q in queries}
    for q in queries:
        assert {(i, j) for qid, i, j, _ in scored if qid == q} == {(i, j) for i in top[q] for j in top[q] if i != j}
    probs = {(q, i, j): p for q, i, j, p in scored}
    assert all(0 <= p <= 1 for p in probs.values())
    assert all(p + probs[q, j, i] == 1.0 for (q, i, j), p in probs.items())

    manifest = json.loads((tmp_path / "pairs" / "manifest.json").read_text())
    candidates_manifest = json.loads((tmp_path / "candidates" / "manifest.json").read_text())
    assert manifest["stage"] == "score-pairwise" and manifest["complete"]
    assert manifest["m"] == 3 and manifest["ranked_by"] == "candidates-rank" and manifest["max_rank_gap"] is None
    assert manifest["orders"] == "symmetrised"
    assert manifest["symmetrisation"].startswith("p_ij = (P(i>j) + 1 - P(j>i)) / 2")
    assert manifest["inputs"] == {
        "corpus": toy.fingerprints["corpus"],
        "queries": toy.fingerprints["queries"],
        "candidates": candidates_manifest["fingerprint"],
    }
    assert manifest["teacher"]["name"] == "pairwise-cross-encoder"
    assert manifest["counts"] == {
        "comparisons": len(queries) * 3,
        "rows": len(scored),
        "queries": len(queries),
        "parts": math.ceil(len(queries) * 3 / 5),
    }
    assert manifest["fingerprint"] == store.fingerprint


def test_run_ranks_by_a_teacher_score_store(pairwise_dir: Path, toy_dir: Path, toy: Collection, tmp_path: Path) -> None:
    rows = _write_candidates(tmp_path / "candidates", toy)
    candidates_fp = json.loads((tmp_path / "candidates" / "manifest.json").read_text())["fingerprint"]
    # A pointwise "teacher" that scores the mining rank itself: its ranking is the mining order reversed.
    pointwise = {(c.query_id, c.doc_id): float(c.rank) for c in rows}
    scores_dir = tmp_path / "scores"
    _write_store(scores_dir, pointwise, toy, candidates_fp)
    store = run(
        _config(tmp_path, toy_dir, pairwise_dir, teacher_scores=str(scores_dir), m=2, orders="ranked"),
        show_progress=False,
    )
    expected = {
        (q, *sorted((c.doc_id for c in rows if c.query_id == q), key=lambda d: -pointwise[q, d])[:2])
        for q in toy.queries
    }
    assert {(q, i, j) for q, i, j, _ in _rows(store)} == expected  # one order: the higher-scored first
    assert store.inputs["teacher_scores"] == TeacherStore.open(scores_dir).fingerprint
    assert store.inputs["candidates"] == candidates_fp
    assert store.manifest["ranked_by"] == "teacher-scores" and store.manifest["symmetrisation"] == "none"


def test_run_refuses_a_store_of_other_candidates(
    pairwise_dir: Path, toy_dir: Path, toy: Collection, tmp_path: Path
) -> None:
    rows = _write_candidates(tmp_path / "candidates", toy)
    _write_store(tmp_path / "scores", {(c.query_id, c.doc_id): 1.0 for c in rows}, toy, "sha256:other")
    with pytest.raises(ArtifactMismatchError, match="candidates: artifact has sha256:other"):
        run(_config(tmp_path, toy_dir, pairwise_dir, teacher_scores=str(tmp_path / "scores")), show_progress=False)
    with pytest.raises(ValueError, match="needs a ranking"):
        run(_config(tmp_path, toy_dir, pairwise_dir, candidates=None), show_progress=False)
    assert not (tmp_path / "pairs").exists()


def _write_store(out: Path, scores: dict[tuple[str, str], float], toy: Collection, candidates_fp: str) -> None:
    from retrodistill.teachers.base import Teacher

    class Lookup(Teacher):
        def __init__(self) -> None:
            self.by_text = {(toy.queries[q], toy.doc_text(d)): s for (q, d), s in scores.items()}

        def score(self, queries: Any, docs: Any, show_progress: bool = False) -> np.ndarray:
            return np.array([self.by_text[q, d] for q, d in zip(queries, docs, strict=True)], dtype=np.float32)

        def describe(self) -> dict[str, Any]:
            return {"name": "lookup"}

    inputs = {**toy.fingerprints, "candidates": candidates_fp}
    doc_text = {d: toy.doc_text(d) for d in toy.corpus}
    score_pairs_to_store(
        Lookup(),
        sorted(scores),
        toy.queries,
        doc_text,
        out,
        part_size=100,
        inputs=inputs,
        config={},
        show_progress=False,
    )


def test_interrupted_then_resumed_gives_the_same_rows(
    pairwise_dir: Path, toy_dir: Path, toy: Collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_candidates(tmp_path / "candidates", toy)
    whole = run(_config(tmp_path, toy_dir, pairwise_dir, out=str(tmp_path / "whole")), show_progress=False)
    resumed_dir = tmp_path / "resumed"
    config = _config(tmp_path, toy_dir, pairwise_dir, out=str(resumed_dir))
    original = score_pairwise.score_comparisons_to_store

    def interrupted(*args: Any, **kwargs: Any) -> PairStore:
        return original(*args, **kwargs, stop_after_parts=1)

    with monkeypatch.context() as patch:  # a crash after the first part
        patch.setattr(score_pairwise, "score_comparisons_to_store", interrupted)
        partial = run(config, show_progress=False)
    assert not partial.manifest["complete"] and list(partial.manifest["parts"]) == ["part-00000.parquet"]
    with pytest.raises(ValueError, match=r"incomplete \(1/4 parts\)"):
        PairStore.open(resumed_dir)
    with pytest.raises(ArtifactMismatchError, match="m: store has 3, given 4"):
        run(_config(tmp_path, toy_dir, pairwise_dir, out=str(resumed_dir), m=4), show_progress=False)
    resumed = run(config, show_progress=False)
    assert resumed.table().equals(whole.table())
    assert resumed.fingerprint == whole.fingerprint
    assert [s["parts_scored"] for s in resumed.manifest["sessions"]] == [1, 3]


def test_both_orders_raw_keep_the_position_bias(
    pairwise_dir: Path, toy_dir: Path, toy: Collection, tmp_path: Path
) -> None:
    _write_candidates(tmp_path / "candidates", toy)
    store = run(_config(tmp_path, toy_dir, pairwise_dir, orders="both", m=4, max_rank_gap=1), show_progress=False)
    probs = {(q, i, j): p for q, i, j, p in _rows(store)}
    assert len(probs) == len(toy.queries) * 3 * 2  # adjacent ranks only: 3 comparisons among 4, both orders
    assert max(abs(p + probs[q, j, i] - 1) for (q, i, j), p in probs.items()) > 0.01


# --- the command ------------------------------------------------------------------------------------


def test_command_writes_a_pair_store(pairwise_dir: Path, toy_dir: Path, toy: Collection, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from retrodistill.cli.score_pairs import score_pairwise

    app = typer.Typer()

    @app.callback()
    def _main() -> None:
        """A test app holding the command, as the real app registers it."""

    app.command("score-pairwise")(score_pairwise)
    _write_candidates(tmp_path / "candidates", toy)
    common = [
        "score-pairwise",
        "--dataset",
        str(toy_dir),
        "--split",
        "train",
        "--candidates",
        str(tmp_path / "candidates"),
    ]
    result = CliRunner().invoke(
        app,
        [
            *common,
            "--model",
            str(pairwise_dir),
            "-m",
            "3",
            "--orders",
            "ranked",
            "--out",
            str(tmp_path / "pairs"),
            "--set",
            "teacher.params.device=cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    store = PairStore.open(tmp_path / "pairs")
    assert store.manifest["m"] == 3 and store.manifest["orders"] == "ranked"
    assert store.manifest["counts"]["rows"] == len(toy.queries) * 3
    assert "(18 comparisons, 6 queries)" in result.output  # 6 toy train queries, 3 pairs among their top 3

    missing = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "other")])
    assert missing.exit_code == 2
    assert "no pairwise teacher model" in missing.output
    bad = CliRunner().invoke(
        app, [*common, "--model", str(pairwise_dir), "--orders", "sideways", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "orders 'sideways' is not one of" in bad.output


def test_example_config_loads_and_names_real_parameters() -> None:
    from retrodistill.config import load_config
    from retrodistill.registry import parameters

    path = Path(__file__).resolve().parents[2] / "configs" / "score_pairwise.yaml"
    config = load_config(ScorePairwiseConfig, path)
    assert (config.m, config.orders, config.max_rank_gap) == (10, "symmetrised", None)
    assert config.teacher_scores and config.candidates
    teacher = PAIRWISE_TEACHERS.get(config.teacher.name)
    assert set(config.teacher.params) <= {p.name for p in parameters(teacher)}
