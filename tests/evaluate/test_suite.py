"""The evaluation suite: models × datasets, the run cache, reranking, groups and significance."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from retrodistill.data.collections import Collection, load_beir
from retrodistill.data.registry import SuiteEntry
from retrodistill.evaluate.suite import ModelSpec, evaluate_suite, lexical_run, rerank_run, slug

MEASURES = ("nDCG@10", "R@5")


def _entry(collection: Collection, name: str | None = None, **kwargs: object) -> SuiteEntry:
    return SuiteEntry(
        name=name or collection.name,
        collections=[collection],
        ignore_identical_ids=bool(kwargs.get("ignore_identical_ids", False)),
        rel_threshold=int(kwargs.get("rel_threshold", 1)),  # type: ignore[call-overload]
        split=collection.split,
    )


@pytest.fixture()
def toy(toy_dir: Path) -> Collection:
    return load_beir(toy_dir, "test")


def test_two_models_one_table_with_significance(tmp_path: Path, toy: Collection, tiny_st_dir: Path) -> None:
    dense = str(tiny_st_dir)
    result = evaluate_suite(
        [dense, "bm25s"],
        [_entry(toy)],
        MEASURES,
        tmp_path / "out",
        k=10,
        baseline="bm25s",
        cache_dir=tmp_path / "cache",
        permutations=200,
        show_progress=False,
    )
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["results"] == json.loads(json.dumps(result.results))
    assert list(data["models"]) == [dense, "bm25s"]
    assert data["baseline"] == "bm25s"
    for label in (dense, "bm25s"):
        per_query = json.loads((tmp_path / "out" / data["per_query"][label]["toy"]).read_text())["per_query"]
        assert set(per_query) == set(toy.qrels)
        mean = sum(v["nDCG@10"] for v in per_query.values()) / len(per_query)
        assert data["results"][label]["toy"]["nDCG@10"] == pytest.approx(mean)
        assert data["results"][label]["mean"] == data["results"][label]["toy"]  # one dataset
    (comparison,) = [c for c in data["significance"] if c["measure"] == "nDCG@10"]
    assert comparison["model"] == dense and comparison["dataset"] == "toy"
    assert 0.0 < comparison["p_ttest"] <= 1.0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "results.csv").read_text())))
    assert len(rows) == 2 * 2 * len(MEASURES)  # models × (toy, mean) × measures
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "### nDCG@10" in markdown and "| mean |" in markdown
    latex = (tmp_path / "out" / "results.tex").read_text()
    bm25_ndcg = f"{data['results']['bm25s']['toy']['nDCG@10']:.4f}"
    assert latex.count(r"\toprule") == len(MEASURES) and bm25_ndcg in latex
    run = (tmp_path / "out" / "runs" / slug(dense) / slug("toy") / "run.trec").read_text().splitlines()
    assert all(len(line.split()) == 6 for line in run)


def test_a_rerun_reads_every_run_from_the_cache(
    tmp_path: Path, toy: Collection, tiny_st_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = {"k": 10, "cache_dir": tmp_path / "cache", "show_progress": False}
    first = evaluate_suite([str(tiny_st_dir), "bm25s"], [_entry(toy)], MEASURES, tmp_path / "a", **kwargs)
    assert (first.cache_hits, first.cache_misses) == (0, 2)

    from retrodistill.evaluate import runs

    def no_retrieval(*args: object, **kw: object) -> None:
        raise AssertionError("a cached run was recomputed")

    monkeypatch.setattr(runs.Retrievers, "first_stage", no_retrieval)
    second = evaluate_suite([str(tiny_st_dir), "bm25s"], [_entry(toy)], (*MEASURES, "RR@10"), tmp_path / "b", **kwargs)
    assert (second.cache_hits, second.cache_misses) == (2, 0)
    for label in first.results:
        for measure in MEASURES:
            assert second.results[label]["toy"][measure] == pytest.approx(first.results[label]["toy"][measure])
    assert "RR@10" in second.results["bm25s"]["toy"]  # new measures come from the cached runs


def test_a_changed_corpus_misses_the_cache(tmp_path: Path, toy_dir: Path) -> None:
    edited = tmp_path / "toy"
    shutil.copytree(toy_dir, edited)
    with open(edited / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": "extra", "title": "", "text": "an extra document about cancer"}) + "\n")
    kwargs = {"k": 10, "cache_dir": tmp_path / "cache", "show_progress": False}
    evaluate_suite(["bm25s"], [_entry(load_beir(toy_dir, "test"))], MEASURES, tmp_path / "a", **kwargs)
    again = evaluate_suite(["bm25s"], [_entry(load_beir(edited, "test"))], MEASURES, tmp_path / "b", **kwargs)
    assert again.cache_misses == 1 and again.cache_hits == 0


def test_a_group_row_is_the_mean_of_its_members(tmp_path: Path, toy_dir: Path) -> None:
    a = load_beir(toy_dir, "test", name="grp/a")
    b = load_beir(toy_dir, "train", name="grp/b")
    entry = SuiteEntry("grp", [a, b], False, 1, "test")
    result = evaluate_suite(["bm25s"], [entry], MEASURES, tmp_path / "out", k=10, use_cache=False, show_progress=False)
    members = [
        json.loads((tmp_path / "out" / "runs" / slug("bm25s") / slug(c.name) / "metrics.json").read_text())["aggregate"]
        for c in (a, b)
    ]
    for measure in MEASURES:
        expected = (members[0][measure] + members[1][measure]) / 2
        assert result.results["bm25s"]["grp"][measure] == pytest.approx(expected)
    pooled = result.per_query["bm25s"]["grp"]
    assert set(pooled) == {f"a/{q}" for q in a.qrels} | {f"b/{q}" for q in b.qrels}


def test_lexical_run_drops_identical_ids(toy: Collection) -> None:
    class Fixed:
        def index(self, doc_ids: list[str], texts: list[str], show_progress: bool = False) -> None:
            self.doc_ids = doc_ids

        def search(self, queries: list[str], k: int, show_progress: bool = False) -> list[list[tuple[str, float]]]:
            assert k == 3  # one more than asked, for the dropped document
            return [[(qid, 3.0), ("x", 2.0), ("y", 1.0)] for qid in toy.queries]

    run = lexical_run(Fixed(), toy, 2, ignore_identical_ids=True)
    assert all(list(docs) == ["x", "y"] for docs in run.values())


def test_rerank_orders_the_top_and_keeps_the_tail_below(toy: Collection) -> None:
    qid = next(iter(toy.queries))
    docs = list(toy.corpus)[:5]
    run = {qid: {d: 10.0 - i for i, d in enumerate(docs)}}  # first stage: docs[0] best

    def score(queries: list[str], texts: list[str]) -> list[float]:
        return [float(i) for i in range(len(texts))]  # reverses the top 3

    new = rerank_run(run, toy, score, depth=3)
    order = sorted(new[qid], key=new[qid].get, reverse=True)
    assert order == [docs[2], docs[1], docs[0], docs[3], docs[4]]
    with pytest.raises(ValueError, match="depth"):
        rerank_run(run, toy, score, depth=0)


def test_rerank_adds_a_column_per_model(tmp_path: Path, toy: Collection, tiny_cross_encoder_dir: Path) -> None:
    result = evaluate_suite(
        ["bm25s"],
        [_entry(toy)],
        MEASURES,
        tmp_path / "out",
        k=10,
        rerank=str(tiny_cross_encoder_dir),
        rerank_depth=5,
        use_cache=False,
        show_progress=False,
    )
    label = ModelSpec("bm25s", str(tiny_cross_encoder_dir), 5).label
    assert list(result.models) == ["bm25s", label]
    assert result.models[label]["rerank"] == {"model": str(tiny_cross_encoder_dir), "depth": 5}
    # Reranking the top 5 reorders them but keeps the same five documents: R@5 cannot change.
    assert result.results[label]["toy"]["R@5"] == pytest.approx(result.results["bm25s"]["toy"]["R@5"])
    run = (tmp_path / "out" / "runs" / slug(label) / slug("toy") / "run.trec").read_text().splitlines()
    assert run and all(line.split()[5] == "bm25s" for line in run)


def test_bad_arguments_are_refused_before_any_work(tmp_path: Path, toy: Collection) -> None:
    with pytest.raises(ValueError, match="baseline"):
        evaluate_suite(["bm25s"], [_entry(toy)], MEASURES, tmp_path, baseline="nope", use_cache=False)
    with pytest.raises(ValueError, match="repeated: bm25s"):
        evaluate_suite(["bm25s", "bm25s"], [_entry(toy)], MEASURES, tmp_path, use_cache=False)
    with pytest.raises(ValueError, match="no datasets"):
        evaluate_suite(["bm25s"], [], MEASURES, tmp_path, use_cache=False)
    assert not (tmp_path / "results.json").exists()


def test_the_legend_states_the_alpha_used(tmp_path: Path, toy: Collection, tiny_st_dir: Path) -> None:
    result = evaluate_suite(
        [str(tiny_st_dir), "bm25s"],
        [_entry(toy)],
        MEASURES,
        tmp_path / "out",
        k=10,
        baseline="bm25s",
        alpha=0.01,
        permutations=100,
        use_cache=False,
        show_progress=False,
    )
    assert all(c.alpha == 0.01 for c in result.significance)
    assert "α = 0.01 " in (tmp_path / "out" / "results.md").read_text()


def test_another_k_or_split_of_the_same_corpus_encodes_no_document(
    tmp_path: Path, toy_dir: Path, tiny_st_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = {"cache_dir": tmp_path / "runs", "embedding_cache_dir": tmp_path / "emb", "show_progress": False}
    dense = str(tiny_st_dir)
    first = evaluate_suite([dense], [_entry(load_beir(toy_dir, "test"))], MEASURES, tmp_path / "a", k=10, **kwargs)
    assert first.embedding_shards == {"read": 0, "encoded": 1}

    from sentence_transformers import SentenceTransformer

    def no_documents(*args: object, **kw: object) -> None:
        raise AssertionError("a cached corpus was encoded again")

    monkeypatch.setattr(SentenceTransformer, "encode_document", no_documents)
    other_k = evaluate_suite([dense], [_entry(load_beir(toy_dir, "test"))], MEASURES, tmp_path / "b", k=5, **kwargs)
    other_split = evaluate_suite(
        [dense], [_entry(load_beir(toy_dir, "train"))], MEASURES, tmp_path / "c", k=10, **kwargs
    )
    # A smaller k is cut from the cached run (cached at depth k + 1 = 11): no new run at all.
    assert (other_k.cache_hits, other_k.cache_misses) == (1, 0)
    assert other_k.embedding_shards == {"read": 0, "encoded": 0}
    assert (other_split.cache_hits, other_split.cache_misses) == (0, 1)  # a new run ...
    assert other_split.embedding_shards == {"read": 1, "encoded": 0}  # ... from the stored corpus embeddings
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["cache"]["embeddings"]["shards"] == {"read": 1, "encoded": 0}
    assert other_k.results[dense]["toy"]["nDCG@10"] != 0.0


def test_no_cache_keeps_no_embeddings(tmp_path: Path, toy: Collection, tiny_st_dir: Path) -> None:
    evaluate_suite(
        [str(tiny_st_dir)],
        [_entry(toy)],
        MEASURES,
        tmp_path / "out",
        k=10,
        use_cache=False,
        embedding_cache_dir=tmp_path / "emb",
        show_progress=False,
    )
    assert not (tmp_path / "emb").exists()
