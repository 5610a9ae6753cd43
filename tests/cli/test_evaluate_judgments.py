"""``retrodistill evaluate`` scores as trec_eval does: absent documents, self-hits, thresholds, measures, run files.

Two tiny BEIR folders are built per test: one whose qrels judge documents absent from the corpus
(one query is judged only on such documents), one whose queries are also its documents (same id,
same text, as in ArguAna and Quora). Every figure is checked against ``pytrec_eval`` given the full
qrels file and the run ``evaluate`` wrote, averaged over every judged query.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app
from retrodistill.data.collections import read_qrels
from retrodistill.evaluate.run_files import read_run

runner = CliRunner()

#: ir-measures string -> (what pytrec_eval is asked for, the name it answers under).
TREC = {"nDCG@10": ("ndcg_cut.10", "ndcg_cut_10"), "R@10": ("recall.10", "recall_10"), "AP": ("map", "map")}
TOPICS = ["cancer tumor biopsy", "heart cardiac artery", "river water flood", "solar panel energy"]


def _jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _dataset(root: Path, corpus: dict[str, str], queries: dict[str, str], qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    _jsonl(root / "corpus.jsonl", [{"_id": i, "title": "", "text": t} for i, t in corpus.items()])
    _jsonl(root / "queries.jsonl", [{"_id": i, "text": t} for i, t in queries.items()])
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels, encoding="utf-8")
    return root


def absent_documents(root: Path) -> Path:
    """q1 is judged on d1 and on an absent document; q3 only on an absent one."""
    corpus = {f"d{i}": f"{topic} study {i}" for i, topic in enumerate(TOPICS, start=1)}
    corpus |= {f"x{i}": f"unrelated filler text number {i}" for i in range(6)}
    queries = {f"q{i}": topic for i, topic in enumerate(TOPICS[:3], start=1)}
    return _dataset(root, corpus, queries, "q1\td1\t1\nq1\tmissing1\t1\nq2\td2\t1\nq3\tgone\t1\n")


def queries_are_documents(root: Path, grades: tuple[int, ...] = (1, 1, 1, 1)) -> Path:
    """Each query q_i is also document q_i (same text); its relevant document is d_i."""
    queries = {f"q{i}": topic for i, topic in enumerate(TOPICS, start=1)}
    corpus = dict(queries) | {f"d{i}": f"{topic} report" for i, topic in enumerate(TOPICS, start=1)}
    corpus |= {f"x{i}": f"unrelated filler text number {i}" for i in range(6)}
    qrels = "".join(f"q{i}\td{i}\t{g}\n" for i, g in enumerate(grades, start=1))
    return _dataset(root, corpus, queries, qrels)


def _evaluate(out: Path, *args: str) -> tuple[str, dict]:
    """The command's output (its lines joined, as the terminal wraps them) and its results.json."""
    result = runner.invoke(app, ["evaluate", *args, "--out", str(out), "--set", "permutations=50"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split()), json.loads((out / "results.json").read_text())


def _pytrec(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], measure: str) -> float:
    """pytrec_eval's mean over every judged query (a judged query missing from the run scores 0)."""
    import pytrec_eval

    asked, name = TREC[measure]
    values = pytrec_eval.RelevanceEvaluator(qrels, {asked}).evaluate(run)
    return sum(values.get(q, {}).get(name, 0.0) for q in qrels) / len(qrels)


def _written_run(out: Path) -> dict[str, dict[str, float]]:
    (path,) = out.glob("runs/*/*/run.trec")
    return read_run(path)


def _single(results: dict, measure: str) -> float:
    ((label, by_dataset),) = results["results"].items()
    return by_dataset["mean"][measure]


# --- judgments to absent documents -----------------------------------------------------------------


def test_a_query_judged_only_on_absent_documents_stays_in_the_average(tmp_path: Path) -> None:
    data = absent_documents(tmp_path / "absent")
    measures = ["--measure", "nDCG@10", "--measure", "R@10", "--measure", "AP"]
    output, results = _evaluate(tmp_path / "out", "--dataset", str(data), "--model", "bm25s", *measures)
    qrels = read_qrels(data / "qrels" / "test.tsv")  # the full file, as trec_eval reads it
    run = _written_run(tmp_path / "out")
    assert set(run) == {"q1", "q2", "q3"}  # q3 was retrieved for, though none of its documents exists
    for measure in ("nDCG@10", "R@10", "AP"):
        assert _single(results, measure) == pytest.approx(_pytrec(qrels, run, measure), abs=1e-9)
    # q1 finds d1 but not the absent document: recall 1/2; q3 scores 0; q2 finds d2.
    assert _single(results, "R@10") == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert results["datasets"]["absent"]["queries"] == 3
    assert "2 judgments to documents absent from the corpus (ids such as 'missing1', 'gone')" in output
    assert "1 query judged only on such documents (scoring 0)" in output
    assert "absent (test): 10 documents, 3 queries, 4 judgments" in output


def test_by_name_the_absent_documents_count_too(tmp_path: Path) -> None:
    absent_documents(tmp_path / "data" / "nfcorpus")
    args = ["--beir", "nfcorpus", "--data-dir", str(tmp_path / "data"), "--model", "bm25s", "--measure", "R@10"]
    _, results = _evaluate(tmp_path / "out", *args)
    assert _single(results, "R@10") == pytest.approx((1 / 2 + 1 + 0) / 3)


# --- the identical-id rule -------------------------------------------------------------------------


