"""The Arrow corpus cache: same documents and errors as the line-by-line reader, converted once, mapped after."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from retrodistill.artifacts import sha256_file
from retrodistill.data import corpus_convert
from retrodistill.data.collections import Collection, load_beir
from retrodistill.data.corpus import Corpus, cache_root, open_corpus
from retrodistill.data.id_index import IdIndex, InvalidIdError, fixed_width
from retrodistill.data.records import DataFormatError, Document, iter_lines, parse_json_record, parse_tsv_record


def _jsonl(path: Path, *records: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _manifest(corpus: Corpus) -> dict[str, object]:
    assert corpus.directory is not None
    manifest: dict[str, object] = json.loads((corpus.directory / "manifest.json").read_text())
    return manifest


def _reference(path: Path, kind: str) -> dict[str, Document]:
    """What the loaders read before the cache: one record per non-blank line, in order."""
    docs: dict[str, Document] = {}
    for number, line in iter_lines(path):
        if kind == "beir":
            doc_id, values = parse_json_record(path, number, line, ("title", "text"))
            docs[doc_id] = Document(values["title"], values["text"])
        else:
            doc_id, text = parse_tsv_record(path, number, line)
            docs[doc_id] = Document("", text)
    return docs


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("RETRODISTILL_CACHE", str(root))
    return root / "collections"


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return _jsonl(
        tmp_path / "corpus.jsonl",
        {"_id": "d1", "title": "T", "text": "one"},
        {"_id": "d3", "text": "three", "metadata": {"url": "x"}},
        {"_id": "d2", "title": None, "text": "two"},
    )


# --- the mapping ----------------------------------------------------------------------------------


def test_corpus_is_a_mapping_in_file_order(small: Path, cache: Path) -> None:
    corpus = open_corpus(small)
    assert len(corpus) == 3 and list(corpus) == ["d1", "d3", "d2"]
    assert corpus["d1"] == Document("T", "one") and corpus["d2"] == Document("", "two")
    assert "d3" in corpus and "d4" not in corpus and 3 not in corpus
    assert dict(corpus.items()) == {"d1": Document("T", "one"), "d3": Document("", "three"), "d2": Document("", "two")}
    assert list(corpus.values())[0] == Document("T", "one")
    assert corpus == {"d1": Document("T", "one"), "d3": Document("", "three"), "d2": Document("", "two")}
    assert corpus.get("nope") is None
    with pytest.raises(KeyError, match="nope"):
        corpus["nope"]


def test_vectorised_access(small: Path, cache: Path) -> None:
    corpus = open_corpus(small)
    assert corpus.rows(["d2", "d1"]).tolist() == [2, 0]
    assert corpus.rows(pa.array(["d3", "d3"])).dtype == np.int64
    assert corpus.rows(["d2", "zz", "d", "d10"], missing=-1).tolist() == [2, -1, -1, -1]
    with pytest.raises(KeyError, match="'zz'"):
        corpus.rows(["d1", "zz", "yy"])
    assert corpus.texts(np.array([2, 0, 2])) == ["two", "T one", "two"]
    assert corpus.id_at([1, 0]) == ["d3", "d1"]
    assert corpus.document(1) == Document("", "three")
    assert corpus.ids.to_pylist() == ["d1", "d3", "d2"]
    with pytest.raises(IndexError):
        corpus.texts([3])


def test_rows_and_texts_across_record_batches(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small batches so the table has many chunks, as an 8.8M-passage one has.
    monkeypatch.setattr(corpus_convert, "_BLOCK_BYTES", 1 << 10)
    monkeypatch.setattr(corpus_convert, "_BATCH_ROWS", 100)
    records = [{"_id": f"p{i}", "title": f"t{i % 7}", "text": f"passage {i}"} for i in range(2_000)]
    corpus = open_corpus(_jsonl(tmp_path / "corpus.jsonl", *records))
    assert corpus.table.column("text").num_chunks > 10
    rows = np.random.default_rng(0).integers(0, 2_000, 500)
    assert corpus.texts(rows) == [f"t{r % 7} passage {r}" for r in rows]
    assert corpus.rows([f"p{r}" for r in rows]).tolist() == rows.tolist()
    assert corpus["p1999"] == Document("t4", "passage 1999")


def test_unicode_and_prefix_ids(tmp_path: Path, cache: Path) -> None:
    ids = ["é", "e", "ab", "abc", "a", "日本", "z" * 40]
    corpus = open_corpus(_jsonl(tmp_path / "corpus.jsonl", *({"_id": i, "text": i} for i in ids)))
    assert corpus.rows(ids).tolist() == list(range(len(ids)))
    assert corpus.rows(["abcd", "z" * 41, "日", "a\x00"], missing=-1).tolist() == [-1, -1, -1, -1]
    assert all(corpus[i].text == i for i in ids)


def test_from_dict_and_collection_accepts_a_dict() -> None:
    docs = {"b": Document("", "x"), "a": Document("T", ""), "e": Document(" ", "\u00a0")}
    corpus = Corpus.from_dict(docs)
    assert list(corpus) == ["b", "a", "e"] and corpus == docs and corpus.empty_documents == 1
    assert corpus.fingerprint is None and corpus.directory is None
    collection = Collection("c", docs, {"q": "?"}, {"q": {"a": 1}}, "test")  # type: ignore[arg-type]
    assert isinstance(collection.corpus, Corpus) and collection.doc_text("a") == "T"
    assert "1 empty documents" in collection.describe()
    assert len(Corpus.from_dict({})) == 0 and "x" not in Corpus.from_dict({})


def test_pickles_as_its_cache_folder(small: Path, cache: Path) -> None:
    corpus = open_corpus(small)
    payload = pickle.dumps(corpus)
    assert len(payload) < 1_000
    again = pickle.loads(payload)
    assert again.directory == corpus.directory and dict(again.items()) == dict(corpus.items())
    in_memory = Corpus.from_dict({"a": Document("t", "x")})
    assert pickle.loads(pickle.dumps(in_memory)) == {"a": Document("t", "x")}


# --- the cache ------------------------------------------------------------------------------------


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RETRODISTILL_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("RETRODISTILL_CACHE")
    assert cache_root() == Path.home() / ".cache" / "retrodistill"


def test_cache_layout_and_manifest(small: Path, cache: Path) -> None:
    corpus = open_corpus(small)
    assert corpus.directory is not None and corpus.directory.parent == cache
    assert sorted(p.name for p in cache.iterdir()) == [corpus.directory.name]  # no staging folder left
    assert {p.name for p in corpus.directory.iterdir()} == {
        "corpus.arrow",
        "ids.sorted.npy",
        "order.npy",
        "manifest.json",
    }
    manifest = _manifest(corpus)
    assert manifest["fingerprint"] == sha256_file(small) == corpus.fingerprint
    assert manifest["counts"] == {"documents": 3, "empty_documents": 0}
    assert manifest["source"] == {"path": str(small.resolve()), "size": small.stat().st_size,
                                  "mtime_ns": small.stat().st_mtime_ns}  # fmt: skip
    assert manifest["reader"] == "pyarrow"
    with pa.memory_map(str(corpus.directory / "corpus.arrow")) as source:
        table = pa.ipc.open_file(source).read_all()
    assert table.schema.names == ["_id", "title", "text"] and table.column("title").to_pylist() == ["T", "", ""]


def test_second_open_reads_the_cache_without_hashing(small: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = open_corpus(small)

    def refuse(*args: object) -> None:
        raise AssertionError("converted or hashed again")

    monkeypatch.setattr(corpus_convert, "convert", refuse)
    monkeypatch.setattr(corpus_convert, "_scan", refuse)
    second = open_corpus(small)
    assert second.directory == first.directory and second.fingerprint == first.fingerprint
    assert load_beir_fingerprint(small, monkeypatch) == first.fingerprint


def load_beir_fingerprint(corpus_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    root = corpus_path.parent
    _jsonl(root / "queries.jsonl", {"_id": "q1", "text": "?"})
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    return load_beir(root).fingerprints["corpus"]


def test_changed_source_is_converted_again(small: Path, cache: Path) -> None:
    first = open_corpus(small)
    _jsonl(small, {"_id": "x", "text": "new"})
    os.utime(small, ns=(small.stat().st_atime_ns, small.stat().st_mtime_ns + 10**9))
    second = open_corpus(small)
    assert list(second) == ["x"] and second.directory != first.directory
    assert second.fingerprint == sha256_file(small) != first.fingerprint


def test_corrupt_cache_is_rebuilt_with_a_warning(small: Path, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = open_corpus(small).directory
    assert directory is not None
    with open(directory / "corpus.arrow", "r+b") as f:
        f.truncate(100)
    with caplog.at_level(logging.WARNING, logger="retrodistill.data.corpus"):
        corpus = open_corpus(small)
    assert "corrupt corpus cache" in caplog.text and "corpus.arrow has 100 bytes" in caplog.text
    assert list(corpus) == ["d1", "d3", "d2"] and corpus.directory == directory


def test_damaged_file_of_the_right_size_is_rebuilt(small: Path, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = open_corpus(small).directory
    assert directory is not None
    size = (directory / "corpus.arrow").stat().st_size
    (directory / "corpus.arrow").write_bytes(b"\0" * size)
    with caplog.at_level(logging.WARNING, logger="retrodistill.data.corpus"):
        assert list(open_corpus(small)) == ["d1", "d3", "d2"]
    assert "does not open" in caplog.text


def test_cache_that_kept_a_byte_order_mark_is_rebuilt(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from retrodistill.data import corpus, records

    path = tmp_path / "collection.tsv"
    path.write_text("\ufeff1\tone\n2\ttwo\n", encoding="utf-8")
    with monkeypatch.context() as patched:  # the loader before BOMs were dropped
        patched.setattr(records, "_open_text", lambda p, errors="strict": open(p, encoding="utf-8", errors=errors))
        patched.setattr(corpus, "_kept_byte_order_mark", lambda _: False)
        assert list(open_corpus(path, "msmarco")) == ["\ufeff1", "2"]
    with caplog.at_level(logging.WARNING, logger="retrodistill.data.corpus"):
        assert list(open_corpus(path, "msmarco")) == ["1", "2"]
    assert "first id starts with the file's byte-order mark" in caplog.text


def test_half_written_cache_is_ignored(small: Path, cache: Path) -> None:
    directory = open_corpus(small).directory
    assert directory is not None
    (directory / "manifest.json").unlink()  # as if a copy stopped before its manifest
    (cache / ".tmp-leftover").mkdir()  # a staging folder of a killed conversion
    corpus = open_corpus(small)
    assert list(corpus) == ["d1", "d3", "d2"] and (directory / "manifest.json").is_file()


def test_a_failed_conversion_leaves_nothing(tmp_path: Path, cache: Path) -> None:
    path = _jsonl(tmp_path / "corpus.jsonl", {"_id": "a"}, {"_id": "a"})
    with pytest.raises(DataFormatError):
        open_corpus(path)
    assert list(cache.iterdir()) == []


def test_open_checks_the_manifest(small: Path, cache: Path) -> None:
    directory = open_corpus(small).directory
    assert directory is not None
    assert list(Corpus.open(directory)) == ["d1", "d3", "d2"]
    (directory / "order.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="order.npy has 0 bytes"):
        Corpus.open(directory)


# --- the same documents and errors as the line-by-line reader ---------------------------------------


def _random_jsonl(path: Path, rng: random.Random, n: int) -> None:
    pieces = ["", " ", "\u00a0", "\x1c", "été", "a b", "\t", "x\ny", '"q"', "\\", "日本語"]
    lines = []
    for i in range(n):
        record: dict[str, object] = {"_id": f"{rng.choice(pieces).strip() or 'id'}-{i}"}
        for field in ("title", "text"):
            if rng.random() < 0.8:
                record[field] = rng.choice(pieces) + rng.choice(pieces)
        lines.append(json.dumps(record, ensure_ascii=rng.random() < 0.5))
    path.write_text("\n".join(lines) + rng.choice(["", "\n"]), encoding="utf-8")


@pytest.mark.parametrize("seed", range(5))
def test_fast_reader_matches_the_line_reader(tmp_path: Path, cache: Path, seed: int) -> None:
    path = tmp_path / "corpus.jsonl"
    _random_jsonl(path, random.Random(seed), 300)
    corpus = open_corpus(path)
    reference = _reference(path, "beir")
    assert _manifest(corpus)["reader"] == "pyarrow"
    assert list(corpus.items()) == list(reference.items())
    assert corpus.empty_documents == sum(1 for d in reference.values() if not d.joined())


@pytest.mark.parametrize(
    ("content", "reader"),
    [
        ('{"_id": "a", "text": "x"}\n\n{"_id": "b"}\n', "python"),  # blank line
        ('{"_id": 7, "text": "x"}\n{"_id": "b"}\n', "python"),  # integer id
        ('{"_id": "a", "text": "x"}\r\n{"_id": "b"}\r\n', "pyarrow"),
        ('\ufeff{"_id": "a"}\n', "python"),  # a byte-order mark: dropped by the line reader
    ],
)
def test_jsonl_readers_agree(tmp_path: Path, cache: Path, content: str, reader: str | None) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(content, encoding="utf-8")
    try:
        reference = _reference(path, "beir")
    except DataFormatError as err:
        with pytest.raises(DataFormatError, match=str(err).replace("(", r"\(").replace(")", r"\)")):
            open_corpus(path)
        return
    corpus = open_corpus(path)
    assert list(corpus.items()) == list(reference.items()) and _manifest(corpus)["reader"] == reader


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"_id": "a"}\n{"_id": "a"}\n{"_id": "b"\n', r":2: duplicate _id 'a' \(first seen on line 1\)"),
        ('{"_id": "a"}\n{"_id": "b"\n{"_id": "a"}\n', r":2: malformed JSON"),
        ('{"_id": "a"}\n\n{"_id": "b"}\n{"_id": "b"}\n', r":4: duplicate _id 'b' \(first seen on line 3\)"),
        ('{"_id": "x"}\n{"_id": "y"}\n{"_id": "y"}\n{"_id": "x"}\n', r":3: duplicate _id 'y' \(first seen on line 2\)"),
        ('{"_id": "a"}\n{"text": "b"}\n', r":2: record has no '_id'"),
        ('{"_id": "a"}\n{"_id": ""}\n', r":2: '_id' must be a non-empty string, got ''"),
        ('{"_id": "a"}\n{"_id": true}\n', r":2: '_id' must be a non-empty string, got True"),
        ('{"_id": "a", "title": 3}\n', r":1: 'title' must be a string, got int"),
        ('{"_id": "a"}\n[1]\n', r":2: expected a JSON object, got list"),
        ('{"_id": "a"} {"_id": "b"}\n', r":1: malformed JSON \(Extra data"),
        ('{"_id": "a\\u0000"}\n', r":1: '_id' 'a\\x00' ends in a NUL character"),
        ("\n \n", r"corpus\.jsonl: empty file: no records"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, cache: Path, content: str, expected: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match=expected):
        open_corpus(path)


@pytest.mark.parametrize(
    ("content", "reader"),
    [
        ("0\tfirst\n1\tsecond\n", "pyarrow"),
        (" 0 \t\u00a0first \n1\t second\x1c\r\n2\t\n", "pyarrow"),  # str.strip() on id and text
        ("0\tfirst\n1\tsecond\twith a tab\n", "python"),
        ("0\tfirst\n\n1\tsecond\n", "python"),
        ('0\t"quoted"\n1\tsecond\n', "pyarrow"),
    ],
)
def test_tsv_readers_agree(tmp_path: Path, cache: Path, content: str, reader: str) -> None:
    path = tmp_path / "collection.tsv"
    path.write_bytes(content.encode("utf-8"))
    corpus = open_corpus(path, "msmarco")
    assert list(corpus.items()) == list(_reference(path, "msmarco").items())
    assert _manifest(corpus)["reader"] == reader


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("0\ta\n1\tb\n0\tc\n", r":3: duplicate id '0' \(first seen on line 1\)"),
        ("0\ta\n1 b\n", r":2: expected 'id<TAB>text'"),
        ("0\ta\n \tb\n", r":2: expected 'id<TAB>text'"),
    ],
)
def test_tsv_errors_name_file_and_line(tmp_path: Path, cache: Path, content: str, expected: str) -> None:
    path = tmp_path / "collection.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match=expected):
        open_corpus(path, "msmarco")


def test_missing_file_and_unknown_kind(tmp_path: Path, small: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_corpus(tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="unknown corpus kind 'trec'"):
        open_corpus(small, "trec")


def test_empty_documents_are_counted_as_str_strip_has_it(tmp_path: Path, cache: Path) -> None:
    path = _jsonl(
        tmp_path / "corpus.jsonl",
        {"_id": "a", "title": "\u3000", "text": "\x1c\x1f\u2028"},
        {"_id": "b", "title": "", "text": ""},
        {"_id": "c"},
        {"_id": "d", "title": " ", "text": "\u200b"},  # a zero-width space is not whitespace to Python
    )
    assert open_corpus(path).empty_documents == 3


# --- the id index -----------------------------------------------------------------------------------


def test_fixed_width_copies_arrow_strings() -> None:
    fixed, fits = fixed_width(pa.array(["ab", "", "日", "abcdef"]), width=4)
    assert fixed.dtype == np.dtype("S4")
    assert fixed.tolist() == [b"ab", b"", "日".encode(), b"abcd"] and fits.tolist() == [True, True, True, False]
    sliced, _ = fixed_width(pa.chunked_array([["x", "yy"], ["zzz"]]).combine_chunks().slice(1))
    assert sliced.tolist() == [b"yy", b"zzz"]


def test_id_index_round_trip(tmp_path: Path) -> None:
    ids = pa.array([f"{i * 7919 % 1000}" for i in range(1000)])
    index = IdIndex.build(ids)
    assert index.first_duplicate() is None
    index.save(tmp_path)
    loaded = IdIndex.load(tmp_path)
    assert isinstance(loaded.sorted_ids, np.memmap)
    assert loaded.rows(ids).tolist() == list(range(1000))
    assert loaded.row("999") == ids.to_pylist().index("999") and loaded.row("1000") == -1


def test_id_index_finds_the_earliest_repeat() -> None:
    assert IdIndex.build(pa.array(["c", "a", "b", "a", "c", "b"])).first_duplicate() == (3, 1)
    assert IdIndex.build(pa.array(["a", "b", "b", "b"])).first_duplicate() == (2, 1)


def test_id_index_refuses_ids_it_cannot_hold() -> None:
    with pytest.raises(InvalidIdError, match="non-empty") as info:
        IdIndex.build(pa.array(["a", "", "b", ""]))
    assert info.value.row == 1
    with pytest.raises(InvalidIdError, match="NUL") as info:
        IdIndex.build(pa.array(["a", "b\x00", "c\x00"]))
    assert info.value.row == 1
