"""The dataset registry: specs, rules, and load_entry on real and tiny local data. Never downloads."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import shared_path

from retrodistill.data.collections import load_beir
from retrodistill.data.download import DatasetDownloadError
from retrodistill.data.registry import (
    CQADUPSTACK_FORUMS,
    DATASETS,
    SuiteEntry,
    UnknownDatasetError,
    describe_rules,
    load_entry,
    load_trec_dl,
    registry_table,
)

BEIR_NAMES = (
    "msmarco trec-covid nfcorpus bioasq nq hotpotqa fiqa signal1m trec-news robust04 arguana webis-touche2020 "
    "cqadupstack quora dbpedia-entity scidocs fever climate-fever scifact"
).split()
NOT_HOSTED = {"bioasq", "signal1m", "trec-news", "robust04"}
_real_urlopen = urllib.request.urlopen  # saved before the autouse fixture replaces it


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network fails the test (tests that serve file:// URLs undo this)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _write_beir(folder: Path, docs: dict[str, str], queries: dict[str, str], qrels: dict[str, list[str]]) -> Path:
    """A BEIR-layout folder; ``qrels`` maps a split to ``"qid docid grade"`` lines."""
    (folder / "qrels").mkdir(parents=True)
    lines = [json.dumps({"_id": i, "title": "", "text": t}) for i, t in docs.items()]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    lines = [json.dumps({"_id": i, "text": t}) for i, t in queries.items()]
    (folder / "queries.jsonl").write_text("\n".join(lines) + "\n")
    for split, rows in qrels.items():
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _trec_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Parse ``qid Q0 docid grade`` independently of the code under test."""
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc_id, grade = line.split()
        qrels.setdefault(qid, {})[doc_id] = int(grade)
    return qrels


# --- the registry itself ---------------------------------------------------------------------------


def test_registry_holds_beir_msmarco_and_trec_dl() -> None:
    assert len(BEIR_NAMES) == 19  # the 18 BEIR datasets + MS MARCO
    assert set(DATASETS) == {*BEIR_NAMES, "msmarco-dev-small", "trec-dl-2019", "trec-dl-2020"}
    assert all(name == spec.name for name, spec in DATASETS.items())


@pytest.mark.parametrize("name", BEIR_NAMES)
def test_every_hosted_beir_dataset_has_url_and_md5(name: str) -> None:
    spec = DATASETS[name]
    assert spec.kind == "beir" and spec.folder == name
    assert spec.default_split in spec.splits
    if name in NOT_HOSTED:
        assert not spec.hosted and spec.urls == ()
        assert "not redistributable" in spec.note and "github.com/beir-cellar/beir" in spec.note
        return
    assert spec.hosted
    assert spec.urls == (f"https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip",)
    assert re.fullmatch(r"[0-9a-f]{32}", spec.md5s[spec.urls[0]] or "")


def test_md5s_are_beirs_published_values() -> None:
    # Spot checks against BEIR's README table, typed in independently of download.py.
    assert DATASETS["scifact"].md5s[DATASETS["scifact"].urls[0]] == "5f7d1de60b170fc8027bb7898e2efca1"
    assert DATASETS["cqadupstack"].md5s[DATASETS["cqadupstack"].urls[0]] == "4e41456d7df8ee7760a7f866133bda78"
    assert len({spec.md5s[spec.urls[0]] for spec in DATASETS.values() if spec.kind == "beir" and spec.hosted}) == 15


@pytest.mark.parametrize(("name", "local"), [("trec-dl-2019", "dl19-passage"), ("trec-dl-2020", "dl20-passage")])
def test_trec_dl_qrels_md5_matches_the_official_file(name: str, local: str) -> None:
    spec = DATASETS[name]
    year = name[-4:]
    qrels_url = f"https://trec.nist.gov/data/deep/{year}qrels-pass.txt"
    assert qrels_url in spec.urls
    assert any(url.endswith(f"/msmarco-test{year}-queries.tsv.gz") for url in spec.urls)
    copy = shared_path("data", "msmarco", "official", f"qrels.{local}.txt")
    assert spec.md5s[qrels_url] == _md5(copy)


