"""mine-negatives' sources (dense, run files, merged) and its false-negative rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrodistill.config import DataConfig, MineConfig
from retrodistill.data.collections import DataFormatError, load_beir
from retrodistill.mining import filters
from retrodistill.stages import mine_negatives


def _config(toy_dir: Path, out: Path, **kw: object) -> MineConfig:
    return MineConfig(data=DataConfig(dataset=str(toy_dir), split="train"), out=str(out), k=kw.pop("k", 8), **kw)


def _rows(result) -> list[dict]:  # type: ignore[no-untyped-def]
    return result.table.to_pylist()


def _write_run(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    lines = [f"{q} Q0 {d} {i + 1} {s} run" for i, (q, d, s) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dense_source_ranks_by_the_models_inner_product(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    cfg = _config(toy_dir, tmp_path / "dense", retrievers=[str(tiny_st_dir)], embeddings=str(tmp_path / "emb"), k=5)
    result = mine_negatives.run(cfg, show_progress=False)
    collection = load_beir(toy_dir, "train")
    model = SentenceTransformer(str(tiny_st_dir), device="cpu")
    doc_ids = list(collection.corpus)
    docs = model.encode_document([collection.doc_text(d) for d in doc_ids])
    for qid, rows in result.by_query().items():
        query = model.encode_query([collection.queries[qid]])[0]
        expected = [doc_ids[i] for i in np.argsort(-(docs @ query), kind="stable")[:5]]
        ranked = sorted((c for c in rows if c.rank > 0), key=lambda c: c.rank)
        assert [c.doc_id for c in ranked] == expected
        assert ranked[0].retrieval_score == pytest.approx(float(np.max(docs @ query)), rel=1e-4)
    assert {r["source"] for r in _rows(result)} <= {str(tiny_st_dir), "qrels"}
    assert any((tmp_path / "emb").rglob("*.npy")), "the corpus vectors went to the embedding cache"
    assert result.manifest["retrievers"][0]["name"] == str(tiny_st_dir)


def test_run_file_source_and_merge_record_the_sources(toy_dir: Path, tmp_path: Path) -> None:
    bm25 = mine_negatives.run(_config(toy_dir, tmp_path / "bm25"), show_progress=False)
    collection = load_beir(toy_dir, "train")
    # A run that ranks the corpus backwards for q1 only (d30 first).
    run = _write_run(tmp_path / "r.trec", [("q1", f"d{i}", float(i)) for i in range(1, 31)])
    spec = f"run:{run}"
    only_run = mine_negatives.run(_config(toy_dir, tmp_path / "run", retrievers=[spec], k=4), show_progress=False)
    ranked = [c for c in only_run.by_query()["q1"] if c.rank > 0]
    assert [c.doc_id for c in ranked] == ["d30", "d29", "d28", "d27"] and [c.rank for c in ranked] == [1, 2, 3, 4]
    # Queries the run does not answer get their judged documents only.
    assert all(c.rank == 0 for qid, rows in only_run.by_query().items() if qid != "q1" for c in rows)

    merged = mine_negatives.run(
        _config(toy_dir, tmp_path / "both", retrievers=["bm25s", spec], k=8), show_progress=False
    )
    by_pair = {(r["query_id"], r["doc_id"]): r for r in _rows(merged)}
    bm25_pairs = {(r["query_id"], r["doc_id"]) for r in _rows(bm25) if r["rank"] > 0}
    run_pairs = {("q1", f"d{i}") for i in range(23, 31)}
    assert {p for p, r in by_pair.items() if r["rank"] > 0} == bm25_pairs | run_pairs
    for pair, row in by_pair.items():
        if row["rank"] == 0:
            assert row["source"] == "qrels" and pair[1] in collection.qrels[pair[0]]
            continue
        expected = "+".join(name for name, pairs in (("bm25s", bm25_pairs), (spec, run_pairs)) if pair in pairs)
        assert row["source"] == expected, pair
    assert [r["name"] for r in merged.manifest["retrievers"]] == ["bm25s", spec]
    assert "retriever" not in merged.manifest  # the single-bm25s field of earlier versions


def test_run_file_with_an_unknown_document_is_refused_by_line(toy_dir: Path, tmp_path: Path) -> None:
    run = _write_run(tmp_path / "r.trec", [("q1", "d1", 3.0), ("q1", "nope", 2.0)])
    out = tmp_path / "cand"
    with pytest.raises(DataFormatError, match=r"r\.trec:2.*'nope' is not in the corpus"):
        mine_negatives.run(_config(toy_dir, out, retrievers=[f"run:{run}"]), show_progress=False)
    assert not out.exists()
    foreign = _write_run(tmp_path / "f.trec", [("zz", "d1", 3.0)])
    with pytest.raises(DataFormatError, match="none of its query ids"):
        mine_negatives.run(_config(toy_dir, out, retrievers=[f"run:{foreign}"]), show_progress=False)
    with pytest.raises(FileNotFoundError, match="no such run file"):
        mine_negatives.run(_config(toy_dir, out, retrievers=["run:missing.trec"]), show_progress=False)
    with pytest.raises(ValueError, match="given twice"):
        mine_negatives.run(_config(toy_dir, out, retrievers=["bm25s", "bm25s"]), show_progress=False)
    for name, text in (("empty.trec", ""), ("blank.trec", "\n\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataFormatError, match=rf"{name}: empty run file"):
            mine_negatives.run(_config(toy_dir, out, retrievers=[f"run:{tmp_path / name}"]), show_progress=False)
    assert not out.exists()


def test_rank_range_and_margins_drop_exactly_the_negatives_they_name(toy_dir: Path, tmp_path: Path) -> None:
    plain = _rows(mine_negatives.run(_config(toy_dir, tmp_path / "plain"), show_progress=False))
    collection = load_beir(toy_dir, "train")
    cfg = _config(toy_dir, tmp_path / "ruled", rank_min=2, rank_max=7, relative_margin=0.2)
    ruled = mine_negatives.run(cfg, show_progress=False)
    # P: each query's lowest bm25 score among its positives (bm25s scores the unretrieved ones itself).
    from retrodistill.teachers.bm25 import BM25Teacher

    teacher = BM25Teacher(str(toy_dir))
    lowest = {}
    for qid, judged in collection.qrels.items():
        positives = [d for d, g in judged.items() if g > 0]
        if positives:
            scores = teacher.score(
                [collection.queries[qid]] * len(positives), [collection.doc_text(d) for d in positives]
            )
            lowest[qid] = float(np.min(scores))

    def dropped_by_margin(row: dict) -> bool:
        p = lowest.get(row["query_id"])
        return p is not None and row["retrieval_score"] > p - 0.2 * abs(p)

    negatives = [r for r in plain if r["doc_id"] not in collection.qrels.get(r["query_id"], {})]
    outside = [r for r in negatives if not 2 <= r["rank"] <= 7]
    by_margin = [r for r in negatives if 2 <= r["rank"] <= 7 and dropped_by_margin(r)]
    expected = {(r["query_id"], r["doc_id"]) for r in plain} - {
        (r["query_id"], r["doc_id"]) for r in outside + by_margin
    }
    assert {(r["query_id"], r["doc_id"]) for r in _rows(ruled)} == expected
    control = ruled.manifest["false_negative_control"]
    assert control["rules"] == {"rank_min": 2, "rank_max": 7, "relative_margin": 0.2}
    assert control["removed"] == {"rank_range": len(outside), "relative_margin": len(by_margin)}
    assert len(by_margin) > 0  # the rule did something on this data
    positives = [r for r in _rows(ruled) if r["label"] > 0]
    assert len(positives) == sum(1 for r in plain if r["label"] > 0)  # judged documents are never dropped


def test_rules_unit_absolute_and_relative_margins() -> None:
    query = np.array([0, 0, 0, 1, 1])
    score = np.array([10.0, 9.6, 9.0, 5.0, 4.0], dtype=np.float32)
    negative = np.array([False, True, True, True, True])
    p = np.array([10.0, np.nan])  # query 1 has no positive score: kept
    keep, report = filters.apply(
        filters.Rules(relative_margin=0.05),
        query=query,
        rank=np.arange(1, 6),
        score=score,
        negative=negative,
        positive_score=p,
    )
    assert keep.tolist() == [True, False, True, True, True]  # 9.6 > 10 - 0.5
    assert report["removed"] == {"relative_margin": 1} and report["queries_without_positive_score"] == 1
    keep, _ = filters.apply(
        filters.Rules(absolute_margin=1.5),
        query=query,
        rank=np.arange(1, 6),
        score=score,
        negative=negative,
        positive_score=p,
    )
    assert keep.tolist() == [True, False, False, True, True]
    for bad in ({"rank_min": 0}, {"rank_min": 5, "rank_max": 2}, {"relative_margin": 1.0}, {"absolute_margin": -1}):
        with pytest.raises(ValueError):
            filters.Rules(**bad)


@pytest.fixture(scope="module")
def scored(toy_dir: Path, tiny_st_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """BM25 candidates of the toy train split and the tiny bi-encoder's scores of them."""
    from retrodistill.config import ScoreTeacherConfig, TeacherConfig
    from retrodistill.stages.score_teacher import run as score
    from retrodistill.teachers.bi_encoder import BiEncoderTeacher

    tmp = tmp_path_factory.mktemp("scored")
    parent = mine_negatives.run(_config(toy_dir, tmp / "cand"), show_progress=False)
    params = {"model": str(tiny_st_dir), "similarity": "dot", "device": "cpu", "linear_backend": "torch"}
    store = score(
        ScoreTeacherConfig(
            data=DataConfig(dataset=str(toy_dir), split="train"),
            candidates=str(parent.path),
            teacher=TeacherConfig("bi-encoder", params),
            out=str(tmp / "scores"),
        ),
        show_progress=False,
        teacher=BiEncoderTeacher(**params),
    )
    return parent, store


