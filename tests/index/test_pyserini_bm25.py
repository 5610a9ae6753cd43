from __future__ import annotations

import gc
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from conftest import shared_path

from retrodistill.data.collections import load_beir
from retrodistill.index import pyserini_bm25
from retrodistill.index.pyserini_bm25 import INSTALL_HINT, JavaRuntime, PyseriniBM25, choose_java, jvm_options

HAVE_PYSERINI = all(importlib.util.find_spec(m) is not None for m in ("pyserini", "jnius"))
needs_pyserini = pytest.mark.skipif(
    not HAVE_PYSERINI, reason=f"pyserini is not installed (the pyserini extra: {INSTALL_HINT})"
)


def _toy_corpus(toy_dir: Path) -> tuple[list[str], list[str], list[str]]:
    collection = load_beir(toy_dir, "test")
    doc_ids = list(collection.corpus)
    queries = [json.loads(line)["text"] for line in (toy_dir / "queries.jsonl").read_text().splitlines() if line]
    return doc_ids, [collection.corpus[d].joined() for d in doc_ids], queries


def _lucene_bm25(tf: int, dl: int, avgdl: float, n: int, big_n: int, k1: float, b: float) -> float:
    """One term's Lucene BM25 score (Lucene ≥ 8: no ``k1 + 1`` in the numerator)."""
    idf = math.log(1 + (big_n - n + 0.5) / (n + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))


def _release(home: Path, text: str | None) -> Path:
    home.mkdir(parents=True)
    if text is not None:
        (home / "release").write_text(text)
    return home


# --- no pyserini needed ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["pyserini", "jnius_config"])
def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes ``import module`` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'retrodistill\[pyserini\]'") as info:
        PyseriniBM25().index(["d1"], ["some text"])
    if HAVE_PYSERINI:  # without the extra, the missing pyserini is the one named
        assert f"({module} is not installed)" in str(info.value)


def test_choose_java_takes_first_java_21_or_newer(tmp_path: Path) -> None:
    old = _release(tmp_path / "jdk17", 'JAVA_VERSION="17.0.15"\n')
    ancient = _release(tmp_path / "jdk8", 'JAVA_VERSION="1.8.0_292"\n')
    bare = _release(tmp_path / "bare", None)
    new = _release(tmp_path / "jdk21", 'IMPLEMENTOR="x"\nJAVA_VERSION="21.0.8"\nMODULES="java.base jdk.unsupported"\n')
    newer = _release(tmp_path / "jdk25", 'JAVA_VERSION="25.0.2"\n')

    runtime = choose_java([("a", old), ("b", ancient), ("c", bare), ("d", new), ("e", newer)])

    assert runtime == JavaRuntime(new, 21, frozenset({"java.base", "jdk.unsupported"}))
    assert JavaRuntime.read(ancient).version == 8
    assert JavaRuntime.read(newer).modules is None


def test_choose_java_lists_what_it_found_and_names_the_extra(tmp_path: Path) -> None:
    old = _release(tmp_path / "jdk17", 'JAVA_VERSION="17.0.15"\n')
    bare = _release(tmp_path / "bare", None)
    with pytest.raises(RuntimeError) as info:
        choose_java([("JAVA_HOME", old), ("java on PATH", bare)])
    message = str(info.value)
    assert f"JAVA_HOME ({old}): Java 17" in message
    assert f"java on PATH ({bare}): no readable release file" in message
    assert INSTALL_HINT in message
    with pytest.raises(RuntimeError, match="no Java"):
        choose_java([])


def test_jvm_options_drop_only_modules_the_runtime_lacks() -> None:
    options = ["--add-modules=jdk.incubator.vector", "-Xmx2g", "--add-modules=java.sql,jdk.incubator.vector"]
    assert jvm_options(options, frozenset({"java.base", "java.sql"})) == ["-Xmx2g", "--add-modules=java.sql"]
    assert jvm_options(options, frozenset({"java.sql", "jdk.incubator.vector"})) == options
    assert jvm_options(options, None) == options  # modules unknown: keep everything