def test_identical_ids_are_dropped_for_arguana_and_quora_only() -> None:
    assert {name for name, spec in DATASETS.items() if spec.ignore_identical_ids} == {"arguana", "quora"}


def test_relevance_thresholds() -> None:
    assert {name for name, spec in DATASETS.items() if spec.rel_threshold != 1} == {"trec-dl-2019", "trec-dl-2020"}
    assert DATASETS["trec-dl-2019"].rel_threshold == 2
    # BEIR's msmarco "test" split is TREC DL 2019, so NIST's passage rule applies to it too.
    assert DATASETS["msmarco"].threshold_for("test") == 2
    assert DATASETS["msmarco"].threshold_for("dev") == 1


def test_registry_table_rows() -> None:
    rows = {row["name"]: row for row in registry_table()}
    assert list(rows) == list(DATASETS)
    expected_keys = {"name", "kind", "splits", "default_split", "ignore_identical_ids", "rel_threshold", "hosted"}
    assert set(rows["scifact"]) == expected_keys | {"note"}
    assert rows["robust04"]["hosted"] is False and rows["scifact"]["hosted"] is True
    assert rows["quora"]["ignore_identical_ids"] is True and rows["nq"]["ignore_identical_ids"] is False
    assert rows["trec-dl-2020"]["rel_threshold"] == 2 and rows["trec-dl-2020"]["kind"] == "trec-dl"
    assert rows["msmarco"]["default_split"] == "dev" and rows["msmarco"]["splits"] == "train, dev, test"


def test_describe_rules() -> None:
    def entry(name: str, same_ids: bool = False, threshold: int = 1) -> SuiteEntry:
        return SuiteEntry(name, [], same_ids, threshold, "test")

    entries = [entry("scifact"), entry("arguana", True), entry("quora", True), entry("trec-dl-2019", threshold=2)]
    assert describe_rules(entries) == (
        "identical query/doc ids dropped: arguana, quora; kept: scifact, trec-dl-2019; "
        "binary measures count grades ≥ 1: scifact, arguana, quora; ≥ 2: trec-dl-2019"
    )
    # Both rules are stated even where every entry follows the defaults: a header always says them.
    assert describe_rules([entry("scifact"), entry("nfcorpus")]) == (
        "identical query/doc ids kept: scifact, nfcorpus; binary measures count grades ≥ 1: scifact, nfcorpus"
    )
    three = describe_rules([entry("a", threshold=3), entry("b", threshold=2)])
    assert three == "identical query/doc ids kept: a, b; binary measures count grades ≥ 2: b; ≥ 3: a"


# --- load_entry ------------------------------------------------------------------------------------


def test_load_entry_real_scifact() -> None:
    folder = shared_path("data", "beir", "scifact")
    entry = load_entry("scifact", data_dir=folder.parent, download=False)
    assert (entry.name, entry.split, entry.rel_threshold, entry.ignore_identical_ids) == ("scifact", "test", 1, False)
    (collection,) = entry.collections
    assert collection.name == "scifact"
    assert (len(collection.corpus), len(collection.queries)) == (5183, 300)  # PROVENANCE.md
    assert sum(len(docs) for docs in collection.qrels.values()) == 339


def test_load_entry_folder_path(toy_dir: Path) -> None:
    entry = load_entry(str(toy_dir))
    assert (entry.name, entry.split, entry.rel_threshold, entry.ignore_identical_ids) == ("toy", "test", 1, False)
    assert entry.collections[0].qrels == load_beir(toy_dir, "test").qrels
    train = load_entry(str(toy_dir), "train", rel_threshold=2)
    assert (train.split, train.rel_threshold) == ("train", 2)
    assert train.collections[0].qrels == load_beir(toy_dir, "train").qrels


