"""The identical-id rule and the relevance threshold of an entry: given, registered, recognised or default.

Checked: an explicit rule wins; a folder gets the rules of the registered dataset whose corpus it
holds; the checks of :func:`check_entry` warn where a default rule may mislead; a qrels file alone
is an entry too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path

from retrodistill.artifacts import sha256_file
from retrodistill.data import registry
from retrodistill.data.collections import DataFormatError
from retrodistill.data.registry import load_entry, qrels_entry


def _folder(root: Path, qrels: str, same_ids: bool = True) -> Path:
    """Four documents; queries q1, q2 that are documents q1, q2 when ``same_ids`` (else query ids a1, a2)."""
    (root / "qrels").mkdir(parents=True)
    docs = {"q1": "alpha beta", "q2": "gamma delta", "d1": "alpha beta gamma", "d2": "gamma delta beta"}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs.items()))
    ids = ("q1", "q2") if same_ids else ("a1", "a2")
    (root / "queries.jsonl").write_text(
        "".join(
            json.dumps({"_id": i, "text": t}) + "\n" for i, t in zip(ids, ("alpha beta", "gamma delta"), strict=True)
        )
    )
    (root / "qrels" / "test.tsv").write_text(qrels.replace("q", "q" if same_ids else "a"))
    return root


def test_a_folder_whose_queries_are_documents_is_warned_about(tmp_path: Path) -> None:
    entry = load_entry(str(_folder(tmp_path / "f", "q1\td1\t1\nq2\td2\t1\n")))
    assert entry.ignore_identical_ids is False
    (warning,) = entry.warnings
    assert warning.startswith("f: 2 of 2 judged queries (100%) have the id of a corpus document")
    assert "--ignore-identical-ids" in warning and "--keep-identical-ids" in warning
    assert entry.info[-1] == (
        "f: identical query/document ids kept (default); relevance ≥ 1 for binary measures (default)"
    )


@pytest.mark.parametrize("given", [True, False])
def test_a_given_rule_is_applied_and_silences_the_warning(tmp_path: Path, given: bool) -> None:
    entry = load_entry(str(_folder(tmp_path / "f", "q1\td1\t1\nq2\td2\t1\n")), ignore_identical_ids=given)
    assert (entry.ignore_identical_ids, entry.identical_ids_given, entry.warnings) == (given, True, ())
    assert f"ids {'dropped' if given else 'kept'} (given)" in entry.info[-1]


def test_other_query_ids_give_no_warning(tmp_path: Path) -> None:
    assert load_entry(str(_folder(tmp_path / "f", "q1\td1\t1\nq2\td2\t1\n", same_ids=False))).warnings == ()


def test_graded_qrels_warn_only_without_a_threshold(tmp_path: Path) -> None:
    folder = str(_folder(tmp_path / "f", "q1\td1\t3\nq2\td2\t1\n", same_ids=False))
    (warning,) = load_entry(folder).warnings
    assert "graded qrels (grades up to 3)" in warning and "--rel-threshold 2" in warning
    given = load_entry(folder, rel_threshold=2)
    assert given.warnings == () and given.rel_threshold == 2
    assert given.info[-1].endswith("relevance ≥ 2 for binary measures (given)")


def test_a_registered_corpus_in_any_folder_gets_its_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path / "copy-of-quora", "q1\td1\t1\nq2\td2\t1\n")
    monkeypatch.setitem(registry.KNOWN_CORPORA, sha256_file(folder / "corpus.jsonl"), "quora")
    entry = load_entry(str(folder))
    assert entry.name == "copy-of-quora" and entry.ignore_identical_ids is True and entry.warnings == ()
    assert "recognised as the registered dataset 'quora' by its corpus fingerprint" in entry.info[0]
    assert entry.info[-1].endswith("ids dropped (quora's rule); relevance ≥ 1 for binary measures (quora's rule)")
    assert load_entry(str(folder), ignore_identical_ids=False).ignore_identical_ids is False  # the user wins


def test_real_scifact_folder_is_recognised() -> None:
    folder = shared_path("data", "beir", "scifact")
    entry = load_entry(str(folder))
    assert "recognised as the registered dataset 'scifact'" in entry.info[0]
    assert entry.warnings == ()


def test_a_qrels_file_alone_is_an_entry(tmp_path: Path) -> None:
    path = tmp_path / "qrels.dl19.txt"
    path.write_text("1 0 a 2\n1 0 b 0\n2 Q0 c 1\n")
    entry = qrels_entry(path)
    (collection,) = entry.collections
    assert entry.name == collection.name == "qrels.dl19"
    assert collection.qrels == {"1": {"a": 2, "b": 0}, "2": {"c": 1}} and len(collection.corpus) == 0
    assert "graded qrels (grades up to 2)" in entry.warnings[0]
    assert qrels_entry(path, "dl19", rel_threshold=2).name == "dl19"
    path.write_text("1 0 a 2\n1 0 b\n")
    with pytest.raises(DataFormatError, match=r"qrels\.dl19\.txt:2: "):
        qrels_entry(path)
