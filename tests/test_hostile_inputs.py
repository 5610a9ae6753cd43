"""Hostile and broken inputs (issue "Safe under hostile input"): one line, exit 2, nothing of the user's changed.

Each case asserts the exit code, the first line the user sees and that the user's files are as they were.
Sections are independent; each keeps to its own helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app

runner = CliRunner()


# === Collections and qrels: bad bytes, BOMs, qrels forms, thresholds, conversion leftovers =========


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path: what "nothing was changed" compares."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _data_error(args: list[str], data: Path, out: Path, *, after_warnings: bool = False) -> str:
    """Run a command expected to refuse its data; return its error line, after the common checks.

    The error is the first line of the output, or with ``after_warnings`` the first after the logged
    warnings (one line each, rich may wrap them).
    """
    before = _snapshot(data)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert _snapshot(data) == before
    assert not out.exists()  # nothing half-written where the results would have gone
    lines = result.output.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert after_warnings or lines[0] == errors[0], result.output
    return errors[0]


def _evaluate(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--dataset", str(dataset), "--model", "bm25s", "--out", str(out), *extra]


@pytest.mark.parametrize(
    ("name", "line", "column"),
    [("corpus.jsonl", 3, 27), ("queries.jsonl", 3, 27), ("qrels/test.tsv", 3, 4)],
)
def test_a_byte_that_is_not_utf8_is_named_by_file_and_line(
    toy_copy: Path, tmp_path: Path, name: str, line: int, column: int
) -> None:
    path = toy_copy / name
    lines = path.read_bytes().splitlines(keepends=True)
    # Latin-1 "é" (0xe9) where UTF-8 wants two bytes: what a file saved by an old editor holds.
    lines[line - 1] = lines[line - 1][: column - 1] + b"\xe9" + lines[line - 1][column - 1 :]
    path.write_bytes(b"".join(lines))
    first = _data_error(_evaluate(toy_copy, tmp_path / "out"), toy_copy, tmp_path / "out")
    assert first == f"error: {path}:{line}: not UTF-8 text: byte 0xe9 at column {column}; save the file as UTF-8"


def test_a_pickle_given_as_qrels_is_named_not_a_traceback(toy_copy: Path, tmp_path: Path) -> None:
    (toy_copy / "qrels" / "test.tsv").write_bytes(pickle.dumps({"q1": {"d1": 1}}))
    first = _data_error(_evaluate(toy_copy, tmp_path / "out"), toy_copy, tmp_path / "out")
    assert first.startswith(f"error: {toy_copy / 'qrels' / 'test.tsv'}:1: not UTF-8 text: byte 0x80 at column 1")


def _trec_dl_dir(root: Path, topics: bytes) -> Path:
    """A data folder for ``--beir trec-dl-2019``: the toy corpus as msmarco, Anserini-named qrels and topics."""
    (root / "msmarco").mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "fixtures" / "toy" / "corpus.jsonl", root / "msmarco" / "corpus.jsonl")
    (root / "trec-dl").mkdir()
    (root / "trec-dl" / "qrels.dl19-passage.txt").write_text("q1 0 d1 2\n", encoding="utf-8")
    (root / "trec-dl" / "topics.dl19-passage.txt").write_bytes(topics)
    return root


def test_a_byte_that_is_not_utf8_in_a_topics_tsv_is_named(tmp_path: Path) -> None:
    data = _trec_dl_dir(tmp_path / "data", b"q0\tfirst\nq1\tcaf\xe9 tumor\n")
    args = ["evaluate", "--beir", "trec-dl-2019", "--data-dir", str(data), "--model", "bm25s"]
    # A warning comes first: these qrels are not the official file (md5).
    first = _data_error([*args, "--out", str(tmp_path / "out")], data, tmp_path / "out", after_warnings=True)
    topics = data / "trec-dl" / "topics.dl19-passage.txt"
    assert first == f"error: {topics}:2: not UTF-8 text: byte 0xe9 at column 7; save the file as UTF-8"


@pytest.mark.parametrize("bad", ["collection", "queries"])
def test_a_byte_that_is_not_utf8_in_msmarco_tsvs_is_named(tmp_path: Path, bad: str) -> None:
    from retrodistill.data.collections import DataFormatError, load_msmarco

    files = {"collection": b"1\tone\n2\ttwo\n", "queries": b"7\tfirst?\n", "qrels": b"7 0 1 1\n"}
    files[bad] = files[bad].replace(b"\n", b" \xff\n")
    paths = {name: tmp_path / f"{name}.tsv" for name in files}
    for name, content in files.items():
        paths[name].write_bytes(content)
    before = _snapshot(tmp_path)
    with pytest.raises(DataFormatError) as info:
        load_msmarco(paths["collection"], paths["queries"], paths["qrels"])
    assert str(info.value).startswith(f"{paths[bad]}:1: not UTF-8 text: byte 0xff at column")
    assert _snapshot(tmp_path) == before


def test_qrels_naming_only_unknown_queries_is_one_clear_line(toy_copy: Path, tmp_path: Path) -> None:
    qrels = toy_copy / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nghost-1\td1\t1\nghost-2\td2\t1\n", encoding="utf-8")
    first = _data_error(_evaluate(toy_copy, tmp_path / "out"), toy_copy, tmp_path / "out")
    assert first == (
        f"error: {qrels}: no judged query is in {toy_copy / 'queries.jsonl'} (2 judgments; query ids such as "
        "'ghost-1'): are these the qrels of this dataset?"
    )


def test_qrels_naming_only_unknown_documents_is_one_clear_line(toy_copy: Path) -> None:
    from retrodistill.data.collections import DataFormatError, load_beir

    qrels = toy_copy / "qrels" / "test.tsv"
    qrels.write_text("q1\tnope\t1\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="no document judged for a known query is in .*corpus.jsonl"):
        load_beir(toy_copy)


def _with_bom(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def test_a_byte_order_mark_is_dropped_everywhere(toy_copy: Path, toy_dir: Path, tmp_path: Path) -> None:
    from retrodistill.data.collections import load_beir, load_msmarco

    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        _with_bom(toy_copy / name)
    with_bom, plain = load_beir(toy_copy), load_beir(toy_dir)
    assert dict(with_bom.corpus) == dict(plain.corpus)
    assert (with_bom.queries, with_bom.qrels) == (plain.queries, plain.qrels)
    assert with_bom.fingerprints["qrels/test"] != plain.fingerprints["qrels/test"]  # the file's own bytes

    tsvs = {"collection": "1\tone\n2\ttwo\n", "queries": "7\tfirst?\n", "qrels": "7 0 1 1\n"}
    for name, content in tsvs.items():
        (tmp_path / f"{name}.tsv").write_text("\ufeff" + content, encoding="utf-8")
    msmarco = load_msmarco(*(tmp_path / f"{name}.tsv" for name in tsvs))
    assert (
        list(msmarco.corpus) == ["1", "2"] and msmarco.queries == {"7": "first?"} and msmarco.qrels == {"7": {"1": 1}}
    )


def test_a_byte_order_mark_in_qrels_passes_the_command(toy_copy: Path, tmp_path: Path) -> None:
    _with_bom(toy_copy / "qrels" / "test.tsv")
    result = runner.invoke(app, _evaluate(toy_copy, tmp_path / "out", "--no-cache"))
    assert result.exit_code == 0, result.output
    assert "toy (test): 30 documents, 6 queries, 12 judgments" in result.output


@pytest.mark.parametrize(
    ("first_line", "problem"),
    [
        ("q1\td1\t1.5", "relevance grade '1.5' is not an integer"),
        ("q1\td1\tx1", "relevance grade 'x1' is not an integer"),
        ("q1\td1\tnan", "relevance grade 'nan' is not an integer"),
    ],
)
def test_a_headerless_first_line_is_data_not_a_dropped_header(
    toy_copy: Path, tmp_path: Path, first_line: str, problem: str
) -> None:
    qrels = toy_copy / "qrels" / "test.tsv"
    qrels.write_text(f"{first_line}\nq2\td1\t1\n", encoding="utf-8")
    first = _data_error(_evaluate(toy_copy, tmp_path / "out"), toy_copy, tmp_path / "out")
    assert first == f"error: {qrels}:1: {problem}"


def test_a_headerless_qrels_keeps_its_first_judgment(tmp_path: Path) -> None:
    from retrodistill.data.collections import read_qrels

    path = tmp_path / "test.tsv"
    path.write_text("1\t31715818\t1\n3\t14717500\t1\n", encoding="utf-8")
    assert read_qrels(path) == {"1": {"31715818": 1}, "3": {"14717500": 1}}
    headers = {"query-id\tcorpus-id\tscore": "q1\td1\t1", "query_id doc_id relevance": "q1 d1 1"}
    headers["qid iter docid rel"] = "q1 0 d1 1"
    for header, data in headers.items():
        path.write_text(f"{header}\n{data}\n", encoding="utf-8")
        assert read_qrels(path) == {"q1": {"d1": 1}}, header


def test_an_extra_fourth_column_is_not_read_as_trec(toy_copy: Path, tmp_path: Path) -> None:
    qrels = toy_copy / "qrels" / "test.tsv"
    qrels.write_text("q1\td1\t1\textra\nq2\td3\t1\textra\n", encoding="utf-8")
    first = _data_error(_evaluate(toy_copy, tmp_path / "out"), toy_copy, tmp_path / "out")
    assert first == (
        f"error: {qrels}:1: 4 columns, but the second is 'd1', not the 0 or Q0 of TREC qrels (qid 0 docid grade); "
        "BEIR qrels have 3 (query-id corpus-id score): 'q1\\td1\\t1\\textra'"
    )


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("q1\td1\t1\nq2\td3\t1\textra\n", 2, "4 columns in BEIR qrels of 3 (as on line 1): 'q2\\td3\\t1\\textra'"),
        ("q1 0 d1 1\nq2 d3 1\n", 2, "3 columns in TREC qrels of 4 (as on line 1): 'q2 d3 1'"),
        ("q1 Q0 d1 1\nq2 d3 1 2\n", 2, "4 columns, but the second is 'd3', not the 0 or Q0 of TREC qrels"),
    ],
)
def test_a_line_that_leaves_the_files_qrels_form_is_named(
    tmp_path: Path, content: str, line: int, problem: str
) -> None:
    from retrodistill.data.collections import DataFormatError, read_qrels

    path = tmp_path / "qrels.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        read_qrels(path)
    assert str(info.value).startswith(f"{path}:{line}: {problem}")


@pytest.mark.parametrize("threshold", ["-1", "0"])
def test_a_relevance_threshold_below_one_is_refused(toy_copy: Path, tmp_path: Path, threshold: str) -> None:
    first = _data_error(_evaluate(toy_copy, tmp_path / "out", "--rel-threshold", threshold), toy_copy, tmp_path / "out")
    assert first == (
        f"error: --rel-threshold {threshold}: must be at least 1; grade 0 means judged not relevant, so a lower "
        "threshold would count non-relevant documents as relevant"
    )


def test_a_relevance_threshold_below_one_is_refused_by_the_registry(tmp_path: Path) -> None:
    from retrodistill.data.registry import load_entry, load_trec_dl

    with pytest.raises(ValueError, match="--rel-threshold 0: must be at least 1"):
        load_entry("scifact", data_dir=tmp_path, rel_threshold=0, download=False)
    with pytest.raises(ValueError, match="--rel-threshold -2: must be at least 1"):
        load_trec_dl("trec-dl-2019", tmp_path, rel_threshold=-2, download=False)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_killed_conversions_are_removed_on_the_next(tmp_path: Path) -> None:
    from retrodistill.data.corpus import open_corpus
    from retrodistill.temporaries import host_tag as _host_tag

    cache = tmp_path / "collections"
    cache.mkdir()
    here = _host_tag()
    other_host = "000000" if here != "000000" else "111111"
    folders = {
        "dead": cache / f".tmp-{'a' * 16}-{_dead_pid()}-{here}-0000aaaa",
        "old": cache / f".tmp-{'b' * 16}-{os.getpid()}-{other_host}-0000bbbb",  # pid means nothing there
        "trash": cache / f".old-{'c' * 16}-0000cccc",
        "live": cache / f".tmp-{'d' * 16}-{os.getpid()}-{here}-0000dddd",
        "other-host-fresh": cache / f".tmp-{'e' * 16}-{_dead_pid()}-{other_host}-0000eeee",
    }
    for folder in folders.values():
        folder.mkdir()
        (folder / "corpus.arrow").write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for path in (folders["old"] / "corpus.arrow", folders["old"]):
        os.utime(path, (two_hours_ago, two_hours_ago))

    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text('{"_id": "d1", "text": "x"}\n', encoding="utf-8")
    assert list(open_corpus(corpus_file, cache_dir=cache)) == ["d1"]
    left = {name for name, folder in folders.items() if folder.exists()}
    assert left == {"live", "other-host-fresh"}
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-") and p not in folders.values()]


def test_a_failed_conversion_leaves_no_staging_folder(tmp_path: Path) -> None:
    from retrodistill.data.collections import DataFormatError
    from retrodistill.data.corpus import open_corpus

    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_bytes(b'{"_id": "d1", "text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:1: not UTF-8 text: byte 0xe9 at column 27"):
        open_corpus(corpus_file, cache_dir=tmp_path / "collections")
    assert list((tmp_path / "collections").iterdir()) == []


# === Evaluation outputs: the run cache, names that collide or carry markup, cache leftovers =========


def _unwrapped(text: str) -> str:
    """``text`` without any whitespace: rich wraps a logged line anywhere, even inside a path."""
    return "".join(text.split())


def _evaluate_cached(dataset: Path, out: Path, cache: Path, *models: str) -> list[str]:
    args = ["evaluate", "--dataset", str(dataset), "--k", "10", "--measures", "nDCG@10,R@5", "--out", str(out)]
    return [*args, "--cache-dir", str(cache), *(a for m in models or ("bm25s",) for a in ("--model", m))]


@pytest.mark.parametrize("damage", ["cut at a line", "negated scores", "random bytes"])
def test_a_damaged_cached_run_is_recomputed_with_one_warning(toy_copy: Path, tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    first = runner.invoke(app, _evaluate_cached(toy_copy, tmp_path / "a", cache))
    assert first.exit_code == 0, first.output
    (run_path,) = cache.glob("*/run.trec")
    lines = run_path.read_text().splitlines(keepends=True)
    if damage == "cut at a line":
        run_path.write_text("".join(lines[: len(lines) // 2]))
    elif damage == "negated scores":
        run_path.write_text(
            "".join(" ".join([*ln.split()[:4], repr(-float(ln.split()[4])), ln.split()[5]]) + "\n" for ln in lines)
        )
    else:
        run_path.write_bytes(os.urandom(run_path.stat().st_size))
    before = _snapshot(toy_copy)

    second = runner.invoke(app, _evaluate_cached(toy_copy, tmp_path / "b", cache))
    assert second.exit_code == 0, second.output
    assert "Traceback" not in second.output
    warnings = [line for line in second.output.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, second.output  # one warning, the first line after the dataset's summary and rules
    lines = second.output.splitlines()
    before_warning = _unwrapped("\n".join(lines[: lines.index(warnings[0])]))
    assert "toy(test):" in before_warning and "forbinarymeasures(default)" in before_warning
    assert _unwrapped(
        f"run cache entry {run_path.parent} is damaged: run.trec does not match the sha256 in key.json; "
        "recomputing bm25s on toy"
    ) in _unwrapped(second.output)
    assert "0 cached, 1 computed" in second.output
    assert _snapshot(toy_copy) == before
    results = [json.loads((tmp_path / d / "results.json").read_text())["results"] for d in ("a", "b")]
    assert results[0] == results[1]  # the damaged run was not scored
    third = runner.invoke(app, _evaluate_cached(toy_copy, tmp_path / "c", cache))
    assert "1 cached, 0 computed" in third.output and "WARNING" not in third.output  # the entry was rewritten


def test_two_models_whose_names_slug_alike_keep_their_own_runs(
    toy_copy: Path, tmp_path: Path, tiny_st_dir: Path
) -> None:
    # "models/m" and "models__m" both slugged to ...models__m: the second model's runs overwrote the first's.
    a, b = tmp_path / "models" / "m", tmp_path / "models__m"
    shutil.copytree(tiny_st_dir, a)
    shutil.copytree(tiny_st_dir, b)
    args = _evaluate_cached(toy_copy, tmp_path / "out", tmp_path / "cache", str(a), str(b))
    result = runner.invoke(app, [*args, "--no-cache"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    paths = {model: data["per_query"][model]["toy"] for model in (str(a), str(b))}
    assert len(set(paths.values())) == 2 and len({data["models"][m]["slug"] for m in paths}) == 2
    for path in paths.values():
        assert (tmp_path / "out" / path).is_file() and (tmp_path / "out" / path).with_name("run.trec").is_file()
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == sorted(
        Path(p).parts[1] for p in paths.values()
    )


def test_a_hostile_dataset_name_is_escaped_in_results_md_and_the_report(toy_dir: Path, tmp_path: Path) -> None:
    name = "a|b<script>"
    dataset = tmp_path / name
    shutil.copytree(toy_dir, dataset)
    before = _snapshot(dataset)
    result = runner.invoke(app, [*_evaluate_cached(dataset, tmp_path / "out", tmp_path / "cache"), "--no-cache"])
    assert result.exit_code == 0, result.output
    assert _snapshot(dataset) == before
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "<script" not in markdown and "| a\\|b&lt;script&gt; |" in markdown
    for table_line in (ln for ln in markdown.splitlines() if ln.startswith("|")):
        assert table_line.replace("\\|", "").count("|") == 3  # dataset and one model: no cell split in two
    assert json.loads((tmp_path / "out" / "results.json").read_text())["datasets"].keys() == {name}
    assert all(
        ".." not in p.name and p.parent.parent == tmp_path / "out" / "runs"
        for p in (tmp_path / "out" / "runs").glob("*/*")
    )

    report = runner.invoke(app, ["report", str(tmp_path / "out")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "out" / "report" / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "a|b&lt;script&gt;" in page


def test_an_embedding_shard_left_by_a_killed_writer_is_removed_at_once(tmp_path: Path) -> None:
    from retrodistill.data.embeddings import EmbeddingCache
    from retrodistill.temporaries import host_tag

    def cache() -> EmbeddingCache:
        return EmbeddingCache.open(tmp_path, {"id": "m"}, "sha256:c", documents=4, shard_size=2)

    shards = cache().path / "shards"
    shards.mkdir()
    dead = shards / f".000000.npy.{_dead_pid()}-{host_tag()}-ab12cd34.tmp"  # seconds old, its writer gone
    live = shards / f".000001.npy.{os.getpid()}-{host_tag()}-ab12cd34.tmp"
    for path in (dead, live):
        path.write_bytes(b"half a shard")
    cache()
    assert not dead.exists() and live.exists()