def test_named_entry_takes_its_rules_from_the_registry(toy_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(toy_dir, tmp_path / "arguana")
    entry = load_entry("arguana", data_dir=tmp_path, download=False)
    assert (entry.name, entry.ignore_identical_ids, entry.rel_threshold) == ("arguana", True, 1)
    assert load_entry("arguana", data_dir=tmp_path, rel_threshold=3, download=False).rel_threshold == 3


def test_unknown_split_is_refused_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scifact has no split 'dev'; its splits: train, test"):
        load_entry("scifact", "dev", tmp_path / "nothing-here")


def test_msmarco_dev_small_reads_the_msmarco_folders_dev_split(tmp_path: Path) -> None:
    docs = {"7": "seven", "8": "eight", "9": "nine"}
    queries = {"100": "q dev", "200": "q test"}
    _write_beir(tmp_path / "msmarco", docs, queries, {"dev": ["100\t7\t1"], "test": ["200\t8\t2", "200\t9\t1"]})
    entry = load_entry("msmarco-dev-small", data_dir=tmp_path, download=False)
    assert (entry.name, entry.split, entry.rel_threshold) == ("msmarco-dev-small", "dev", 1)
    assert entry.collections[0].name == "msmarco-dev-small"
    assert entry.collections[0].queries == {"100": "q dev"}
    with pytest.raises(ValueError, match="its splits: dev"):
        load_entry("msmarco-dev-small", "test", tmp_path)
    test = load_entry("msmarco", "test", tmp_path, download=False)
    assert (test.rel_threshold, test.collections[0].qrels) == (2, {"200": {"8": 2, "9": 1}})


def _fake_cqadupstack(root: Path) -> Path:
    for forum in CQADUPSTACK_FORUMS:
        docs = {f"{forum}-d1": f"{forum} post one", f"{forum}-d2": f"{forum} post two"}
        _write_beir(
            root / "cqadupstack" / forum,
            docs,
            {f"{forum}-q": f"{forum} question"},
            {"test": [f"{forum}-q\t{forum}-d2\t1"]},
        )
    return root


def test_cqadupstack_is_one_entry_of_twelve_forums(tmp_path: Path) -> None:
    data = _fake_cqadupstack(tmp_path / "data")
    entry = load_entry("cqadupstack", data_dir=data, download=False)
    assert entry.name == "cqadupstack" and len(entry.collections) == 12
    assert [c.name for c in entry.collections] == [f"cqadupstack/{forum}" for forum in CQADUPSTACK_FORUMS]
    for forum, collection in zip(CQADUPSTACK_FORUMS, entry.collections, strict=True):
        assert set(collection.corpus) == {f"{forum}-d1", f"{forum}-d2"}
        assert collection.qrels == {f"{forum}-q": {f"{forum}-d2": 1}}
    single = load_entry("cqadupstack/gis", data_dir=data, download=False)
    assert single.name == "cqadupstack/gis" and [c.name for c in single.collections] == ["cqadupstack/gis"]


def test_cqadupstack_with_a_missing_forum_names_it(tmp_path: Path) -> None:
    data = _fake_cqadupstack(tmp_path / "data")
    shutil.rmtree(data / "cqadupstack" / "wordpress")
    with pytest.raises(FileNotFoundError, match="wordpress"):
        load_entry("cqadupstack", data_dir=data)  # the archive folder exists, so nothing is downloaded


def test_not_hosted_dataset_explains_how_to_obtain_it(tmp_path: Path, toy_dir: Path) -> None:
    for download in (True, False):
        with pytest.raises(DatasetDownloadError, match="does not distribute 'robust04'") as info:
            load_entry("robust04", data_dir=tmp_path / "data", download=download)
        message = str(info.value)
        assert "trec.nist.gov/data/cd45" in message and str(tmp_path / "data" / "robust04") in message
    shutil.copytree(toy_dir, tmp_path / "data" / "robust04")
    entry = load_entry("robust04", data_dir=tmp_path / "data")
    assert entry.name == "robust04" and entry.collections[0].queries
    assert "not redistributable" in entry.note


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("scifakt", "scifact"), ("trec-dl-2091", "trec-dl-2019"), ("cqadupstack/andriod", "cqadupstack/android")],
)
def test_unknown_name_lists_close_matches(typo: str, suggestion: str, tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError, match=f"did you mean [^?]*{re.escape(suggestion)}") as info:
        load_entry(typo, data_dir=tmp_path)
    assert isinstance(info.value, ValueError) and "registered: msmarco, trec-covid" in str(info.value)


