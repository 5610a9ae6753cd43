"""Import adapters: a tiny file in each format → the exact store rows, candidates and manifests."""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrodistill.artifacts import check_inputs, sha256_file
from retrodistill.data.collections import Collection, DataFormatError, Document, load_beir
from retrodistill.data.part_store import rows_fingerprint
from retrodistill.data.store import TeacherStore
from retrodistill.stages.import_scores import IMPORT_FORMATS, ImportResult, import_scores

Row = tuple[str, str, float]


@pytest.fixture(scope="module")
def toy(toy_dir: Path) -> Collection:
    """Train split: queries q1 q3 q5 q7 q9 q11, two judged documents each; corpus d1 … d30."""
    return load_beir(toy_dir, "train")


def run_import(tmp_path: Path, collection: Collection, text: str | bytes, fmt: str, **kwargs: Any) -> ImportResult:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / kwargs.pop("name", "scores.txt")
    if isinstance(text, bytes):
        source.write_bytes(text)
    else:
        source.write_text(text, encoding="utf-8")
    return import_scores(
        source, fmt, collection=collection, out=tmp_path / "store", candidates_out=tmp_path / "cands", **kwargs
    )


def store_rows(result: ImportResult) -> list[Row]:
    table = result.store.table()
    return list(
        zip(
            table.column("query_id").to_pylist(),
            table.column("doc_id").to_pylist(),
            table.column("score").to_pylist(),
            strict=True,
        )
    )


def labels(result: ImportResult) -> dict[tuple[str, str], tuple[int, int]]:
    """(query, doc) → (label, rank) of the candidates."""
    return {(c.query_id, c.doc_id): (c.label, c.rank) for c in result.candidates.rows}


HOFSTAETTER = "9.5\t1.25\tq1\td3\td7\n9.5\t-2.0\tq1\td3\td8\n\n8.0\t0.5\tq3\td10\td1\n"


def test_hofstaetter_tsv_rows_labels_and_manifests(tmp_path: Path, toy: Collection) -> None:
    result = run_import(tmp_path, toy, HOFSTAETTER, "hofstaetter-tsv", model="bert-ensemble", part_size=2)
    expected: list[Row] = [
        ("q1", "d3", 9.5),
        ("q1", "d7", 1.25),
        ("q1", "d8", -2.0),
        ("q3", "d1", 0.5),
        ("q3", "d10", 8.0),
    ]
    assert store_rows(result) == expected
    # q1/d3 and q3/d10 are judged (grades 1 and 2); ranks follow the order the file first lists documents.
    assert labels(result) == {
        ("q1", "d3"): (1, 1),
        ("q1", "d7"): (0, 2),
        ("q1", "d8"): (0, 3),
        ("q3", "d10"): (2, 1),
        ("q3", "d1"): (0, 2),
    }
    assert all(math.isnan(c.retrieval_score) for c in result.candidates.rows)
    manifest = result.store.manifest
    assert manifest["teacher"] == {
        "name": "imported",
        "format": "hofstaetter-tsv",
        "source": str(tmp_path / "scores.txt"),
        "source_sha256": sha256_file(tmp_path / "scores.txt"),
        "model": "bert-ensemble",
    }
    assert manifest["complete"] is True and manifest["stage"] == "import-scores"
    assert manifest["num_parts"] == 3 and manifest["counts"] == {"pairs": 5, "queries": 2, "documents": 5, "parts": 3}
    assert manifest["fingerprint"] == rows_fingerprint(*zip(*expected, strict=True))
    assert manifest["inputs"] == {
        "corpus": toy.fingerprints["corpus"],
        "queries": toy.fingerprints["queries"],
        "candidates": result.candidates.fingerprint,
    }
    report = result.report
    assert (report["records"], report["pairs"], report["duplicates"], report["conflicts"]) == (6, 5, 1, 0)
    assert result.candidates.manifest["stage"] == "import-scores"
    assert result.candidates.manifest["inputs"]["qrels/train"] == toy.fingerprints["qrels/train"]
    gzipped = run_import(tmp_path / "gz", toy, gzip.compress(HOFSTAETTER.encode()), "hofstaetter-tsv", name="s.tsv.gz")
    assert store_rows(gzipped) == expected


