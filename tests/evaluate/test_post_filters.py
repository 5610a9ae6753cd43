"""Post-filters of a cached run: the identical-id rule, the cut to k, and a reranking put in place on read.

The run cache holds the first stage at depth ``k + 1`` before the rule, and the reranker's scores
of its top ``rerank_depth + 1``; changing the rule or lowering ``k`` must read them, never recompute.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from retrodistill.data.collections import Collection, load_beir
from retrodistill.data.registry import SuiteEntry
from retrodistill.evaluate.runs import ModelSpec, apply_rerank, post_filter, self_hits_at_rank_1
from retrodistill.evaluate.suite import evaluate_suite

MEASURES = ("nDCG@10", "R@5")


@pytest.fixture()
def toy(toy_dir: Path) -> Collection:
    return load_beir(toy_dir, "test")


def test_post_filter_drops_the_self_hit_then_cuts_in_trec_order() -> None:
    run = {"q1": {"q1": 9.0, "a": 5.0, "c": 3.0, "b": 3.0}, "q2": {"x": 1.0, "q2": 0.5}}
    assert post_filter(run, 2, ignore_identical_ids=True) == {"q1": {"a": 5.0, "c": 3.0}, "q2": {"x": 1.0}}
    assert post_filter(run, 2, ignore_identical_ids=False) == {"q1": {"q1": 9.0, "a": 5.0}, "q2": {"x": 1.0, "q2": 0.5}}
    assert self_hits_at_rank_1(run) == 1


def test_apply_rerank_reranks_the_top_after_the_rule() -> None:
    first = {"q1": {"q1": 9.0, "a": 5.0, "b": 4.0, "c": 3.0}}
    scores = {"q1": {"q1": 0.0, "a": 0.1, "b": 0.9}}  # the top depth + 1 = 3 before the rule
    filtered = post_filter(first, 3, ignore_identical_ids=True)
    reranked = apply_rerank(filtered, scores, depth=2)
    assert sorted(reranked["q1"], key=reranked["q1"].__getitem__, reverse=True) == ["b", "a", "c"]
    assert reranked["q1"]["b"] == 0.9 and reranked["q1"]["a"] == 0.1 and reranked["q1"]["c"] < 0.1


def test_changing_the_rule_or_lowering_k_reads_every_cached_run(
    tmp_path: Path, toy: Collection, tiny_cross_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = {
        "rerank": str(tiny_cross_encoder_dir),
        "rerank_depth": 3,
        "cache_dir": tmp_path / "cache",
        "show_progress": False,
    }
    keep = SuiteEntry("toy", [toy], False, 1, "test")
    first = evaluate_suite(["bm25s"], [keep], MEASURES, tmp_path / "a", k=10, **kwargs)  # type: ignore[arg-type]
    # Computed: the first stage and the reranker's scores; the reranked column reads the first stage again.
    assert (first.cache_hits, first.cache_misses) == (1, 2)

    from retrodistill.evaluate import runs

    def recomputed(*args: object, **kw: object) -> None:
        raise AssertionError("a cached run was recomputed")

    monkeypatch.setattr(runs.Retrievers, "first_stage", recomputed)
    monkeypatch.setattr(runs.Retrievers, "reranker", recomputed)
    drop = SuiteEntry("toy", [toy], True, 2, "test", identical_ids_given=True)
    for entry, k in ((drop, 10), (keep, 4), (drop, 2)):
        again = evaluate_suite(["bm25s"], [entry], MEASURES, tmp_path / f"k{k}", k=k, **kwargs)  # type: ignore[arg-type]
        assert (again.cache_hits, again.cache_misses) == (3, 0)
    label = ModelSpec("bm25s", str(tiny_cross_encoder_dir), 3).label
    assert set(again.results) == {"bm25s", label}
