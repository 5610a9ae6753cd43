"""Every measure through :func:`compute_metrics` equals trec_eval (pytrec_eval called directly).

The run is real: BM25 (``BM25Retriever``, Lucene variant) over BEIR SciFact's corpus
(``Document.joined()`` texts) for its 300 test queries, top 1000. Each measure is compared per query
and on the mean, to 1e-6, against ``pytrec_eval.RelevanceEvaluator`` asked for trec_eval's own
measure names. trec_eval's ``recip_rank`` has no cutoff, so the trec_eval value of ``RR@10`` is
``recip_rank`` on each ranking truncated to its top 10 in trec_eval's order (score descending, then
document id descending). The same comparison is repeated with the BM25 scores rounded to one
decimal, which creates ties that only trec_eval's tie order resolves. ``Judged@10`` is left out:
trec_eval has no such measure. Skipped when ../shared lacks SciFact.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_path

# ir-measures string -> trec_eval measure name as pytrec_eval reports it.
TREC_NAMES = {
    "nDCG@10": "ndcg_cut_10",
    "nDCG@100": "ndcg_cut_100",
    "nDCG@1000": "ndcg_cut_1000",
    "RR": "recip_rank",
    "R@10": "recall_10",
    "R@100": "recall_100",
    "R@1000": "recall_1000",
    "P@10": "P_10",
    "AP": "map",
    "AP@100": "map_cut_100",
}
TREC_REQUEST = {"ndcg_cut.10,100,1000", "recip_rank", "recall.10,100,1000", "P.10", "map", "map_cut.100"}
MEASURES = [*TREC_NAMES, "RR@10"]
TOLERANCE = 1e-6

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


@pytest.fixture(scope="module")
def scifact_index() -> Any:
    """BM25 (Lucene variant) over SciFact's whole corpus."""
    from retrodistill.data.collections import load_beir
    from retrodistill.index.bm25 import BM25Retriever

    collection = load_beir(shared_path("data", "beir", "scifact"), "test")
    doc_ids = list(collection.corpus)
    retriever = BM25Retriever()
    retriever.index(doc_ids, [collection.corpus[d].joined() for d in doc_ids])
    return retriever


def _bm25_run(retriever: Any, queries: Mapping[str, str]) -> Run:
    query_ids = list(queries)
    hits = retriever.search([queries[q] for q in query_ids], k=1000)
    return {qid: dict(ranked) for qid, ranked in zip(query_ids, hits, strict=True)}


@pytest.fixture(scope="module")
def scifact_bm25(scifact_index: Any) -> tuple[Qrels, Run]:
    """SciFact test qrels and a BM25 top-1000 run over the whole corpus."""
    from retrodistill.data.collections import load_beir

    collection = load_beir(shared_path("data", "beir", "scifact"), "test")
    return collection.qrels, _bm25_run(scifact_index, collection.queries)


def _trec_top(docs: Mapping[str, float], k: int) -> dict[str, float]:
    """The top ``k`` of one ranking in trec_eval's order (score desc, then doc id desc)."""
    ranked = sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return dict(ranked[:k])


