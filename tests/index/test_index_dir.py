"""``evaluate`` with an approximate index, and a saved one: reused without encoding the corpus, or refused."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app
from retrodistill.data.collections import Collection, load_beir
from retrodistill.evaluate.retrieval import encode_and_search, load_model
from retrodistill.evaluate.suite import collection_entry, evaluate_suite
from retrodistill.index.faiss_factory import FaissFactory

MEASURES = ("nDCG@10", "R@5")
#: Two lists, both visited: exact search on the toy corpus, but trained (IVF) and saved.
IVF = {"factory": "IVF2,Flat", "nprobe": 2}

runner = CliRunner()


@pytest.fixture(scope="module")
def loaded(tiny_st_dir: Path) -> Any:
    return load_model(tiny_st_dir, device="cpu")


def _counting(calls: dict[str, int], key: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, counting its calls in ``calls[key]``."""

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls[key] += 1
        return method(*args, **kwargs)

    return spy


@pytest.fixture()
def spied(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, int]]:
    """A copy of the tiny model whose document and query encoders, and FaissFactory.train, count their calls."""
    model = copy.deepcopy(loaded)
    calls = {"documents": 0, "queries": 0, "train": 0}
    model.encode_document = _counting(calls, "documents", model.encode_document)
    model.encode_query = _counting(calls, "queries", model.encode_query)
    monkeypatch.setattr(FaissFactory, "train", _counting(calls, "train", FaissFactory.train))
    return model, calls


def _evaluate(name: str, model: Any, collection: Collection, out: Path, **kwargs: Any) -> Any:
    return evaluate_suite(
        [name],
        [collection_entry(collection)],
        MEASURES,
        out,
        k=10,
        use_cache=False,  # no run cache and no embedding cache: only the saved index can spare the encoding
        encoders={name: model},
        show_progress=False,
        **kwargs,
    )


def test_the_second_evaluate_loads_the_index_without_encoding_documents_or_training(
    tmp_path: Path, toy_dir: Path, tiny_st_dir: Path, spied: tuple[Any, dict[str, int]]
) -> None:
    model, calls = spied
    name, toy = str(tiny_st_dir), load_beir(toy_dir, "test")
    options = {"index": "faiss-factory", "index_params": IVF, "index_dir": tmp_path / "index"}

    first = _evaluate(name, model, toy, tmp_path / "a", **options)
    assert calls["documents"] > 0 and calls["train"] == 1 and calls["queries"] > 0
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["factory"] == "IVF2,Flat" and manifest["vectors"] == len(toy.corpus)
    assert manifest["corpus"] == toy.fingerprints["corpus"]
    assert manifest["encoder"]["id"] == name and manifest["encoder"]["revision"].startswith("sha256:")

    calls.update(documents=0, queries=0, train=0)
    second = _evaluate(name, model, toy, tmp_path / "b", **options)
    assert calls == {"documents": 0, "queries": calls["queries"], "train": 0} and calls["queries"] > 0
    assert second.results == first.results
    runs = [next((tmp_path / d / "runs").rglob("run.trec")).read_text() for d in "ab"]
    assert runs[0] == runs[1]

    exact = _evaluate(name, model, toy, tmp_path / "c")  # both lists visited: the flat index's answer
    assert exact.results == first.results
    assert "index" not in exact.models[name]  # the default adds nothing to the run cache's key
    assert first.models[name]["index"] == {"name": "faiss-factory", **IVF}