@pytest.mark.parametrize(
    ("doc_ids", "texts", "message"),
    [
        (["d1", "d2"], ["only one"], "2 ids but 1 texts"),
        ([], [], "empty corpus"),
        (["d1", ""], ["a", "b"], "document 1: id must be a non-empty string"),
        (["d1", "d2", "d1"], ["a", "b", "c"], r"document 2: duplicate id 'd1' \(first at position 0\)"),
    ],
)
def test_bad_corpus_is_named_before_java_starts(doc_ids: list[str], texts: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PyseriniBM25().index(doc_ids, texts)


def test_search_before_index_and_bad_threads() -> None:
    with pytest.raises(RuntimeError, match="index"):
        PyseriniBM25().search(["q"], k=1)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        PyseriniBM25(threads=0).index(["d1"], ["text"])


# --- pyserini and Java ----------------------------------------------------------------------------------------------


@needs_pyserini
@pytest.mark.parametrize(("k1", "b"), [(0.9, 0.4), (1.2, 0.75)])
def test_scores_are_lucene_bm25(tmp_path: Path, k1: float, b: float) -> None:
    # Analysed lengths 2, 2 and 4 (no stopwords here), so avgdl = 8 / 3; each query term is in 1 or 2 docs.
    retriever = PyseriniBM25(k1=k1, b=b, index_dir=tmp_path)
    retriever.index(["a", "b", "c"], ["apple banana", "apple cherry", "cherry date grape melon"])
    banana, cherry = retriever.search(["banana", "cherry"], k=10)
    avgdl = 8 / 3

    assert [d for d, _ in banana] == ["a"]
    assert banana[0][1] == pytest.approx(_lucene_bm25(1, 2, avgdl, 1, 3, k1, b), abs=1e-4)
    assert [d for d, _ in cherry] == ["b", "c"]  # the shorter document first
    assert cherry[0][1] == pytest.approx(_lucene_bm25(1, 2, avgdl, 2, 3, k1, b), abs=1e-4)
    assert cherry[1][1] == pytest.approx(_lucene_bm25(1, 4, avgdl, 2, 3, k1, b), abs=1e-4)


@needs_pyserini
def test_toy_results_agree_with_bm25s_and_are_sorted(toy_dir: Path, tmp_path: Path) -> None:
    from retrodistill.index.bm25 import BM25Retriever

    doc_ids, texts, queries = _toy_corpus(toy_dir)
    lucene = PyseriniBM25(index_dir=tmp_path, threads=3)  # three input files, three indexing threads
    lucene.index(doc_ids, texts)
    reference = BM25Retriever()
    reference.index(doc_ids, texts)

    ours, theirs = lucene.search(queries, k=len(doc_ids)), reference.search(queries, k=len(doc_ids))
    for query, got, expected in zip(queries, ours, theirs, strict=True):
        assert got, query
        scores = [s for _, s in got]
        assert scores == sorted(scores, reverse=True)
        # Same analyser effect and formula on this corpus: same documents, scores to Anserini's 4 decimals.
        assert dict(got) == pytest.approx(dict(expected), abs=1e-4), query

    top2 = lucene.search(queries, k=2)
    assert [row[:2] for row in ours] == top2


@needs_pyserini
def test_stemming_stopwords_and_empty_queries(tmp_path: Path) -> None:
    retriever = PyseriniBM25(index_dir=tmp_path)
    retriever.index(["d1", "d2"], ["Tumor growth in the liver", "Heart rate of runners"])
    tumours, running, stop, empty = retriever.search(["tumors", "running hearts", "the of and", ""], k=5)
    assert [d for d, _ in tumours] == ["d1"]  # Porter: tumors -> tumor
    assert [d for d, _ in running] == ["d2"]
    assert stop == [] and empty == []


@needs_pyserini
def test_ids_map_back_exactly_and_empty_documents_are_skipped(tmp_path: Path) -> None:
    doc_ids = ["doc 1", "ü/2", "10", "010", 'say "hi"', "blank", "nbsp"]
    words = ["alpha", "bravo", "charlie", "delta", "echo"]
    retriever = PyseriniBM25(index_dir=tmp_path)
    # Anserini skips contents that Java's trim() empties; U+00A0 is not trimmed, so "nbsp" is indexed.
    retriever.index(doc_ids, [*words, " \t\n", "\u00a0"])

    hits = retriever.search(words, k=3)

    assert [[d for d, _ in row] for row in hits] == [[d] for d in doc_ids[:5]]
    manifest = pyserini_bm25.read_manifest(retriever.index_path)  # type: ignore[arg-type]
    assert manifest["counts"] == {"documents": 7, "indexed": 6}


@needs_pyserini
def test_existing_index_is_reused_and_a_new_corpus_gets_its_own(
    toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc_ids, texts, queries = _toy_corpus(toy_dir)
    first = PyseriniBM25(index_dir=tmp_path)
    first.index(doc_ids, texts)
    expected = first.search(queries, k=5)
    built = first.index_path
    assert built is not None and built.parent == tmp_path
    lucene_files = sorted(p.name for p in (built / "lucene").iterdir())

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt an index that exists")

    monkeypatch.setattr(PyseriniBM25, "_build", no_build)
    again = PyseriniBM25(index_dir=tmp_path)
    again.index(doc_ids, texts)
    assert again.index_path == built
    assert again.search(queries, k=5) == expected
    assert sorted(p.name for p in (built / "lucene").iterdir()) == lucene_files

    changed = [*texts[:-1], texts[-1] + " extra"]
    with pytest.raises(AssertionError, match="rebuilt"):
        PyseriniBM25(index_dir=tmp_path).index(doc_ids, changed)  # another corpus: another folder
    monkeypatch.undo()
    other = PyseriniBM25(index_dir=tmp_path)
    other.index(doc_ids, changed)
    assert other.index_path != built
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([built.name, other.index_path.name])  # type: ignore[union-attr]


@needs_pyserini
def test_cached_index_of_another_corpus_is_refused(toy_dir: Path, tmp_path: Path) -> None:
    doc_ids, texts, _ = _toy_corpus(toy_dir)
    retriever = PyseriniBM25(index_dir=tmp_path)
    retriever.index(doc_ids, texts)
    manifest = retriever.index_path / "manifest.json"  # type: ignore[operator]
    manifest.write_text(manifest.read_text().replace("sha256:", "sha256:0"))
    with pytest.raises(ValueError, match="another corpus"):
        PyseriniBM25(index_dir=tmp_path).index(doc_ids, texts)


@needs_pyserini
def test_temporary_index_is_removed_with_the_retriever(toy_dir: Path) -> None:
    doc_ids, texts, queries = _toy_corpus(toy_dir)
    retriever = PyseriniBM25()
    retriever.index(doc_ids, texts)
    path = retriever.index_path
    assert path is not None and (path / "lucene").is_dir()
    assert retriever.search(queries[:1], k=1)[0]
    retriever.close()
    assert not path.parent.exists() and retriever.index_path is None

    dropped = PyseriniBM25()
    dropped.index(doc_ids, texts)
    path = dropped.index_path
    assert path is not None and path.is_dir()
    del dropped
    gc.collect()
    assert not path.parent.exists()


@pytest.mark.slow
@needs_pyserini
def test_scifact_matches_pyserini_2cr(tmp_path: Path) -> None:
    from retrodistill.evaluate.metrics import compute_metrics

    collection = load_beir(shared_path("data", "beir", "scifact"), "test")
    doc_ids = list(collection.corpus)
    retriever = PyseriniBM25(k1=0.9, b=0.4, index_dir=tmp_path)
    retriever.index(doc_ids, [collection.corpus[d].joined() for d in doc_ids])
    query_ids = list(collection.queries)
    hits = retriever.search([collection.queries[q] for q in query_ids], k=1000)
    run = {qid: dict(row) for qid, row in zip(query_ids, hits, strict=True)}

    ndcg = compute_metrics(collection.qrels, run, ["nDCG@10"]).aggregate["nDCG@10"]

    assert ndcg == pytest.approx(0.6789, abs=0.002)  # Pyserini 2CR, BEIR (v1.0.0) SciFact, BM25 flat


@needs_pyserini
def test_anserini_info_lines_stay_off_the_console(tmp_path: Path) -> None:
    """Run in a fresh process (the JVM starts once per process): stdout holds only what we print."""
    import subprocess
    import sys

    script = (
        "from retrodistill.index.pyserini_bm25 import PyseriniBM25\n"
        f"r = PyseriniBM25(index_dir={str(tmp_path / 'idx')!r})\n"
        "r.index(['d1', 'd2'], ['cancer tumour', 'heart artery'])\n"
        "print('HITS', r.search(['cancer'], 1))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().startswith("HITS"), run.stdout[-2000:]
    # Neither Anserini's log4j INFO lines nor SLF4J's "SLF4J(I): Connected with provider ..." line.
    assert " INFO " not in run.stdout + run.stderr and "SLF4J(I)" not in run.stderr, run.stderr[-2000:]


@needs_pyserini
def test_multifield_indexes_titles_as_their_own_field(tmp_path: Path) -> None:
    retriever = PyseriniBM25(index_dir=tmp_path, multifield=True)
    with pytest.raises(ValueError, match="one title per document"):
        retriever.index(["d1", "d2"], ["heart artery", "cancer tumour"])
    retriever.index(["d1", "d2"], ["heart artery", "cancer tumour"], titles=["oncology", "cardiology"])
    assert retriever.index_path is not None and retriever.index_path.name.startswith("bm25-multifield-")
    # A title term is found through the title field; flat indexing of the same texts alone would miss it.
    assert [d for d, _ in retriever.search(["oncology"], 2)[0]] == ["d1"]
    assert [d for d, _ in retriever.search(["tumour"], 2)[0]] == ["d2"]
    flat = PyseriniBM25(index_dir=tmp_path)
    flat.index(["d1", "d2"], ["heart artery", "cancer tumour"])
    assert flat.search(["oncology"], 2) == [[]]
    assert flat.index_path is not None and flat.index_path != retriever.index_path
