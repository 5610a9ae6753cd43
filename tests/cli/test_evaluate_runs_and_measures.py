"""``retrodistill evaluate``: measures as ir-measures writes them, and run files scored beside models.

Figures are checked against ``pytrec_eval`` / ir-measures given the qrels file and the run; bad
input must give one ``error:`` line naming the file and the line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app
from retrodistill.data.collections import read_qrels
from retrodistill.evaluate.metrics import split_measures
from retrodistill.evaluate.run_files import read_run, write_run

runner = CliRunner()

QRELS = "q1 0 d1 2\nq1 0 d2 1\nq2 0 d3 1\nq2 0 d4 2\nq3 0 d5 1\nq3 0 d6 0\n"  # TREC form, graded
#: Two runs over the judged queries: ``good`` ranks the judged documents high, ``poor`` low.
GOOD = {
    "q1": {"d1": 3.0, "d2": 2.0, "x1": 1.0},
    "q2": {"d4": 3.0, "x2": 2.0, "d3": 1.0},
    "q3": {"d5": 2.0, "d6": 1.0},
}
POOR = {
    "q1": {"x1": 3.0, "x2": 2.0, "d2": 1.0},
    "q2": {"x3": 3.0, "x4": 2.0, "d3": 1.0},
    "q3": {"d6": 2.0, "x5": 1.0},
}


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    qrels = tmp_path / "qrels.dl-toy.txt"
    qrels.write_text(QRELS, encoding="utf-8")
    return qrels, write_run(tmp_path / "good.trec", GOOD, "good"), write_run(tmp_path / "poor.trec", POOR, "poor")


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["evaluate", *args, "--set", "permutations=50"])
    return result.exit_code, " ".join(result.output.split())


def _ir_measures(qrels: Path, run: dict[str, dict[str, float]], measure: str) -> float:
    """ir-measures' own mean (through pytrec_eval) over every judged query."""
    import ir_measures

    parsed = ir_measures.parse_measure(measure)
    judged = read_qrels(qrels)
    per_query = {m.query_id: m.value for m in ir_measures.iter_calc([parsed], judged, run)}
    return sum(per_query.get(q, 0.0) for q in judged) / len(judged)


def test_split_measures_keeps_commas_inside_parentheses() -> None:
    assert split_measures("nDCG@10, P(rel=2,judged_only=True)@10,R@100") == [
        "nDCG@10",
        "P(rel=2,judged_only=True)@10",
        "R@100",
    ]
    with pytest.raises(ValueError, match="not closed"):
        split_measures("P(rel=2@10")


def test_measure_is_repeatable_and_takes_any_ir_measures_string(tmp_path: Path) -> None:
    qrels, good, _ = _files(tmp_path)
    measures = ["P(rel=2,judged_only=True)@10", "nDCG@10", "R(rel=2)@10"]
    args = ["--qrels", str(qrels), "--run", str(good), "--out", str(tmp_path / "out")]
    code, output = _invoke(*args, *(x for m in measures for x in ("--measure", m)))
    assert code == 0, output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["measures"] == measures  # every --measure kept, the commas inside one left alone
    for measure in measures:
        expected = _ir_measures(qrels, GOOD, measure)
        assert results["results"]["good"]["qrels.dl-toy"][measure] == pytest.approx(expected, abs=1e-9), measure
    # judged_only: the unjudged x1 is skipped, so q1's top documents are d1 (grade 2) and d2 (grade 1).
    assert results["results"]["good"]["qrels.dl-toy"]["P(rel=2,judged_only=True)@10"] > 0.0


def test_deprecated_measures_splits_only_at_top_level_commas(tmp_path: Path) -> None:
    qrels, good, _ = _files(tmp_path)
    args = ["--qrels", str(qrels), "--run", str(good), "--out", str(tmp_path / "out")]
    code, output = _invoke(*args, "--measures", "nDCG@10,P(rel=2,judged_only=True)@10")
    assert code == 0, output
    assert "--measures is deprecated: repeat --measure instead" in output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["measures"] == ["nDCG@10", "P(rel=2,judged_only=True)@10"]