def test_teacher_denoising_filters_scored_candidates_and_trains_with_the_parent_store(
    toy_dir: Path, tiny_st_dir: Path, tmp_path: Path, scored
) -> None:
    parent, store = scored
    teacher = store.scores_for(parent)
    rows = _rows(parent)
    threshold = float(np.median(teacher))
    cfg = _config(
        toy_dir,
        tmp_path / "denoised",
        from_candidates=str(parent.path),
        teacher_scores=str(store.path),
        teacher_max_score=threshold,
        teacher_margin=0.0,
    )
    denoised = mine_negatives.run(cfg, show_progress=False)
    lowest_positive = {}
    for row, t in zip(rows, teacher, strict=True):
        if row["label"] > 0:
            lowest_positive[row["query_id"]] = min(lowest_positive.get(row["query_id"], np.inf), float(t))
    kept = {(r["query_id"], r["doc_id"]) for r in _rows(denoised)}
    for row, t in zip(rows, teacher, strict=True):
        pair = (row["query_id"], row["doc_id"])
        suspect = t > threshold or t > lowest_positive.get(row["query_id"], np.inf)
        assert (pair in kept) == (row["label"] > 0 or not suspect), pair
    removed = denoised.manifest["false_negative_control"]["removed"]
    assert sum(removed.values()) == len(rows) - len(kept) > 0
    assert denoised.manifest["derived_from"] == [parent.fingerprint]

    # train-student accepts the filtered candidates with the parent's store.
    from retrodistill.config import StudentConfig, TrainConfig
    from retrodistill.train.training_data import query_data

    train = TrainConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        store=str(store.path),
        candidates=str(denoised.path),
        student=StudentConfig(model=str(tiny_st_dir)),
        negatives=1,
        negative_pool=100,
    )
    data = query_data(train, load_beir(toy_dir, "train"), "margin-mse", frozenset({"teacher_scores"}), False)
    assert len(data.examples) > 0
    used = {d for docs in data.examples.example_doc_ids() for d in docs}
    assert used <= {d for _, d in kept}

    # A store scored from other candidates is refused, nothing written.
    other = mine_negatives.run(_config(toy_dir, tmp_path / "other", k=3), show_progress=False)
    bad = _config(
        toy_dir,
        tmp_path / "bad",
        from_candidates=str(other.path),
        teacher_scores=str(store.path),
        teacher_max_score=0.0,
    )
    with pytest.raises(ValueError, match="was not scored from candidates"):
        mine_negatives.run(bad, show_progress=False)
    assert not (tmp_path / "bad").exists()