def test_by_name_the_registered_rule_drops_self_hits(tmp_path: Path) -> None:
    queries_are_documents(tmp_path / "data" / "arguana")
    args = ["--beir", "arguana", "--data-dir", str(tmp_path / "data"), "--model", "bm25s", "--measure", "nDCG@10"]
    output, results = _evaluate(tmp_path / "out", *args)
    run = _written_run(tmp_path / "out")
    assert not any(qid in docs for qid, docs in run.items())
    qrels = read_qrels(tmp_path / "data" / "arguana" / "qrels" / "test.tsv")
    assert _single(results, "nDCG@10") == pytest.approx(_pytrec(qrels, run, "nDCG@10"), abs=1e-9)
    assert _single(results, "nDCG@10") == pytest.approx(1.0)  # d_i comes first once q_i is dropped
    assert "arguana: identical query/document ids dropped (arguana's rule)" in output
    assert "identical query/doc ids dropped: arguana" in results["rules"]
    assert "warning" not in output


def test_a_folder_of_self_matching_queries_warns_and_names_the_option(tmp_path: Path) -> None:
    data = queries_are_documents(tmp_path / "anything")
    base = ["--dataset", str(data), "--model", "bm25s", "--measure", "nDCG@10", "--cache-dir", str(tmp_path / "cache")]
    output, kept = _evaluate(tmp_path / "kept", *base)
    flat = output
    assert "4 of 4 judged queries (100%) have the id of a corpus document" in flat
    assert "--ignore-identical-ids" in flat
    assert "bm25s on anything: 4 of 4 queries retrieved a document with their own id at rank 1" in flat
    assert "identical query/doc ids kept: anything" in kept["rules"]
    assert len(kept["warnings"]) == 2
    qrels = read_qrels(data / "qrels" / "test.tsv")
    run = _written_run(tmp_path / "kept")
    assert all(next(iter(sorted(docs, key=docs.__getitem__, reverse=True))) == q for q, docs in run.items())
    assert _single(kept, "nDCG@10") == pytest.approx(_pytrec(qrels, run, "nDCG@10"), abs=1e-9)
    assert _single(kept, "nDCG@10") < 0.7  # every relevant document is pushed to rank 2

    # The option applies the rule, from the same cached run: nothing is retrieved again.
    output, dropped = _evaluate(tmp_path / "dropped", *base, "--ignore-identical-ids")
    assert "1 cached, 0 computed" in output and "warning" not in output
    assert _single(dropped, "nDCG@10") == pytest.approx(1.0)
    assert "identical query/document ids dropped (given)" in output
    output, _ = _evaluate(tmp_path / "quiet", *base, "--keep-identical-ids")
    assert "warning" not in output


def test_a_registered_dataset_given_as_a_folder_is_recognised_by_its_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrodistill.artifacts import sha256_file
    from retrodistill.data import registry

    data = queries_are_documents(tmp_path / "my-copy")
    monkeypatch.setitem(registry.KNOWN_CORPORA, sha256_file(data / "corpus.jsonl"), "arguana")
    output, results = _evaluate(tmp_path / "out", "--dataset", str(data), "--model", "bm25s", "--measure", "nDCG@10")
    assert "recognised as the registered dataset 'arguana' by its corpus fingerprint" in output
    assert "identical query/doc ids dropped: my-copy" in results["rules"]
    assert _single(results, "nDCG@10") == pytest.approx(1.0)


def test_k_below_the_cached_depth_reads_the_cached_run(tmp_path: Path) -> None:
    data = absent_documents(tmp_path / "absent")
    base = ["--dataset", str(data), "--model", "bm25s", "--measure", "R@10", "--cache-dir", str(tmp_path / "cache")]
    output, _ = _evaluate(tmp_path / "a", *base, "--k", "8")
    assert "0 cached, 1 computed" in output
    output, _ = _evaluate(tmp_path / "b", *base, "--k", "3", "--rel-threshold", "1")
    assert "1 cached, 0 computed" in output
    deep, cut = _written_run(tmp_path / "a"), _written_run(tmp_path / "b")
    assert all(list(cut[q]) == list(deep[q])[: len(cut[q])] and len(cut[q]) <= 3 for q in deep)
    output, _ = _evaluate(tmp_path / "c", *base, "--k", "20")  # deeper than cached: computed again
    assert "0 cached, 1 computed" in output


# --- graded qrels ----------------------------------------------------------------------------------


def test_graded_folder_warns_unless_the_threshold_is_given(tmp_path: Path) -> None:
    data = queries_are_documents(tmp_path / "graded", grades=(2, 1, 2, 1))
    base = ["--dataset", str(data), "--model", "bm25s", "--measure", "R@10", "--ignore-identical-ids"]
    output, results = _evaluate(tmp_path / "a", *base)
    flat = output
    assert "graded qrels (grades up to 2), but binary measures (R, RR, P, AP) count every grade ≥ 1" in flat
    assert "--rel-threshold 2" in flat
    assert "relevance ≥ 1 for binary measures (default)" in flat
    assert _single(results, "R@10") == pytest.approx(1.0)

    output, results = _evaluate(tmp_path / "b", *base, "--rel-threshold", "2")
    assert "warning" not in output
    assert "relevance ≥ 2 for binary measures (given)" in output
    assert "grades ≥ 2: graded" in results["rules"]
    # q2 and q4 have no grade-2 document: they count, scoring 0 (trec_eval -c, BEIR).
    assert _single(results, "R@10") == pytest.approx((1 + 0 + 1 + 0) / 4)
