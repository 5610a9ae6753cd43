"""``NAME=MODEL``: short labels in tables, folders and run tags; preloaded encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrodistill.data.collections import load_beir
from retrodistill.data.registry import SuiteEntry
from retrodistill.evaluate.retrieval import load_model
from retrodistill.evaluate.runs import parse_model
from retrodistill.evaluate.suite import evaluate_suite, slug


def test_parse_model(tmp_path: Path) -> None:
    assert parse_model("student=/abs/path/student") == ("student", "/abs/path/student")
    assert parse_model("org/model") == (None, "org/model")
    assert parse_model("a/b=c") == (None, "a/b=c")  # a '/' on the left: not a label
    odd = tmp_path / "x=y"
    odd.mkdir()
    assert parse_model(str(odd)) == (None, str(odd))  # an existing path is never split
    with pytest.raises(ValueError, match="nothing after '='"):
        parse_model("student=")


def test_labels_replace_paths_and_a_loaded_encoder_is_used(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    toy = load_beir(toy_dir, "test")
    entry = SuiteEntry(name="toy", collections=[toy], ignore_identical_ids=False, rel_threshold=1, split="test")
    loaded = load_model(tiny_st_dir, device="cpu")
    calls = []
    encode_document = loaded.encode_document

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return encode_document(*args, **kwargs)

    loaded.encode_document = counting  # type: ignore[method-assign]
    evaluate_suite(
        [f"student={tiny_st_dir}", "lexical=bm25s"],
        [entry],
        ("nDCG@10",),
        tmp_path / "out",
        k=5,
        baseline="lexical",
        encoders={str(tiny_st_dir): loaded},
        use_cache=False,
        permutations=100,
        show_progress=False,
    )
    assert calls, "the preloaded encoder was not used"
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(data["models"]) == ["student", "lexical"]
    assert data["models"]["student"]["id"] == str(tiny_st_dir)
    assert str(tiny_st_dir) not in (tmp_path / "out" / "results.md").read_text()
    run = (tmp_path / "out" / "runs" / slug("student") / slug("toy") / "run.trec").read_text().splitlines()
    assert run and all(line.split()[5] == "student" for line in run)


def test_a_model_path_that_does_not_exist_is_named(tmp_path: Path) -> None:
    from retrodistill.evaluate.runs import model_identity

    with pytest.raises(
        FileNotFoundError, match="--model /no/such/model: no such folder, and not a Hugging Face hub id"
    ):
        model_identity("/no/such/model")
    assert model_identity("bm25s")["kind"] == "bm25s"