def test_st_mse_jsonl_and_parquet_give_the_same_store(tmp_path: Path, toy: Collection) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [
        {"query_id": "q5", "passage_id": "d12", "score": 3.5},
        {"query_id": "q5", "passage_id": "d1", "score": -0.75},
        {"query_id": "q7", "passage_id": "d2", "score": 0.0},
    ]
    jsonl = run_import(tmp_path / "a", toy, "".join(json.dumps(r) + "\n" for r in records), "st-mse", name="s.jsonl")
    (tmp_path / "b").mkdir()
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "b" / "train-00000.parquet")
    parquet = import_scores(
        tmp_path / "b" / "train-00000.parquet",
        "st-mse",
        collection=toy,
        out=tmp_path / "b" / "store",
    )
    expected: list[Row] = [("q5", "d1", -0.75), ("q5", "d12", 3.5), ("q7", "d2", 0.0)]
    assert store_rows(jsonl) == store_rows(parquet) == expected
    assert parquet.candidates.path == tmp_path / "b" / "store-candidates"
    # No positives in this format: labels come from the qrels only, and q7's judged documents are absent.
    assert labels(jsonl) == {("q5", "d12"): (2, 1), ("q5", "d1"): (0, 2), ("q7", "d2"): (0, 1)}
    assert jsonl.report["queries_without_positive"] == 1


def test_margin_files_are_refused_with_the_alternative(tmp_path: Path, toy: Collection) -> None:
    margin = json.dumps({"query_id": "q1", "positive_id": "d3", "negative_id": "d7", "score": 8.25}) + "\n"
    for fmt in ("st-margin-mse", "st-mse"):
        with pytest.raises(ValueError, match="margin file") as info:
            run_import(tmp_path, toy, margin, fmt, name="m.jsonl")
        assert "--format st-mse" in str(info.value) and "hofstaetter-tsv" in str(info.value)
    assert not (tmp_path / "store").exists() and not (tmp_path / "cands").exists()


def test_score_pickle_needs_permission_and_builds_no_objects(tmp_path: Path, toy: Collection) -> None:
    scores = {"q9": {"d22": np.float32(2.5), "d5": -1.0}, "q11": {"d30": 4}}
    with pytest.raises(ValueError, match="--allow-pickle"):
        run_import(tmp_path, toy, gzip.compress(pickle.dumps(scores)), "st-scores-pickle", name="s.pkl.gz")
    for protocol in (2, pickle.HIGHEST_PROTOCOL):  # numpy scalars are spelled differently in each
        data = gzip.compress(pickle.dumps(scores, protocol=protocol))
        result = run_import(tmp_path / str(protocol), toy, data, "st-scores-pickle", name="s.pkl.gz", allow_pickle=True)
        assert store_rows(result) == [("q11", "d30", 4.0), ("q9", "d22", 2.5), ("q9", "d5", -1.0)]
        assert labels(result)[("q9", "d22")] == (2, 1)

    marker = tmp_path / "created-by-pickle"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.mkdir, (str(marker),))

    evil = gzip.compress(pickle.dumps({"q9": {"d22": Exploit()}}))
    with pytest.raises(DataFormatError, match="refusing to load"):
        run_import(tmp_path / "evil", toy, evil, "st-scores-pickle", name="e.pkl.gz", allow_pickle=True)
    assert not marker.exists()


