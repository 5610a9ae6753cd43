from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrodistill.data.collections import DataFormatError
from retrodistill.evaluate.metrics import compute_metrics
from retrodistill.evaluate.run_files import read_run, write_metrics_json, write_run


def test_roundtrip_keeps_exact_scores_and_ranks_in_trec_order(tmp_path: Path) -> None:
    run = {"q1": {"d1": 0.1, "d2": 0.7312614917755127, "d3": 0.1}, "q2": {"d9": -1.5}}
    path = write_run(tmp_path / "run.trec", run, tag="my-model")

    lines = path.read_text().splitlines()
    # ties (d1, d3 at 0.1) are ranked by doc id descending, as trec_eval does
    assert lines[:3] == [
        "q1 Q0 d2 1 0.7312614917755127 my-model",
        "q1 Q0 d3 2 0.1 my-model",
        "q1 Q0 d1 3 0.1 my-model",
    ]
    assert read_run(path) == run


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2 high tag\n")
    with pytest.raises(DataFormatError, match=r"run\.trec:2: score 'high' is not a number"):
        read_run(path)
    path.write_text("q1 Q0 d1 1 0.5\n")
    with pytest.raises(DataFormatError, match=r"run\.trec:1: expected 6 columns"):
        read_run(path)
    path.write_text("q1 Q0 d1 1 0.5 t\n\nq1 Q0 d1 2 0.4 t\n")
    with pytest.raises(DataFormatError, match=r"run\.trec:3: \(q1, d1\) listed twice \(first on line 1\)"):
        read_run(path)


def test_ids_with_whitespace_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="document id 'a b'"):
        write_run(tmp_path / "run.trec", {"q": {"a b": 1.0}})
    assert not (tmp_path / "run.trec").exists()  # atomic: nothing half-written is left


def test_metrics_json_holds_extra_aggregate_and_per_query(tmp_path: Path) -> None:
    result = compute_metrics({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": {"d1": 1.0}}, ["RR@10"])
    path = write_metrics_json(tmp_path / "m.json", result, {"dataset": "toy"})
    data = json.loads(path.read_text())
    assert data == {
        "dataset": "toy",
        "aggregate": {"RR@10": (1 + 0) / 2},
        "per_query": {"q1": {"RR@10": 1.0}, "q2": {"RR@10": 0.0}},
    }