@pytest.mark.parametrize("change", ["model", "corpus"])
def test_an_index_of_another_model_or_corpus_is_refused_and_nothing_is_written(
    tmp_path: Path, toy_dir: Path, tiny_st_dir: Path, loaded: Any, change: str
) -> None:
    name, toy = str(tiny_st_dir), load_beir(toy_dir, "test")
    caches = {"cache_dir": tmp_path / "runs-cache", "embedding_cache_dir": tmp_path / "embeddings"}
    index = {"index": "faiss-factory", "index_params": IVF, "index_dir": tmp_path / "index"}
    evaluate_suite(
        [name], [collection_entry(toy)], MEASURES, tmp_path / "a", k=10, show_progress=False, **caches, **index
    )
    before = sorted((p.relative_to(tmp_path).as_posix(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))

    if change == "model":  # the same weights under another name: another model as far as the index knows
        other_name = str(shutil.copytree(tiny_st_dir, tmp_path.parent / f"{tmp_path.name}-other-model"))
        other, collection, expected = other_name, toy, rf"not {other_name}@sha256:\w+ / {toy.fingerprints['corpus']}"
    else:
        edited = shutil.copytree(toy_dir, tmp_path.parent / f"{tmp_path.name}-edited-toy")
        corpus = edited / "corpus.jsonl"
        corpus.write_text(corpus.read_text().replace("chemotherapy", "surgery", 1))
        other, collection = name, load_beir(edited, "test")
        expected = rf"not {name}@sha256:\w+ / {collection.fingerprints['corpus']}"
    assert collection.fingerprints["corpus"] != toy.fingerprints["corpus"] or change == "model"

    with pytest.raises(ValueError, match=rf"index built for model {name}@sha256:\w+ / corpus sha256:\w+, {expected}"):
        evaluate_suite(
            [other],
            [collection_entry(collection)],
            MEASURES,
            tmp_path / "b",
            k=10,
            show_progress=False,
            **caches,
            **index,
        )
    after = sorted((p.relative_to(tmp_path).as_posix(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    assert after == before  # no output folder, no cache entry, the index untouched


def test_an_approximate_index_may_find_fewer_documents_and_its_padding_is_dropped(toy_dir: Path, loaded: Any) -> None:
    toy = load_beir(toy_dir, "test")
    ivf = {"factory": "IVF4,Flat", "nprobe": 1}  # one list of the four per query: ~7 of the 30 documents
    run = encode_and_search(loaded, toy, k=30, index="faiss-factory", index_params=ivf, show_progress=False)
    sizes = [len(docs) for docs in run.values()]
    assert min(sizes) >= 1 and max(sizes) < 30
    for docs in run.values():
        assert set(docs) <= set(toy.corpus)
        assert list(docs.values()) == sorted(docs.values(), reverse=True) and min(docs.values()) > -1e30


def test_index_dir_with_several_dense_runs_or_an_unsavable_index_is_refused_first(
    tmp_path: Path, toy_dir: Path, tiny_st_dir: Path
) -> None:
    toy = load_beir(toy_dir, "test")
    name = str(tiny_st_dir)
    with pytest.raises(ValueError, match=r"holds one index: .*\(given 1 dense model\(s\) and 2 collection\(s\)\)"):
        evaluate_suite(
            [name, "bm25s"],
            [collection_entry(toy), collection_entry(load_beir(toy_dir, "train"), name="toy-train")],
            MEASURES,
            tmp_path / "a",
            index="faiss-factory",
            index_dir=tmp_path / "index",
        )
    with pytest.raises(
        ValueError, match=r"faiss-flat-ip cannot be saved \(for exact search use --index faiss-factory:Flat"
    ):
        evaluate_suite([name], [collection_entry(toy)], MEASURES, tmp_path / "a", index_dir=tmp_path / "index")
    assert not (tmp_path / "a").exists() and not (tmp_path / "index").exists()


def test_cli_builds_then_reuses_an_hnsw_index(tmp_path: Path, toy_dir: Path, tiny_st_dir: Path) -> None:
    args = [
        "evaluate",
        "--dataset",
        str(toy_dir),
        "--model",
        str(tiny_st_dir),
        "--measure",
        "nDCG@10",
        "--k",
        "10",
        "--no-cache",
        "--index",
        "faiss-factory:HNSW8,Flat",
        "--index-param",
        "efSearch=32",
        "--index-param",
        "use_gpu=false",
        "--index-dir",
        str(tmp_path / "index"),
    ]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["factory"] == "HNSW8,Flat"
    assert manifest["search"] == {"nprobe": None, "efSearch": 32, "k_factor": None}
    second = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in "ab"]
    assert results[0]["results"] == results[1]["results"]
    config = json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]
    assert config["index"] == {
        "name": "faiss-factory",
        "params": {"factory": "HNSW8,Flat", "efSearch": 32, "use_gpu": False},
    }


def test_cli_refuses_a_factory_string_faiss_rejects_in_one_line(
    tmp_path: Path, toy_dir: Path, tiny_st_dir: Path
) -> None:
    result = runner.invoke(
        app,
        ["evaluate", "--dataset", str(toy_dir), "--model", str(tiny_st_dir), "--index", "faiss-factory:IVF8,Bogus"]
        + ["--out", str(tmp_path / "out")],
    )
    assert result.exit_code == 2
    assert (
        "FAISS rejects the index factory string 'IVF8,Bogus': could not parse code description Bogus" in result.output
    )
    assert not (tmp_path / "out").exists()


def test_cli_index_param_must_be_key_value(tmp_path: Path, toy_dir: Path) -> None:
    result = runner.invoke(
        app,
        ["evaluate", "--dataset", str(toy_dir), "--model", "bm25s", "--index-param", "nprobe", "--out", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "--index-param 'nprobe': expected KEY=VALUE" in result.output


def test_the_example_config_names_the_index() -> None:
    from retrodistill.config import EvaluateConfig, load_config

    cfg = load_config(EvaluateConfig, Path(__file__).resolve().parents[2] / "configs" / "evaluate_scifact_hnsw.yaml")
    assert (cfg.index.name, cfg.index.params) == ("faiss-factory", {"factory": "HNSW32,Flat", "efSearch": 256})
    assert cfg.index_dir == "runs/index/minilm-scifact-hnsw32"
    FaissFactory(**cfg.index.params, dim=384, use_gpu=False)  # FAISS accepts it for all-MiniLM-L6-v2