def test_tevatron_scores_with_qrels_overriding_the_file(tmp_path: Path, toy: Collection) -> None:
    lines = [
        {
            "query_id": "q1",
            "query": "cancer tumor biopsy?",
            "positive_passages": [{"docid": "d5", "title": "", "text": "...", "score": 7.0}],
            "negative_passages": [{"docid": "d4", "text": "...", "score": 2.0}, {"docid": "d6", "score": -1.5}],
        },
        {"query_id": "q3", "positive_passages": [{"docid": "d9", "score": 5.0}]},
    ]
    result = run_import(tmp_path, toy, "\n".join(json.dumps(x) for x in lines), "tevatron")
    assert store_rows(result) == [("q1", "d4", 2.0), ("q1", "d5", 7.0), ("q1", "d6", -1.5), ("q3", "d9", 5.0)]
    # d5 is the file's positive (unjudged: label 1); d4 is its negative but judged grade 2 by the qrels.
    assert labels(result) == {("q1", "d5"): (1, 1), ("q1", "d4"): (2, 2), ("q1", "d6"): (0, 3), ("q3", "d9"): (1, 1)}
    assert result.report["labels_changed_by_qrels"] == 1


def test_colbert_first_passage_is_the_positive(tmp_path: Path, toy: Collection) -> None:
    text = '["q7", ["d1", 12.5], ["d19", 3.0], ["d2", -0.5]]\n["q9", ["d22", 4.0], ["d23", 1.0]]\n'
    result = run_import(tmp_path, toy, text, "colbert", rank="score")
    assert store_rows(result) == [
        ("q7", "d1", 12.5),
        ("q7", "d19", 3.0),
        ("q7", "d2", -0.5),
        ("q9", "d22", 4.0),
        ("q9", "d23", 1.0),
    ]
    # d1 is named positive (label 1); d19 is judged grade 1 in the qrels although listed as a negative.
    assert labels(result) == {
        ("q7", "d1"): (1, 1),
        ("q7", "d19"): (1, 2),
        ("q7", "d2"): (0, 3),
        ("q9", "d22"): (2, 1),
        ("q9", "d23"): (0, 2),
    }


def test_flagembedding_texts_map_to_ids(tmp_path: Path, toy: Collection) -> None:
    record = {
        "query": toy.queries["q5"] + "  ",
        "pos": [toy.corpus["d12"].joined()],  # title + text
        "neg": [toy.corpus["d1"].text, toy.corpus["d2"].joined()],  # text alone matches too
        "pos_scores": [0.875],
        "neg_scores": [0.125, 0.25],
        "prompt": "Represent this sentence for searching relevant passages: ",
    }
    result = run_import(tmp_path, toy, json.dumps(record) + "\n", "flagembedding")
    assert store_rows(result) == [("q5", "d1", 0.125), ("q5", "d12", 0.875), ("q5", "d2", 0.25)]
    assert labels(result) == {("q5", "d12"): (2, 1), ("q5", "d1"): (0, 2), ("q5", "d2"): (0, 3)}

    unknown = dict(record, neg=["no document says this"], neg_scores=[0.5])
    with pytest.raises(DataFormatError, match="text 'no document says this'") as info:
        run_import(tmp_path / "u", toy, json.dumps(unknown), "flagembedding")
    assert info.value.line == 1
    skipped = run_import(tmp_path / "s", toy, json.dumps(unknown), "flagembedding", skip_unknown=True)
    assert store_rows(skipped) == [("q5", "d12", 0.875)]
    assert skipped.report["skipped_unknown"] == {"pairs": 1, "query_ids": 0, "doc_ids": 1}


def test_flagembedding_shared_text_maps_to_the_smallest_id(tmp_path: Path) -> None:
    same = Document("", "the same passage")
    collection = Collection(
        "dups",
        {"b": same, "a": same, "c": Document("t", "other")},
        {"q": "a question"},
        {"q": {"c": 1}},
        "train",
        {"corpus": "sha256:c", "queries": "sha256:q"},
    )
    record = {
        "query": "a question",
        "pos": ["t other"],
        "neg": ["the same passage"],
        "pos_scores": [1],
        "neg_scores": [0],
    }
    result = run_import(tmp_path, collection, json.dumps(record), "flagembedding")
    assert store_rows(result) == [("q", "a", 0.0), ("q", "c", 1.0)]
    assert result.report["ambiguous_texts"] == 1