def test_cli_mines_with_rules_and_refuses_bad_ones(toy_dir: Path, tmp_path: Path) -> None:
    from retrodistill.cli.app import app

    runner = CliRunner()
    out = tmp_path / "cand"
    args = ["mine-negatives", "--dataset", str(toy_dir), "--out", str(out), "--k", "6", "--rank-min", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "rank_range" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["rank_min"] == 2 and manifest["false_negative_control"]["removed"]["rank_range"] > 0
    bad = runner.invoke(app, [*args[:3], "--out", str(tmp_path / "x"), "--rank-min", "3", "--rank-max", "2"])
    assert bad.exit_code == 2 and "rank_max (2) is below rank_min (3)" in bad.output
    assert not (tmp_path / "x").exists()


def test_inspect_teacher_counts_what_each_teacher_rule_removes(toy_dir: Path, tmp_path: Path, scored) -> None:
    from retrodistill.cli.app import app

    parent, store = scored
    threshold = float(np.median(store.scores_for(parent)))
    cfg = _config(
        toy_dir,
        tmp_path / "denoised",
        from_candidates=str(parent.path),
        teacher_scores=str(store.path),
        teacher_max_score=threshold,
        teacher_margin=0.0,
    )
    removed = mine_negatives.run(cfg, show_progress=False).manifest["false_negative_control"]["removed"]
    result = CliRunner().invoke(
        app,
        [
            "inspect-teacher",
            str(store.path),
            "--teacher-max-score",
            str(threshold),
            "--teacher-margin",
            "0",
            "--out",
            str(tmp_path / "inspect"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "inspect" / "inspect.json").read_text())["false_negative_control"]
    assert report["removed"] == removed and report["candidates"] == str(parent.path)
    assert report["positives_above_max_score"] is not None
    for name, count in removed.items():
        assert name in result.output and f"{count:,}" in result.output


def test_dense_mining_reuses_a_saved_index_without_encoding_the_corpus(
    toy_dir: Path, tiny_st_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrodistill.config import IndexConfig
    from retrodistill.evaluate import retrieval

    def config(out: str) -> MineConfig:
        return _config(
            toy_dir,
            tmp_path / out,
            retrievers=[str(tiny_st_dir)],
            index=IndexConfig("faiss-factory", {"factory": "Flat", "use_gpu": False}),
            index_dir=str(tmp_path / "index"),
            embeddings=str(tmp_path / "emb"),
        )

    first = mine_negatives.run(config("a"), show_progress=False)
    assert (tmp_path / "index" / "manifest.json").is_file()

    def no_corpus_pass(*args: object, **kwargs: object) -> None:
        raise AssertionError("the corpus was encoded again")

    monkeypatch.setattr(retrieval, "iter_corpus_embeddings", no_corpus_pass)
    second = mine_negatives.run(config("b"), show_progress=False)
    assert second.fingerprint == first.fingerprint
    assert second.manifest["retrievers"][0]["index"]["dir"] == str(tmp_path / "index")


@pytest.mark.skipif(
    not all(__import__("importlib.util").util.find_spec(m) for m in ("pyserini", "jnius")),
    reason="pyserini is not installed (the pyserini extra)",
)
def test_lucene_source_gives_pyserinis_ranking(toy_dir: Path, tmp_path: Path) -> None:
    from retrodistill.index.pyserini_bm25 import PyseriniBM25

    result = mine_negatives.run(
        _config(toy_dir, tmp_path / "lucene", retrievers=["pyserini-bm25"], k=5), show_progress=False
    )
    collection = load_beir(toy_dir, "train")
    retriever = PyseriniBM25()
    doc_ids = list(collection.corpus)
    retriever.index(doc_ids, [collection.doc_text(d) for d in doc_ids])
    query_ids = list(collection.queries)
    expected = retriever.search([collection.queries[q] for q in query_ids], 5)
    by_query = result.by_query()
    for qid, ranked in zip(query_ids, expected, strict=True):
        got = sorted((c for c in by_query[qid] if c.rank > 0), key=lambda c: c.rank)
        assert [c.doc_id for c in got] == [d for d, _ in ranked]
        assert [c.retrieval_score for c in got] == pytest.approx([s for _, s in ranked], rel=1e-6)
    assert result.manifest["retrievers"][0]["name"] == "pyserini-bm25"
