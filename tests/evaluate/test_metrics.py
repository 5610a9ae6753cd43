from __future__ import annotations

import math
import random

import pytest

from retrodistill.evaluate.metrics import DEFAULT_MEASURES, compute_metrics, parse_measures, trec_order


def _ranked(doc_ids: list[str]) -> dict[str, float]:
    """A run row listing ``doc_ids`` best first (distinct, decreasing scores)."""
    return {doc_id: float(len(doc_ids) - i) for i, doc_id in enumerate(doc_ids)}


def test_graded_ndcg_at_10_follows_the_formula() -> None:
    qrels = {"q": {"a": 1, "c": 3, "z": 2}}  # z is never retrieved
    run = {"q": _ranked(["a", "x", "y", "c"])}
    dcg = 1 / math.log2(2) + 3 / math.log2(5)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    result = compute_metrics(qrels, run, ["nDCG@10", "nDCG@3"])
    assert result.aggregate["nDCG@10"] == pytest.approx(dcg / idcg, abs=1e-12)
    assert result.aggregate["nDCG@3"] == pytest.approx((1 / math.log2(2)) / idcg, abs=1e-12)


def test_binary_ndcg_and_recall() -> None:
    qrels = {"q": {"a": 1, "b": 1, "c": 1}}
    docs = ["a"] + [f"n{i:03d}" for i in range(98)] + ["b", "c"]  # b at rank 100, c at rank 101
    result = compute_metrics(qrels, {"q": _ranked(docs)}, ["nDCG@10", "R@100", "R@1000"])
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert result.aggregate["nDCG@10"] == pytest.approx((1 / math.log2(2)) / idcg, abs=1e-12)
    assert result.aggregate["R@100"] == pytest.approx(2 / 3, abs=1e-12)
    assert result.aggregate["R@1000"] == pytest.approx(3 / 3, abs=1e-12)


def test_rr_at_10_honours_its_cutoff() -> None:
    qrels = {"q": {"rel": 1}}
    docs = [f"n{i:02d}" for i in range(10)] + ["rel"]  # the only relevant document is at rank 11
    result = compute_metrics(qrels, {"q": _ranked(docs)}, ["RR@10", "RR"])
    assert result.aggregate["RR@10"] == 0.0
    assert result.aggregate["RR"] == pytest.approx(1 / 11, abs=1e-12)

    docs = [f"n{i:02d}" for i in range(9)] + ["rel"]  # rank 10 is inside the cutoff
    result = compute_metrics(qrels, {"q": _ranked(docs)}, ["RR@10"])
    assert result.aggregate["RR@10"] == pytest.approx(1 / 10, abs=1e-12)


def test_ties_are_broken_by_doc_id_descending_as_trec_eval_does() -> None:
    qrels = {"q": {"a": 1}}
    # nine clear leaders, then "a" and "b" tied for rank 10: trec_eval puts "b" first, so "a" is 11th
    run = {"q": {**{f"z{i}": 100.0 - i for i in range(9)}, "a": 50.0, "b": 50.0}}
    result = compute_metrics(qrels, run, ["RR@10", "RR"])
    assert result.aggregate["RR"] == pytest.approx(1 / 11, abs=1e-12)
    assert result.aggregate["RR@10"] == 0.0
    assert trec_order({"a": 1.0, "b": 1.0, "c": 2.0}) == [("c", 2.0), ("b", 1.0), ("a", 1.0)]


def test_rel_threshold_applies_to_binary_measures_only() -> None:
    qrels = {"q": {"a": 1, "b": 2}}
    run = {"q": _ranked(["a", "b"])}
    default = compute_metrics(qrels, run, ["RR@10", "R@1", "nDCG@10"])
    strict = compute_metrics(qrels, run, ["RR@10", "R@1", "nDCG@10"], rel_threshold=2)
    assert default.aggregate["RR@10"] == 1 / 1
    assert strict.aggregate["RR@10"] == 1 / 2
    assert default.aggregate["R@1"] == 1 / 2
    assert strict.aggregate["R@1"] == 0 / 1
    assert strict.aggregate["nDCG@10"] == default.aggregate["nDCG@10"]  # graded gains are unchanged
    # a threshold written in the measure string wins over the argument
    assert compute_metrics(qrels, run, ["RR(rel=2)@10"]).aggregate["RR(rel=2)@10"] == 1 / 2


def test_mean_is_over_judged_queries_and_missing_ones_score_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}  # q3 has no relevant document
    run = {"q1": _ranked(["x", "a"]), "q3": _ranked(["c"]), "unjudged": _ranked(["a"])}
    result = compute_metrics(qrels, run, ["RR@10"])
    assert result.per_query == {"q1": {"RR@10": 1 / 2}, "q2": {"RR@10": 0.0}, "q3": {"RR@10": 0.0}}
    assert result.aggregate["RR@10"] == pytest.approx((1 / 2 + 0 + 0) / 3, abs=1e-12)
    assert result.measures == ("RR@10",)


def test_bad_measure_string_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"cannot parse measure 'nDGC@10'.*nDCG@10"):
        compute_metrics({"q": {"a": 1}}, {}, ["nDGC@10"])
    with pytest.raises(ValueError, match="cannot parse measure 'RR@ten'"):
        parse_measures(["RR@ten"])
    with pytest.raises(ValueError, match="given twice"):
        parse_measures(["RR@10", "RR@10"])


def _random_qrels_and_run(seed: int) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(300)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(40):
        qid = f"q{q}"
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 12))}
        if q % 13 != 0:  # a few judged queries get no results at all
            # scores rounded to one decimal, so that many ties need trec_eval's tie-breaking
            run[qid] = {d: round(rng.random(), 1) for d in rng.sample(docs, 150)}
    return qrels, run


def test_agrees_with_pytrec_eval_per_query() -> None:
    import pytrec_eval

    qrels, run = _random_qrels_and_run(seed=7)
    ours = compute_metrics(qrels, run, ["nDCG@10", "R@100", "R@1000", "RR", "AP", "P@5"])
    names = {"nDCG@10": "ndcg_cut_10", "R@100": "recall_100", "R@1000": "recall_1000", "RR": "recip_rank"}
    names |= {"AP": "map", "P@5": "P_5"}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, set(names.values())).evaluate(run)
    for qid in qrels:
        for ours_name, trec_name in names.items():
            expected = theirs[qid][trec_name] if qid in theirs else 0.0
            assert ours.per_query[qid][ours_name] == pytest.approx(expected, abs=1e-9), (qid, ours_name)
    for ours_name in names:
        expected = sum(ours.per_query[qid][ours_name] for qid in qrels) / len(qrels)
        assert ours.aggregate[ours_name] == pytest.approx(expected, abs=1e-9)


def test_rr_at_10_agrees_with_the_formula_on_a_random_run() -> None:
    qrels, run = _random_qrels_and_run(seed=11)
    ours = compute_metrics(qrels, run, ["RR@10"])
    for qid, judged in qrels.items():
        ranked = [doc_id for doc_id, _ in trec_order(run.get(qid, {}))][:10]
        first = next((i for i, doc_id in enumerate(ranked, start=1) if judged.get(doc_id, 0) >= 1), None)
        assert ours.per_query[qid]["RR@10"] == pytest.approx(0.0 if first is None else 1 / first, abs=1e-12)


def test_default_measures_parse() -> None:
    assert list(parse_measures(DEFAULT_MEASURES)) == ["nDCG@10", "RR@10", "R@100", "R@1000"]