def test_trec_run_ranks(tmp_path: Path, toy: Collection) -> None:
    run = "q11 Q0 d1 2 4.0 ce\nq11 Q0 d30 1 9.0 ce\nq11 Q0 d26 3 3.5 ce\n"
    by_file = run_import(tmp_path / "a", toy, run, "trec-run")
    assert store_rows(by_file) == [("q11", "d1", 4.0), ("q11", "d26", 3.5), ("q11", "d30", 9.0)]
    assert labels(by_file) == {("q11", "d30"): (2, 1), ("q11", "d1"): (0, 2), ("q11", "d26"): (2, 3)}
    unranked = run_import(tmp_path / "b", toy, run, "trec-run", rank="none")
    assert {rank for _, rank in labels(unranked).values()} == {0}
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q11\t0\td1\t3\n")
    relabelled = run_import(tmp_path / "c", toy, run, "trec-run", qrels=qrels)
    assert {k: v[0] for k, v in labels(relabelled).items()} == {("q11", "d30"): 0, ("q11", "d1"): 3, ("q11", "d26"): 0}
    assert relabelled.candidates.manifest["inputs"]["qrels_file"] == sha256_file(qrels)


@pytest.mark.parametrize(
    ("fmt", "text", "line", "problem"),
    [
        ("hofstaetter-tsv", "1.0\t0.5\tq1\td3\td7\n1.0\t0.5\tq1\td3\n", 2, "expected 5 tab-separated columns"),
        ("hofstaetter-tsv", "1.0\t0.5\tq1\td3\td7\n\nnan\t0.5\tq1\td3\td7\n", 3, "not a finite number"),
        ("hofstaetter-tsv", "high\t0.5\tq1\td3\td7\n", 1, "pos_score must be a number"),
        (
            "st-mse",
            '{"query_id": "q1", "passage_id": "d3", "score": 1}\n{"query_id": "q1", "score": 1}\n',
            2,
            "no 'passage_id'",
        ),
        (
            "tevatron",
            '{"query_id": "q1", "positive_passages": [{"docid": "d3", "score": 1}]}\n'
            '{"query_id": "q3", "positive_passages": [{"docid": "d9"}]}\n',
            2,
            "no 'score'",
        ),
        ("colbert", '["q7", ["d19", 1.0]]\n["q7", "d19", "d1"]\n', 2, "not [pid, score]"),
        ("colbert", '["q7", ["d19", 1.0]]\n["q7", ["d19", 1.0]\n', 2, "malformed JSON"),
        ("flagembedding", '{"query": "x", "pos": ["a"], "neg": [], "pos_scores": [1]}\n', 1, "no 'neg_scores'"),
        (
            "flagembedding",
            '{"query": "x", "pos": ["a", "b"], "neg": [], "pos_scores": [1], "neg_scores": []}\n',
            1,
            "same length",
        ),
        ("trec-run", "q11 Q0 d30 1 9.0 ce\nq11 Q0 d1 2 4.0\n", 2, "expected 6 columns"),
        ("trec-run", "q11 Q0 d30 first 9.0 ce\n", 1, "not a positive integer"),
    ],
)
def test_malformed_records_name_their_line(
    tmp_path: Path, toy: Collection, fmt: str, text: str, line: int, problem: str
) -> None:
    with pytest.raises(DataFormatError, match=re.escape(problem)) as info:
        run_import(tmp_path, toy, text, fmt)
    assert info.value.line == line
    assert str(info.value).startswith(f"{tmp_path / 'scores.txt'}:{line}: ")
    assert not (tmp_path / "store").exists() and not (tmp_path / "cands").exists()