# --- TREC DL ---------------------------------------------------------------------------------------


def _passage_corpus(folder: Path, qrels: dict[str, dict[str, int]], skip_query: str | None = None) -> Path:
    """A fake msmarco folder: one passage per judged id (except ``skip_query``'s) plus two unjudged ones."""
    pids = {pid for docs in qrels.values() for pid in docs} - set(qrels.get(skip_query or "", {}))
    folder.mkdir(parents=True)
    lines = [json.dumps({"_id": pid, "title": "", "text": f"passage {pid}"}) for pid in sorted(pids)]
    lines += [json.dumps({"_id": pid, "title": "", "text": "unjudged"}) for pid in ("x1", "x2")]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _official(name: str) -> Path:
    return shared_path("data", "msmarco", "official", name)


def test_trec_dl_2019_from_local_official_files(tmp_path: Path) -> None:
    qrels_file, topics_file = _official("qrels.dl19-passage.txt"), _official("topics.dl19-passage.txt")
    expected = _trec_qrels(qrels_file)
    data = tmp_path / "data"
    _passage_corpus(data / "msmarco", expected)
    (data / "msmarco" / "official").mkdir()  # the layout of shared/data/msmarco, by symlink
    (data / "msmarco" / "official" / qrels_file.name).symlink_to(qrels_file)
    (data / "msmarco" / "official" / topics_file.name).symlink_to(topics_file)

    entry = load_entry("trec-dl-2019", data_dir=data, download=False)
    assert (entry.name, entry.split, entry.rel_threshold, entry.ignore_identical_ids) == (
        "trec-dl-2019",
        "test",
        2,
        False,
    )
    (collection,) = entry.collections
    assert collection.qrels == expected  # graded 0-3, grade-0 judgments kept
    assert {g for docs in collection.qrels.values() for g in docs.values()} == {0, 1, 2, 3}
    assert len(collection.queries) == 43 and set(collection.queries) == set(expected)
    assert collection.unknown_judgments == {"queries": 0, "documents": 0}
    assert collection.queries["156493"] == "do goldfish grow"
    assert load_entry("trec-dl-2019", data_dir=data, rel_threshold=1, download=False).rel_threshold == 1


def test_trec_dl_2020_keeps_only_judged_queries(tmp_path: Path) -> None:
    qrels_file, topics_file = _official("qrels.dl20-passage.txt"), _official("topics.dl20.txt")
    expected = _trec_qrels(qrels_file)
    topics = dict(line.split("\t", 1) for line in topics_file.read_text().splitlines())
    assert len(topics) == 200 and len(expected) == 54
    dropped = sorted(expected)[0]  # its passages are left out of the corpus, so it cannot be evaluated
    corpus = _passage_corpus(tmp_path / "corpus", expected, skip_query=dropped)

    entry = load_trec_dl("trec-dl-2020", tmp_path / "empty", qrels=qrels_file, topics=topics_file.parent, corpus=corpus)
    (collection,) = entry.collections
    removed = set(expected[dropped])  # some of these passages are judged for other queries too
    assert set(collection.queries) == {qid for qid, docs in expected.items() if set(docs) - removed}
    assert dropped not in collection.queries and len(collection.queries) == 53
    assert all(collection.queries[qid] == topics[qid] for qid in collection.queries)
    lost = sum(1 for docs in expected.values() for pid in docs if pid in removed)
    assert collection.unknown_judgments == {"queries": 0, "documents": lost}
    assert collection.qrels == {
        q: {p: g for p, g in d.items() if p not in removed} for q, d in expected.items() if q in collection.queries
    }
    assert entry.rel_threshold == 2