def test_run_files_against_qrels_in_one_table_with_significance(tmp_path: Path) -> None:
    qrels, good, poor = _files(tmp_path)
    args = ["--qrels", str(qrels), "--run", f"baseline={poor}", "--run", str(good), "--baseline", "baseline"]
    code, output = _invoke(*args, "--measure", "nDCG@10", "--measure", "R@10", "--out", str(tmp_path / "out"))
    assert code == 0, output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(results["models"]) == ["baseline", "good"]  # NAME=FILE, then the file's name
    assert results["models"]["good"]["kind"] == "run-file"
    assert {c["model"] for c in results["significance"]} == {"good"}
    for label, run in (("baseline", POOR), ("good", GOOD)):
        for measure in ("nDCG@10", "R@10"):
            expected = _ir_measures(qrels, run, measure)
            assert results["results"][label]["qrels.dl-toy"][measure] == pytest.approx(expected, abs=1e-9)
    assert "qrels.dl-toy: identical query/document ids kept (default); relevance ≥ 1" in output
    assert "graded qrels (grades up to 2)" in output  # the threshold was not given


def test_a_run_file_beside_a_model_on_a_dataset(tmp_path: Path, toy_dir: Path) -> None:
    first = tmp_path / "first"
    code, output = _invoke("--dataset", str(toy_dir), "--model", "bm25s", "--k", "10", "--out", str(first))
    assert code == 0, output
    (written,) = first.glob("runs/*/*/run.trec")
    args = ["--dataset", str(toy_dir), "--model", "bm25s", "--run", f"again={written}", "--baseline", "bm25s"]
    code, output = _invoke(*args, "--k", "10", "--out", str(tmp_path / "second"))
    assert code == 0, output
    results = json.loads((tmp_path / "second" / "results.json").read_text())
    assert results["results"]["again"] == results["results"]["bm25s"]  # the same run, scored the same way
    assert read_run(written) == read_run(next((tmp_path / "second").glob("runs/again*/*/run.trec")))


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0\n", 2, "expected 6 columns"),
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 two 1.0 t\n", 2, "rank 'two' is not an integer"),
        ("q1 Q0 d1 1 nan t\n", 1, "is not a finite number"),
        ("q1 Q0 d1 1 2.0 t\n\nq1 Q0 d1 2 1.0 t\n", 3, "listed twice (first on line 1)"),
    ],
)
def test_a_bad_run_file_is_one_line_naming_file_and_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    qrels, _, _ = _files(tmp_path)
    bad = tmp_path / "bad.trec"
    bad.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["evaluate", "--qrels", str(qrels), "--run", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    errors = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and f"{bad}:{line}: " in " ".join(result.output.split()), result.output
    assert problem in " ".join(result.output.split())


def test_bad_qrels_and_foreign_runs_are_named(tmp_path: Path) -> None:
    qrels, good, _ = _files(tmp_path)
    bad = tmp_path / "bad-qrels.txt"
    bad.write_text("q1 0 d1 1\nq1 0 d2 high\n", encoding="utf-8")
    code, output = _invoke("--qrels", str(bad), "--run", str(good), "--out", str(tmp_path / "a"))
    assert code == 2 and f"{bad}:2: relevance grade 'high' is not an integer" in output
    foreign = write_run(tmp_path / "foreign.trec", {"other1": {"d1": 1.0}}, "x")
    code, output = _invoke("--qrels", str(qrels), "--run", str(foreign), "--out", str(tmp_path / "b"))
    assert code == 2 and f"{foreign}: none of its 1 query ids (such as 'other1') is judged in qrels.dl-toy" in output
    code, output = _invoke("--qrels", str(qrels), "--model", "bm25s", "--out", str(tmp_path / "c"))
    assert code == 2 and "qrels without a corpus score run files only" in output