def test_conflicting_scores_keep_the_first_or_fail(tmp_path: Path, toy: Collection) -> None:
    text = "9.5\t1.25\tq1\td3\td7\n9.5\t1.5\tq1\td3\td7\n9.5\t1.75\tq1\td3\td7\n"
    kept = run_import(tmp_path / "a", toy, text, "hofstaetter-tsv")
    assert store_rows(kept) == [("q1", "d3", 9.5), ("q1", "d7", 1.25)]
    assert (kept.report["conflicts"], kept.report["duplicates"]) == (2, 2)
    assert kept.report["conflict_examples"][0].endswith(":2: ('q1', 'd7') has score 1.5 here but 1.25 on line 1")
    with pytest.raises(DataFormatError, match=r"has score 1.5 here but 1.25 on line 1") as info:
        run_import(tmp_path / "b", toy, text, "hofstaetter-tsv", on_conflict="error")
    assert info.value.line == 2
    with pytest.raises(DataFormatError, match=r"is a negative here but a positive on line 1") as info:
        run_import(tmp_path / "c", toy, "9.5\t1.25\tq1\td3\td7\n2.0\t9.5\tq1\td8\td3\n", "hofstaetter-tsv")
    assert info.value.line == 2


def test_unknown_ids_fail_or_are_skipped(tmp_path: Path, toy: Collection) -> None:
    # q2 exists in queries.jsonl but is not judged in the train split; d99 is not in the corpus.
    text = "9.5\t1.25\tq1\td3\td7\n9.0\t1.0\tq2\td1\td2\n8.0\t0.5\tq3\td10\td99\n"
    with pytest.raises(DataFormatError, match=r"3 pairs name unknown ids") as info:
        run_import(tmp_path / "a", toy, text, "hofstaetter-tsv")
    assert info.value.line == 2
    assert "'q2' (on line 2)" in str(info.value) and "'d99' (on line 3)" in str(info.value)
    assert "split 'train'" in str(info.value)
    skipped = run_import(tmp_path / "b", toy, text, "hofstaetter-tsv", skip_unknown=True)
    assert store_rows(skipped) == [("q1", "d3", 9.5), ("q1", "d7", 1.25), ("q3", "d10", 8.0)]
    assert skipped.report["skipped_unknown"] == {"pairs": 3, "query_ids": 1, "doc_ids": 1}
    assert set(labels(skipped)) == {("q1", "d3"), ("q1", "d7"), ("q3", "d10")}


