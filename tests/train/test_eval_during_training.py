"""Evaluation while training: held-out dev queries, our metrics, the teacher–student τ, the best checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from retrodistill.config import TrainConfig
from retrodistill.data.collections import load_beir
from retrodistill.data.store import TeacherStore
from retrodistill.evaluate.metrics import compute_metrics
from retrodistill.evaluate.retrieval import encode_and_search
from retrodistill.train import run as train
from retrodistill.train.evaluation import (
    TrainingEvaluator,
    check_eval_settings,
    holdout_queries,
    rank_correlations,
    teacher_rankings,
)


def _train(config: TrainConfig, out: Path, **changes: object) -> tuple[Path, list[dict[str, float]]]:
    student = train.run(dataclasses.replace(config, out=str(out), **changes), show_progress=False)
    return student, json.loads((student / "train_log.json").read_text())


def _weights(student: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in load_file(str(student / "model.safetensors")).items()}


def test_held_out_queries_are_evaluated_every_eval_steps_and_not_trained_on(base: TrainConfig, tmp_path: Path) -> None:
    student, log = _train(base, tmp_path / "student", eval_steps=2, eval_holdout=2, max_steps=4, eval_corpus="full")
    evals = [entry for entry in log if "eval_dev_nDCG@10" in entry]
    assert [entry["step"] for entry in evals] == [0, 2, 4]  # the starting student, then every eval_steps
    for entry in evals:
        assert 0.0 <= entry["eval_dev_nDCG@10"] <= 1.0 and 0.0 <= entry["eval_dev_RR@10"] <= 1.0
        assert -1.0 <= entry["eval_dev_kendall_tau"] <= 1.0 and -1.0 <= entry["eval_dev_spearman"] <= 1.0
    manifest = json.loads((student / "manifest.json").read_text())
    assert manifest["counts"]["held_out_queries"] == 2
    assert manifest["counts"]["skipped_queries"]["held out for evaluation"] == 2

    # The logged figures are our harness's on the final student: the held-out queries searched over
    # the whole corpus (eval_corpus: full), scored with graded nDCG.
    from sentence_transformers import SentenceTransformer

    collection = load_beir(base.data.dataset, "train")
    held = holdout_queries(sorted(collection.qrels), 2, base.seed)
    subset = dataclasses.replace(collection, queries={q: collection.queries[q] for q in held})
    run = encode_and_search(SentenceTransformer(str(student), device="cpu"), subset, k=100, show_progress=False)
    expected = compute_metrics({q: collection.qrels[q] for q in held}, run, ["nDCG@10", "RR@10"]).aggregate
    assert evals[-1]["eval_dev_nDCG@10"] == pytest.approx(expected["nDCG@10"], abs=1e-6)
    assert evals[-1]["eval_dev_RR@10"] == pytest.approx(expected["RR@10"], abs=1e-6)


def test_evaluation_does_not_change_what_is_trained(base: TrainConfig, tmp_path: Path) -> None:
    plain, _ = _train(base, tmp_path / "plain", eval_holdout=2, max_steps=4)
    evaluated, _ = _train(base, tmp_path / "evaluated", eval_holdout=2, max_steps=4, eval_steps=1)
    for name, value in _weights(plain).items():
        np.testing.assert_array_equal(value, _weights(evaluated)[name], err_msg=name)


def test_the_teacher_itself_has_tau_one_with_the_teacher(
    toy_dir: Path, loaded_student: object, cross_store: TeacherStore, cross_candidates: object
) -> None:
    # cross_store holds the tiny bi-encoder's own scores, so the same model orders every query's
    # candidates exactly as its teacher: tau = rho = 1.
    collection = load_beir(toy_dir, "train")
    candidates = cross_candidates
    held = frozenset(sorted(collection.qrels)[:3])
    rankings = teacher_rankings(candidates, cross_store.scores_for(candidates), held)  # type: ignore[arg-type]
    assert set(rankings) == held and all(len(r.doc_ids) == len(collection.corpus) for r in rankings.values())
    evaluator = TrainingEvaluator(
        "dev", collection, {q: collection.queries[q] for q in held}, ["nDCG@10"], teacher=rankings
    )
    values = evaluator(loaded_student)
    assert values["dev_kendall_tau"] == pytest.approx(1.0)
    assert values["dev_spearman"] == pytest.approx(1.0)
    # Reversed teacher scores: tau = -1.
    reversed_rankings = {q: dataclasses.replace(r, scores=-r.scores) for q, r in rankings.items()}
    reversed_values = TrainingEvaluator(
        "dev", collection, {q: collection.queries[q] for q in held}, ["nDCG@10"], teacher=reversed_rankings
    )(loaded_student)
    assert reversed_values["dev_kendall_tau"] == pytest.approx(-1.0)


def test_rank_correlations_match_their_definitions() -> None:
    student = np.array([0.1, 0.4, 0.3, 0.9])
    teacher = np.array([1.0, 2.0, 3.0, 4.0])
    tau, rho = rank_correlations(student, teacher)  # type: ignore[misc]
    # 6 pairs, one discordant (0.4 > 0.3 against 2 < 3): (5 - 1) / 6.
    assert tau == pytest.approx(4 / 6)
    # Ranks (1, 3, 2, 4) against (1, 2, 3, 4): 1 - 6 * 2 / (4 * 15).
    assert rho == pytest.approx(1 - 6 * 2 / 60)
    assert rank_correlations(np.array([1.0]), np.array([2.0])) is None
    assert rank_correlations(np.array([1.0, 1.0]), np.array([1.0, 2.0])) is None


def test_load_best_model_at_end_publishes_the_best_evaluated_checkpoint(
    base: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from retrodistill.train import checkpoints

    # Keep a copy of every checkpoint's weights (the staging folder goes once the student is published).
    saved = tmp_path / "saved"
    on_save = checkpoints.CheckpointCallback.on_save

    def keep_copy(self: object, args: object, state: object, control: object, **kwargs: object) -> None:
        on_save(self, args, state, control, **kwargs)  # type: ignore[arg-type]
        step = state.global_step  # type: ignore[attr-defined]
        source = Path(args.output_dir) / f"checkpoint-{step}" / "model.safetensors"  # type: ignore[attr-defined]
        (saved / str(step)).mkdir(parents=True)
        shutil.copy(source, saved / str(step) / "model.safetensors")

    monkeypatch.setattr(checkpoints.CheckpointCallback, "on_save", keep_copy)
    best, log = _train(
        base,
        tmp_path / "best",
        eval_holdout=2,
        eval_steps=1,
        save_steps=1,
        save_total_limit=1,  # the best checkpoint must survive the rotation
        max_steps=6,
        learning_rate=5e-3,
        load_best_model_at_end=True,
        metric_for_best_model="kendall_tau",
    )
    taus = {entry["step"]: entry["eval_dev_kendall_tau"] for entry in log if "eval_dev_kendall_tau" in entry}
    assert sorted(taus) == [0, 1, 2, 3, 4, 5, 6]
    # The first of the best, as the trainer keeps.
    best_step = max(sorted(taus)[1:], key=lambda step: (taus[step], -step))
    published = _weights(best)
    for step in sorted(taus)[1:]:  # step 0 has no checkpoint, so it is never the one kept
        at_step = _weights(saved / str(step))
        same = all(np.array_equal(published[name], at_step[name]) for name in published)
        assert same == (step == best_step or _same_weights(at_step, _weights(saved / str(best_step)))), step


def _same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eval_steps": 2}, "eval_steps needs something to evaluate"),
        ({"eval_steps": 0, "eval_holdout": 2}, "eval_steps must be a whole number"),
        ({"eval_steps": 2, "eval_holdout": 2, "eval_corpus": "bm25"}, "eval_corpus must be one of candidates, full"),
        ({"eval_steps": 2, "eval_dataset": "scifact"}, "needs eval_candidates"),
        ({"load_best_model_at_end": True}, "load_best_model_at_end needs eval_steps"),
        (
            {"eval_steps": 2, "eval_holdout": 2, "load_best_model_at_end": True, "save_steps": 3},
            "multiple of eval_steps",
        ),
        (
            {
                "eval_steps": 2,
                "eval_dataset": "x",
                "eval_corpus": "full",
                "eval_split": "test",
                "load_best_model_at_end": True,
                "save_steps": 2,
            },
            "would choose the student on a test split",
        ),
        (
            {
                "eval_steps": 2,
                "eval_holdout": 2,
                "load_best_model_at_end": True,
                "save_steps": 2,
                "metric_for_best_model": "MAP",
            },
            "metric_for_best_model 'MAP' is not evaluated",
        ),
        ({"eval_holdout": 2, "stage": "corpus"}, "the corpus stage has no training queries"),
        ({"eval_steps": 2, "eval_holdout": 2, "eval_measures": ["nDCG@x"]}, "cannot parse measure 'nDCG@x'"),
        (
            {"eval_steps": 2, "eval_dataset": "x", "eval_candidates": "/no/such"},
            "eval_candidates /no/such: no candidates",
        ),
    ],
)
def test_inconsistent_evaluation_settings_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_eval_settings(dataclasses.replace(TrainConfig(), **changes))


def test_holding_out_every_training_query_is_refused(base: TrainConfig, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="would hold out every one of the 6 training queries"):
        train.run(dataclasses.replace(base, out=str(tmp_path / "s"), eval_holdout=6, eval_steps=1), show_progress=False)
    assert not (tmp_path / "s").exists()


def test_evaluation_uses_the_published_text_length_and_restores_the_training_one(
    toy_dir: Path, student: object
) -> None:
    collection = load_beir(toy_dir, "train")
    queries = {q: collection.queries[q] for q in sorted(collection.qrels)}
    full = TrainingEvaluator("dev", collection, queries, ["nDCG@10", "RR@10"])(student)
    student.max_seq_length = 4  # type: ignore[attr-defined]  # as train_max_seq_length truncates while training
    short = TrainingEvaluator("dev", collection, queries, ["nDCG@10", "RR@10"])(student)
    published = TrainingEvaluator("dev", collection, queries, ["nDCG@10", "RR@10"], max_seq_length=64)(student)
    assert published == full != short
    assert student.max_seq_length == 4  # type: ignore[attr-defined]


def test_another_dataset_is_evaluated_over_its_corpus_or_its_candidates(
    base: TrainConfig, toy_dir: Path, cross_candidates: object, tmp_path: Path
) -> None:
    # The toy set's train split stands in for a dev split here; cross_candidates rank every document
    # for every train query, so reranking them equals searching the whole corpus.
    settings = {"eval_steps": 2, "eval_dataset": str(toy_dir), "eval_split": "train", "max_steps": 2}
    _, full = _train(base, tmp_path / "full", eval_corpus="full", **settings)
    _, reranked = _train(
        base,
        tmp_path / "reranked",
        eval_corpus="candidates",
        eval_candidates=str(cross_candidates.path),  # type: ignore[attr-defined]
        **settings,
    )
    last_full = [entry for entry in full if "eval_toy_nDCG@10" in entry][-1]
    last_reranked = [entry for entry in reranked if "eval_toy_nDCG@10" in entry][-1]
    assert last_full["step"] == last_reranked["step"] == 2
    assert last_full["eval_toy_nDCG@10"] == pytest.approx(last_reranked["eval_toy_nDCG@10"], abs=1e-6)
    assert "eval_toy_kendall_tau" not in last_full  # no teacher scores for another dataset's queries