def _trec_eval(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """Per-query values under the ir-measures names, all computed by pytrec_eval."""
    import pytrec_eval

    full = pytrec_eval.RelevanceEvaluator(qrels, TREC_REQUEST).evaluate(run)
    top10 = {qid: _trec_top(docs, 10) for qid, docs in run.items()}
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    return {
        qid: {**{ours: values[trec] for ours, trec in TREC_NAMES.items()}, "RR@10": cut[qid]["recip_rank"]}
        for qid, values in full.items()
    }


def _assert_agrees(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    from retrodistill.evaluate.metrics import compute_metrics

    expected = _trec_eval(qrels, run)
    result = compute_metrics(qrels, run, MEASURES)
    assert set(result.per_query) == set(expected) == set(qrels)  # every judged query was retrieved for
    for qid, values in expected.items():
        for measure in MEASURES:
            assert result.per_query[qid][measure] == pytest.approx(values[measure], abs=TOLERANCE), (qid, measure)
    for measure in MEASURES:
        mean = sum(values[measure] for values in expected.values()) / len(expected)
        assert result.aggregate[measure] == pytest.approx(mean, abs=TOLERANCE), measure
    return result.per_query


def _check_rr_cutoff(per_query: dict[str, dict[str, float]]) -> None:
    rr_at_10 = [values["RR@10"] for values in per_query.values()]
    # A first relevant document below rank 10 must give 0, not 1/rank: RR@10 is 0 or at least 1/10.
    assert not [v for v in rr_at_10 if 0.0 < v < 0.1 - TOLERANCE]
    assert any(values["RR@10"] != values["RR"] for values in per_query.values())
    for values in per_query.values():  # the same cutoff, written as a formula on the uncut value
        assert values["RR@10"] == pytest.approx(values["RR"] if values["RR"] >= 0.1 else 0.0, abs=TOLERANCE)


def test_every_measure_equals_trec_eval_on_a_bm25_scifact_run(scifact_bm25: tuple[Qrels, Run]) -> None:
    qrels, run = scifact_bm25
    assert len(run) == 300 and max(len(docs) for docs in run.values()) == 1000
    per_query = _assert_agrees(qrels, run)
    _check_rr_cutoff(per_query)


def test_tied_scores_are_ordered_as_trec_eval_orders_them(scifact_bm25: tuple[Qrels, Run]) -> None:
    import pytrec_eval

    qrels, run = scifact_bm25
    tied = {qid: {doc: round(score, 1) for doc, score in docs.items()} for qid, docs in run.items()}
    # The ties must matter: in some top 10, a relevant document shares its score with a non-relevant one.
    contested = [
        qid
        for qid, docs in tied.items()
        if any(
            doc in qrels[qid] and any(other not in qrels[qid] and s == score for other, s in docs.items())
            for doc, score in _trec_top(docs, 10).items()
        )
    ]
    assert contested
    per_query = _assert_agrees(qrels, tied)
    _check_rr_cutoff(per_query)

    # Breaking the same ties by doc id ascending (as sentence-transformers does) changes some values,
    # so the agreement above is evidence about the tie order, not an accident of tie-free rankings.
    ascending = {
        qid: {doc: float(len(docs) - i) for i, (doc, _) in enumerate(sorted(docs.items(), key=lambda x: (-x[1], x[0])))}
        for qid, docs in tied.items()
    }
    other = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recip_rank"}).evaluate(ascending)
    assert any(
        abs(other[qid]["ndcg_cut_10"] - per_query[qid]["nDCG@10"]) > TOLERANCE
        or abs(other[qid]["recip_rank"] - per_query[qid]["RR"]) > TOLERANCE
        for qid in contested
    )


def test_judgments_to_absent_documents_count_as_trec_eval_counts_them(scifact_index: Any, tmp_path: Path) -> None:
    """SciFact with 5 judgments to documents not in its corpus, one of them for a query judged on nothing else.

    trec_eval given the full qrels keeps every judged query and counts the absent documents in the
    ideal DCG and in recall's denominator; the evaluation view must give the same figures. The
    training view (judgments to existing documents only) gives higher ones: what the old loader
    reported.
    """
    from retrodistill.data.collections import load_beir, read_qrels

    scifact = shared_path("data", "beir", "scifact")
    folder = tmp_path / "scifact-absent"
    (folder / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (folder / name).symlink_to(scifact / name)
    official = (scifact / "qrels" / "test.tsv").read_text(encoding="utf-8")
    judged = [line.split("\t")[0] for line in official.splitlines()[1:]]
    train_query = (scifact / "qrels" / "train.tsv").read_text(encoding="utf-8").splitlines()[1].split("\t")[0]
    absent = [f"{qid}\tabsent-{i}\t1\r\n" for i, qid in enumerate(sorted(set(judged))[:4])]
    absent.append(f"{train_query}\tabsent-only\t1\r\n")  # a query judged only on an absent document
    (folder / "qrels" / "test.tsv").write_text(official + "".join(absent), encoding="utf-8", newline="")

    collection = load_beir(folder, "test")
    assert collection.unknown_judgments == {"queries": 0, "documents": 5}
    evaluated = collection.for_evaluation()
    full = read_qrels(folder / "qrels" / "test.tsv")
    assert evaluated.qrels == full and len(evaluated.queries) == 301 and len(collection.queries) == 300
    run = _bm25_run(scifact_index, evaluated.queries)
    per_query = _assert_agrees(full, run)
    assert per_query[train_query]["nDCG@10"] == 0.0

    from retrodistill.evaluate.metrics import compute_metrics

    trained = compute_metrics(collection.qrels, run, ["nDCG@10", "R@100"]).aggregate
    for measure in ("nDCG@10", "R@100"):
        assert trained[measure] > sum(v[measure] for v in per_query.values()) / len(per_query)