def test_trec_dl_missing_files_say_what_to_put_where(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(FileNotFoundError) as info:
        load_entry("trec-dl-2019", data_dir=data, download=False)
    message = str(info.value)
    assert "missing corpus, qrels, topics" in message
    for needed in ("2019qrels-pass.txt", "msmarco-test2019-queries.tsv.gz", str(data / "msmarco"), "msmarco.zip"):
        assert needed in message
    assert not data.exists()


def _serve_trec_dl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topics_md5: str | None = None) -> Path:
    """Serve the official qrels and a gzipped copy of the topics as file:// URLs; return the data dir."""
    qrels_file, topics_file = _official("qrels.dl19-passage.txt"), _official("topics.dl19-passage.txt")
    site = tmp_path / "site"
    site.mkdir()
    shutil.copyfile(qrels_file, site / "2019qrels-pass.txt")
    with gzip.open(site / "msmarco-test2019-queries.tsv.gz", "wb") as out:
        out.write(topics_file.read_bytes())
    spec = DATASETS["trec-dl-2019"]
    files = tuple(
        f if f.role == "archive" else dataclasses.replace(f, url=(site / f.file).as_uri()) for f in spec.downloads
    )
    topics_gz = site / "msmarco-test2019-queries.tsv.gz"
    files = tuple(dataclasses.replace(f, md5=topics_md5 or _md5(topics_gz)) if f.role == "topics" else f for f in files)
    monkeypatch.setitem(DATASETS, "trec-dl-2019", dataclasses.replace(spec, downloads=files))
    monkeypatch.setattr(urllib.request, "urlopen", _real_urlopen)
    data = tmp_path / "data"
    _passage_corpus(data / "msmarco", _trec_qrels(qrels_file))
    return data


def test_trec_dl_downloads_missing_files_and_checks_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _serve_trec_dl(tmp_path, monkeypatch)
    entry = load_entry("trec-dl-2019", data_dir=data)
    assert len(entry.collections[0].queries) == 43
    assert sorted(p.name for p in (data / "trec-dl").iterdir()) == [
        "2019qrels-pass.txt",
        "msmarco-test2019-queries.tsv.gz",
    ]
    assert not (data / "msmarco" / "2019qrels-pass.txt").exists()  # the corpus folder is left alone

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    again = load_entry("trec-dl-2019", data_dir=data)  # found in DATA_DIR/trec-dl this time
    assert again.collections[0].qrels == entry.collections[0].qrels


def test_trec_dl_md5_mismatch_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _serve_trec_dl(tmp_path, monkeypatch, topics_md5="0" * 32)
    with pytest.raises(DatasetDownloadError, match=r"does not match the published 0{32}.*Put msmarco-test2019") as info:
        load_entry("trec-dl-2019", data_dir=data)
    assert "Put 2019qrels" not in str(info.value)  # that one arrived
    assert [p.name for p in (data / "trec-dl").iterdir()] == ["2019qrels-pass.txt"]  # no partial topics file


def test_trec_dl_offline_error_says_what_to_put_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data = tmp_path / "data"
    _passage_corpus(data / "msmarco", {"1": {"p1": 2}})
    with pytest.raises(DatasetDownloadError) as info:
        load_entry("trec-dl-2019", data_dir=data)
    message = str(info.value)
    assert "https://trec.nist.gov/data/deep/2019qrels-pass.txt" in message and "name resolution" in message
    assert "Put 2019qrels-pass.txt (or qrels.dl19-passage.txt)" in message and str(data / "trec-dl") in message
