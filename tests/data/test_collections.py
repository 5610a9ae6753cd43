"""Loaders for BEIR folders, MS MARCO TSVs and qrels: invariants on small files, counts on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path

from retrodistill.data.collections import (
    Collection,
    DataFormatError,
    load_beir,
    load_msmarco,
    read_corpus,
    read_qrels,
    read_queries,
)

SCIFACT_CORPUS_SHA256 = "dec31c8182f3d744c7d2c09423756fd1d17cbef75808db13ba01cc0aab4d1ac6"


def _jsonl(path: Path, *records: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _beir(root: Path, qrels: str, split: str = "test", queries: tuple[str, ...] = ("q1", "q2")) -> Path:
    """A two-document BEIR folder with the given qrels text and queries (two by default)."""
    (root / "qrels").mkdir(parents=True)
    _jsonl(root / "corpus.jsonl", {"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "text": "two"})
    texts = {"q1": "first?", "q2": "second?"}
    _jsonl(root / "queries.jsonl", *({"_id": q, "text": texts.get(q, f"{q}?")} for q in queries))
    (root / "qrels" / f"{split}.tsv").write_text(qrels, encoding="utf-8")
    return root


# --- JSONL corpus and queries ---------------------------------------------------------------------


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: malformed JSON") as info:
        read_corpus(path)
    assert info.value.path == str(path) and info.value.line == 2


def test_missing_id_is_an_error(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "queries.jsonl", {"_id": "q1", "text": "a"}, {"text": "no id"})
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:2: record has no '_id'"):
        read_queries(path)


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "corpus.jsonl", {"_id": "d1"}, {"_id": "d2"}, {"_id": "d1"})
    expected = r"corpus\.jsonl:3: duplicate _id 'd1' \(first seen on line 1\)"
    with pytest.raises(DataFormatError, match=expected):
        read_corpus(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_empty_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match="empty file"):
        read_corpus(path)


def test_integer_id_is_read_as_a_string(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "corpus.jsonl", {"_id": 4983, "title": "T", "text": "x"})
    corpus = read_corpus(path)
    assert list(corpus) == ["4983"]
    assert corpus["4983"].joined() == "T x"


def test_missing_title_reads_as_empty(tmp_path: Path) -> None:
    corpus = read_corpus(_jsonl(tmp_path / "corpus.jsonl", {"_id": "d1", "text": "body"}))
    assert corpus["d1"].title == "" and corpus["d1"].joined() == "body"


# --- qrels ----------------------------------------------------------------------------------------


def test_qrels_with_header(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td2\t0\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 2}, "q2": {"d2": 0}}


def test_qrels_without_header(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("q1\td1\t1\nq2\td2\t3\n")
    assert read_qrels(path) == {"q1": {"d1": 1}, "q2": {"d2": 3}}


def test_qrels_trec_four_columns(tmp_path: Path) -> None:
    path = tmp_path / "qrels.txt"
    path.write_text("19335 0 1017759 0\n19335 Q0 1082489 3\n")
    assert read_qrels(path) == {"19335": {"1017759": 0, "1082489": 3}}


def test_qrels_crlf_line_endings(tmp_path: Path) -> None:
    # SciFact's official qrels end every line with CRLF.
    path = tmp_path / "test.tsv"
    path.write_bytes(b"query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td2\t1\r\n")
    assert read_qrels(path) == {"q1": {"d1": 1}, "q2": {"d2": 1}}


def test_qrels_non_integer_grade_names_line(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("q1\td1\t1\nq1\td2\thigh\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:2: relevance grade 'high' is not an integer"):
        read_qrels(path)


def test_qrels_non_integer_grade_right_after_header(tmp_path: Path) -> None:
    # Only the first line may be a header; a bad grade on the next line must not pass as a second one.
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\tx\nq1\td2\t1\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:2: relevance grade 'x'"):
        read_qrels(path)


def test_qrels_integral_float_grade_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("q1\td1\t2.0\n")
    assert read_qrels(path) == {"q1": {"d1": 2}}


def test_qrels_wrong_column_count(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("q1\td1\t1\nq1\td2\n")
    expected = r"test\.tsv:2: expected 3 \(BEIR\) or 4 \(TREC\) columns, found 2"
    with pytest.raises(DataFormatError, match=expected):
        read_qrels(path)


def test_qrels_pair_judged_twice(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("q1\td1\t1\nq1\td1\t0\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:2: \(q1, d1\) judged twice \(first on line 1\)"):
        read_qrels(path)


def test_qrels_header_only_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(DataFormatError, match="empty file: no judgments"):
        read_qrels(path)


# --- BEIR folders ---------------------------------------------------------------------------------


def test_load_beir_toy(toy_dir: Path) -> None:
    collection = load_beir(toy_dir, "test")
    assert isinstance(collection, Collection)
    assert collection.name == "toy" and collection.split == "test"
    assert set(collection.queries) == set(collection.qrels)
    assert all(doc in collection.corpus for docs in collection.qrels.values() for doc in docs)
    assert set(collection.fingerprints) == {"corpus", "queries", "qrels/test"}
    assert all(v.startswith("sha256:") for v in collection.fingerprints.values())


def test_unknown_judgments_are_counted_and_kept_for_evaluation_only(tmp_path: Path) -> None:
    qrels = "q1\td1\t1\nq1\tnope\t1\nghost\td1\t1\nghost\td2\t2\nq2\td2\t1\nq3\tgone\t2\n"
    root = _beir(tmp_path / "ds", qrels, queries=("q1", "q2", "q3"))
    collection = load_beir(root)
    # Training view: only documents that exist, and the queries that have one.
    assert collection.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    assert set(collection.queries) == {"q1", "q2"}
    # Evaluation view: every judgment of a known query; q3, judged only on an absent document, stays.
    evaluated = collection.for_evaluation()
    assert evaluated.qrels == {"q1": {"d1": 1, "nope": 1}, "q2": {"d2": 1}, "q3": {"gone": 2}}
    assert set(evaluated.queries) == {"q1", "q2", "q3"}
    assert collection.unknown_judgments == {"queries": 2, "documents": 2}
    assert collection.unknown_ids == {"queries": ["ghost"], "documents": ["nope", "gone"]}
    described = collection.describe()
    assert "2 judgments skipped: unknown query ids (ids such as 'ghost')" in described
    assert "2 judgments to documents absent from the corpus (ids such as 'nope', 'gone')" in described
    assert "1 query judged only on such documents (scoring 0)" in described
    assert described.startswith("ds (test): 2 documents, 3 queries, 4 judgments;")


def test_queries_restricted_to_split(tmp_path: Path) -> None:
    collection = load_beir(_beir(tmp_path / "ds", "q2\td1\t1\n"))
    assert collection.queries == {"q2": "second?"}


def test_missing_split_lists_available(tmp_path: Path) -> None:
    root = _beir(tmp_path / "ds", "q1\td1\t1\n", split="train")
    (root / "qrels" / "dev.tsv").write_text("q2\td2\t1\n")
    with pytest.raises(FileNotFoundError, match=r"no qrels for split 'test'; available splits: dev, train"):
        load_beir(root, "test")


def test_missing_qrels_folder(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    with pytest.raises(FileNotFoundError, match="available splits: none"):
        load_beir(root)


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        load_beir(tmp_path / "absent")


# --- MS MARCO TSVs --------------------------------------------------------------------------------


def test_load_msmarco_tsv(tmp_path: Path) -> None:
    (tmp_path / "collection.tsv").write_text("0\tfirst passage\n1\tsecond\tpassage with a tab\n")
    (tmp_path / "queries.tsv").write_text("100\twhat is first?\n200\tunjudged\n")
    (tmp_path / "qrels.txt").write_text("100 0 0 1\n100 0 1 0\n100 0 99 2\n")
    collection = load_msmarco(tmp_path / "collection.tsv", tmp_path / "queries.tsv", tmp_path / "qrels.txt")
    assert collection.name == "msmarco" and collection.split == "dev"
    assert collection.doc_text("1") == "second\tpassage with a tab"
    assert collection.queries == {"100": "what is first?"}
    assert collection.qrels == {"100": {"0": 1, "1": 0}}
    assert collection.unknown_judgments == {"queries": 0, "documents": 1}


def test_msmarco_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    (tmp_path / "collection.tsv").write_text("0\ta\n1\tb\n0\tc\n")
    (tmp_path / "queries.tsv").write_text("100\tq\n")
    (tmp_path / "qrels.txt").write_text("100 0 0 1\n")
    expected = r"collection\.tsv:3: duplicate id '0' \(first seen on line 1\)"
    with pytest.raises(DataFormatError, match=expected):
        load_msmarco(tmp_path / "collection.tsv", tmp_path / "queries.tsv", tmp_path / "qrels.txt")


def test_msmarco_line_without_tab(tmp_path: Path) -> None:
    (tmp_path / "queries.tsv").write_text("100\tq\n200 no tab here\n")
    (tmp_path / "collection.tsv").write_text("0\ta\n")
    (tmp_path / "qrels.txt").write_text("100 0 0 1\n")
    with pytest.raises(DataFormatError, match=r"queries\.tsv:2: expected 'id<TAB>text'"):
        load_msmarco(tmp_path / "collection.tsv", tmp_path / "queries.tsv", tmp_path / "qrels.txt")


# --- the real data under ../shared (skipped when absent) ------------------------------------------


def test_scifact_test_counts() -> None:
    collection = load_beir(shared_path("data", "beir", "scifact"), "test")
    assert len(collection.corpus) == 5_183
    assert len(collection.queries) == 300
    assert sum(len(docs) for docs in collection.qrels.values()) == 339
    assert collection.unknown_judgments == {"queries": 0, "documents": 0}
    assert collection.fingerprints["corpus"] == f"sha256:{SCIFACT_CORPUS_SHA256}"


def test_scifact_train_counts() -> None:
    collection = load_beir(shared_path("data", "beir", "scifact"), "train")
    assert len(collection.queries) == 809


def test_dl19_sample_counts() -> None:
    # Its qrels have no header line: the first judgment must not be mistaken for one.
    root = shared_path("data", "msmarco", "dl19-sample")
    collection = load_beir(root, "test")
    assert len(collection.corpus) == 5_000
    assert len(collection.queries) == 43
    # 4,102 lines, every one a judgment (PROVENANCE.md); the 19335 line 1 is not a header.
    assert sum(len(docs) for docs in collection.qrels.values()) == 4_102
    assert collection.qrels["19335"]["1720389"] == 1


def test_official_dl19_trec_qrels() -> None:
    qrels = read_qrels(shared_path("data", "msmarco", "official", "qrels.dl19-passage.txt"))
    assert len(qrels) == 43
    assert sum(len(docs) for docs in qrels.values()) == 9_260
    assert {grade for docs in qrels.values() for grade in docs.values()} == {0, 1, 2, 3}


def test_describe_counts_empty_texts(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": ""}\n{"_id": "d2", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": " "}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td2\t1\n")
    text = load_beir(tmp_path, "test").describe()
    assert "1 empty documents, 1 empty queries" in text