def test_existing_outputs_are_kept_unless_overwrite(tmp_path: Path, toy: Collection) -> None:
    first = run_import(tmp_path, toy, HOFSTAETTER, "hofstaetter-tsv")
    with pytest.raises(ValueError, match="already exists"):
        run_import(tmp_path, toy, "1.0\t0.0\tq1\td3\td7\n", "hofstaetter-tsv")
    assert TeacherStore.open(tmp_path / "store").fingerprint == first.store.fingerprint
    again = run_import(tmp_path, toy, "1.0\t0.0\tq1\td3\td7\n", "hofstaetter-tsv", overwrite=True)
    assert store_rows(again) == [("q1", "d3", 1.0), ("q1", "d7", 0.0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cands", "scores.txt", "store"]  # no staging left
    with pytest.raises(ValueError, match="two separate directories"):
        import_scores(
            tmp_path / "scores.txt",
            "hofstaetter-tsv",
            collection=toy,
            out=tmp_path / "x",
            candidates_out=tmp_path / "x" / "c",
        )


def test_every_format_is_registered() -> None:
    assert IMPORT_FORMATS.names() == sorted(
        [
            "hofstaetter-tsv",
            "st-mse",
            "st-margin-mse",
            "st-scores-pickle",
            "tevatron",
            "colbert",
            "flagembedding",
            "trec-run",
        ]
    )


def test_imported_artifacts_pass_train_student_checks(tmp_path: Path, toy: Collection, toy_dir: Path) -> None:
    """The checks train-student makes before training, on an imported store and candidates."""
    from retrodistill.config import DataConfig, TrainConfig
    from retrodistill.train.examples import build_examples
    from retrodistill.train.training_data import load_candidates as _load_candidates

    text = "".join(
        json.dumps([qid, *[[d, float(10 - i)] for i, d in enumerate(docs)]]) + "\n"
        for qid, docs in {"q1": ["d3", "d1", "d2", "d6"], "q3": ["d10", "d1", "d5", "d7"]}.items()
    )
    run_import(tmp_path, toy, text, "colbert")
    store = TeacherStore.open(tmp_path / "store")
    check_inputs(
        {k: v for k, v in store.inputs.items() if k in ("corpus", "queries")},
        toy.fingerprints,
        artifact="store",
        given="toy",
    )
    config = TrainConfig(data=DataConfig(dataset=str(toy_dir)), store=str(tmp_path / "store"))
    candidates = _load_candidates(config, store)  # no --candidates: the store names them
    assert candidates.path == tmp_path / "cands"
    assert store.inputs["candidates"] == candidates.fingerprint
    examples = build_examples(toy, candidates, store.scores(), negatives=2, negative_pool=30, epochs=1, seed=0)
    assert len(examples) == 2 and examples.skipped_queries == {}
    assert all(row[0] == 10.0 and len(row) == 3 for row in examples.scores)


def test_cli_imports_and_reports_errors(tmp_path: Path, toy_dir: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from retrodistill.cli.import_scores import import_scores as command

    app = typer.Typer()
    app.command()(command)
    source = tmp_path / "run.trec"
    source.write_text("q11 Q0 d30 1 9.0 ce\nq11 Q0 d1 2 4.0 ce\n")
    args = [str(source), "--format", "trec-run", "--dataset", str(toy_dir), "--out", str(tmp_path / "store")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 scored pairs" in " ".join(result.output.split())
    assert TeacherStore.open(tmp_path / "store").manifest["config"]["candidates"] == str(tmp_path / "store-candidates")
    source.write_text("q11 Q0 d30 1 9.0 ce\nq11 Q0 d1 2\n")
    failed = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "other")])
    assert failed.exit_code == 2
    message = " ".join(failed.output.split())
    assert "run.trec:2: expected 6 columns" in message


def test_train_student_takes_an_imported_store(
    tmp_path: Path, toy: Collection, toy_dir: Path, tiny_st_dir: Path
) -> None:
    """One training step of the tiny student on imported Hofstätter scores, candidates found via the store."""
    from retrodistill.config import DataConfig, StudentConfig, TrainConfig
    from retrodistill.train.run import run as train

    text = "".join(
        f"{9 - i}.5\t{i}.25\t{q}\t{pos}\td{i + 5}\n" for q, pos in (("q1", "d3"), ("q3", "d10")) for i in range(3)
    )
    imported = run_import(tmp_path, toy, text, "hofstaetter-tsv", model="toy-ensemble")
    config = TrainConfig(
        data=DataConfig(dataset=str(toy_dir), split="train"),
        store=str(tmp_path / "store"),
        out=str(tmp_path / "student"),
        student=StudentConfig(model=str(tiny_st_dir), layers=2, similarity="dot"),
        negatives=2,
        max_steps=1,
        batch_size=2,
    )
    out = train(config, show_progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["teacher_scores"] == imported.store.fingerprint
    assert manifest["inputs"]["candidates"] == imported.candidates.fingerprint
    assert manifest["teacher"]["model"] == "toy-ensemble" and manifest["counts"]["steps"] == 1


def test_staging_folders_of_killed_imports_are_removed(tmp_path: Path, toy: Collection) -> None:
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    tmp_path.mkdir(parents=True, exist_ok=True)
    from retrodistill.temporaries import host_tag

    stale = [tmp_path / f".store.staging-{dead}-{host_tag()}-abc", tmp_path / f".cands.staging-{dead}-{host_tag()}-d"]
    for folder in stale:
        folder.mkdir()
        (folder / "part-00000.parquet").write_bytes(b"half")
    run_import(tmp_path, toy, "1.0\t0.5\tq1\td1\td2\n", "hofstaetter-tsv")
    assert not any(folder.exists() for folder in stale)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
