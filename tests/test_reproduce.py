"""The reproduction matrix runner on fake matrices whose commands are ``python -c`` one-liners."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from retrodistill.cli.reproduce import reproduce
from retrodistill.reproduce import (
    CLI_ARGV,
    Entry,
    MatrixError,
    Outcome,
    Requirements,
    ResultKey,
    check_requirements,
    command_argv,
    load_matrix,
    run_entry,
    run_matrix,
    select,
    to_markdown,
)

REPO = Path(__file__).resolve().parents[1]


def writes(value: float, model: str = "fake", dataset: str = "toy", measure: str = "nDCG@10") -> str:
    """A command that writes ``{"results": {model: {dataset: {measure: value}}}}`` into {out}/results.json."""
    results = {"results": {model: {dataset: {measure: value}, "mean": {measure: value}}}}
    code = f"import json, sys; json.dump({results!r}, open(sys.argv[1] + '/results.json', 'w'))"
    return f"python -c {shlex.quote(code)} {{out}}"


def fails(status: int = 3) -> str:
    code = f"import sys; print('loading the model'); print('boom: no such model', file=sys.stderr); sys.exit({status})"
    return f"python -c {shlex.quote(code)} {{out}}"


def entry(command: str, expected: float | None = 0.5, tolerance: float | None = 0.01, **kw: Any) -> Entry:
    return Entry(
        name=kw.pop("name", "toy/fake/dense"),
        command=command,
        result=ResultKey(kw.pop("model", "fake"), kw.pop("dataset", "toy"), "nDCG@10"),
        expected=expected,
        tolerance=tolerance,
        source="a test",
        requires=kw.pop("requires", Requirements()),
    )


def raw(name: str, command: str, expected: float | None = 0.5, tolerance: float | None = 0.01, **extra: Any) -> dict:
    """One matrix entry as it is written in YAML."""
    item = {
        "name": name,
        "command": command,
        "result": {"model": "fake", "dataset": "toy", "measure": "nDCG@10"},
        "expected": expected,
        "tolerance": tolerance,
        "source": "a test",
    }
    item.update(extra)
    return item


def write_matrix(path: Path, items: list[dict]) -> Path:
    path.write_text(yaml.safe_dump(items, sort_keys=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ run_entry


def test_value_within_tolerance_is_ok(tmp_path: Path) -> None:
    outcome = run_entry(entry(writes(0.505)), tmp_path)
    assert outcome.status == "OK", outcome.why
    assert outcome.value == pytest.approx(0.505)
    assert outcome.diff == pytest.approx(0.505 - 0.5)
    assert Path(outcome.out_dir or "") == tmp_path / "toy__fake__dense" / "out"
    assert (tmp_path / "toy__fake__dense" / "out" / "results.json").is_file()


def test_value_exactly_at_the_tolerance_is_ok_despite_rounding(tmp_path: Path) -> None:
    assert 0.6481 - 0.6451 > 0.003  # the float subtraction overshoots; the runner must not call it a FAIL
    assert run_entry(entry(writes(0.6481), 0.6451, 0.003), tmp_path).status == "OK"
    assert run_entry(entry(writes(0.6482), 0.6451, 0.003), tmp_path).status == "FAIL"


def test_value_out_of_tolerance_fails_with_value_and_difference(tmp_path: Path) -> None:
    outcome = run_entry(entry(writes(0.6), 0.65, 0.003), tmp_path)
    assert outcome.status == "FAIL"
    assert outcome.value == pytest.approx(0.6)
    assert outcome.diff == pytest.approx(0.6 - 0.65)
    assert "0.6000" in outcome.why and "-0.0500" in outcome.why and "0.003" in outcome.why


def test_failing_command_fails_with_the_tail_of_its_log(tmp_path: Path) -> None:
    outcome = run_entry(entry(fails(3)), tmp_path)
    assert outcome.status == "FAIL"
    assert outcome.value is None
    # The log's last line (here from stderr) is the first line of why; its tail follows.
    assert outcome.why.splitlines()[0] == "command exited with status 3: boom: no such model"
    assert "loading the model" in outcome.why
    log = Path(outcome.log or "").read_text()
    assert "loading the model" in log and "boom: no such model" in log


def test_missing_value_in_results_json_fails_and_says_what_is_there(tmp_path: Path) -> None:
    outcome = run_entry(entry(writes(0.5, dataset="nfcorpus")), tmp_path)
    assert outcome.status == "FAIL"
    assert "'toy'" in outcome.why and "nfcorpus" in outcome.why


def test_null_expectation_is_reported(tmp_path: Path) -> None:
    outcome = run_entry(entry(writes(0.4321), expected=None, tolerance=None), tmp_path)
    assert outcome.status == "REPORTED"
    assert outcome.value == pytest.approx(0.4321)
    assert outcome.diff is None


def test_stale_results_from_an_earlier_run_are_never_read(tmp_path: Path) -> None:
    e = entry(writes(0.5))
    assert run_entry(e, tmp_path).status == "OK"
    silent = entry("python -c pass {out}")  # exits 0 but writes nothing
    outcome = run_entry(silent, tmp_path)
    assert outcome.status == "FAIL"
    assert "wrote no" in outcome.why


def test_timeout_fails(tmp_path: Path) -> None:
    outcome = run_entry(entry("python -c 'import time; time.sleep(60)' {out}"), tmp_path, timeout_s=1)
    assert outcome.status == "FAIL"
    assert "timed out after 1 s" in outcome.why


def test_command_argv_pins_the_interpreter_and_keeps_out_one_argument(tmp_path: Path) -> None:
    out = tmp_path / "with space"
    argv = command_argv("retrodistill evaluate --beir scifact --out {out}", out)
    assert argv == [*CLI_ARGV, "evaluate", "--beir", "scifact", "--out", str(out)]
    assert argv[0] == sys.executable
    assert command_argv("python3 -c pass {out}", out) == [sys.executable, "-c", "pass", str(out)]
    assert command_argv("echo {out}/x", out) == ["echo", f"{out}/x"]


def test_leading_retrodistill_runs_this_packages_cli(tmp_path: Path) -> None:
    outcome = run_entry(entry("retrodistill evaluate --help --out {out}"), tmp_path)
    # --help exits 0 and writes no results.json: a FAIL, whose log shows the CLI really ran.
    assert outcome.status == "FAIL" and "wrote no" in outcome.why
    log = Path(outcome.log or "").read_text()
    assert "--beir" in log and "Usage" in log


# ----------------------------------------------------------------------------------- requirements


def test_missing_dataset_module_and_model_are_all_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    needs = Requirements(datasets=("nfcorpus",), models=("nobody/no-such-model",), modules=("no_such_module_xyz",))
    why = check_requirements(entry(writes(0.5), requires=needs), tmp_path / "data", hf_cache_dir=tmp_path / "hub")
    assert why is not None
    assert "'nfcorpus'" in why and str(tmp_path / "data") in why
    assert "nobody/no-such-model" in why
    assert "no_such_module_xyz" in why


def test_present_requirements_give_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "data" / "toy").mkdir(parents=True)
    local_model = tmp_path / "my-student"
    local_model.mkdir()
    needs = Requirements(datasets=("toy",), models=(str(local_model),), modules=("json", "retrodistill.reproduce"))
    assert check_requirements(entry(writes(0.5), requires=needs), tmp_path / "data", hf_cache_dir=tmp_path) is None


def test_model_in_the_hub_cache_counts_as_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    needs = Requirements(models=("org/tiny",))
    assert check_requirements(entry(writes(0.5), requires=needs), hf_cache_dir=tmp_path / "hub") is None
    other = Requirements(models=("org/other",))
    assert check_requirements(entry(writes(0.5), requires=other), hf_cache_dir=tmp_path / "hub") is not None


def test_models_are_not_checked_when_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    needs = Requirements(models=("nobody/no-such-model",))
    assert check_requirements(entry(writes(0.5), requires=needs), hf_cache_dir=tmp_path) is None


def test_module_under_a_missing_package_is_missing_not_an_error() -> None:
    needs = Requirements(modules=("no_such_package_xyz.sub",))
    why = check_requirements(entry(writes(0.5), requires=needs))
    assert why is not None and "no_such_package_xyz.sub" in why


# ------------------------------------------------------------------------------------- run_matrix


def test_run_matrix_skips_runs_and_writes_reports(tmp_path: Path) -> None:
    (tmp_path / "data" / "toy").mkdir(parents=True)
    code = (
        "import json, os, sys; open(sys.argv[1] + '/env.txt', 'w').write(os.environ['RETRODISTILL_DATA']); "
        "json.dump({'results': {'fake': {'toy': {'nDCG@10': 0.5}}}}, open(sys.argv[1] + '/results.json', 'w'))"
    )
    entries = [
        entry(f"python -c {shlex.quote(code)} {{out}}", name="toy/ok", requires=Requirements(datasets=("toy",))),
        entry(writes(0.5), name="toy/no-module", requires=Requirements(modules=("no_such_module_xyz",))),
        entry(writes(0.9), name="toy/off"),
        entry(writes(0.3), None, None, name="toy/new"),
    ]
    out = tmp_path / "out"
    outcomes = run_matrix(entries, out, matrix="fake.yaml", data_dir=tmp_path / "data")
    assert [o.status for o in outcomes] == ["OK", "SKIPPED", "FAIL", "REPORTED"]
    assert (out / "toy__ok" / "out" / "env.txt").read_text() == str(tmp_path / "data")  # commands see data_dir
    assert not (out / "toy__no-module").exists()  # a skipped entry's command never runs
    assert "no_such_module_xyz" in outcomes[1].why

    report = json.loads((out / "reproduce.json").read_text())
    assert report["matrix"] == "fake.yaml"
    assert report["counts"] == {"OK": 1, "FAIL": 1, "REPORTED": 1, "SKIPPED": 1}
    assert [o["status"] for o in report["outcomes"]] == ["OK", "SKIPPED", "FAIL", "REPORTED"]
    assert report["outcomes"][2]["value"] == pytest.approx(0.9)
    md = (out / "reproduce.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| toy/")]
    assert len(rows) == 4
    assert rows[2].startswith("| toy/off | FAIL | 0.9000 | 0.5000 | 0.01 | +0.4000 |")
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_markdown_escapes_pipes_and_newlines() -> None:
    outcome = Outcome("a/b", "FAIL", None, 0.5, 0.01, None, "x | y", "line 1\nline 2", "cmd")
    row = [line for line in to_markdown([outcome]).splitlines() if line.startswith("| a/b")][0]
    assert "x \\| y" in row and "line 1<br>line 2" in row
    assert len(re.findall(r"(?<!\\)\|", row)) == 9  # 8 columns


# ------------------------------------------------------------------------------------------ loading


def test_load_matrix_reads_entries(tmp_path: Path) -> None:
    items = [raw("toy/a", writes(0.5), requires={"datasets": ["toy"], "modules": ["json"]}), raw("toy/b", writes(1))]
    items[1]["expected"] = None
    path = write_matrix(tmp_path / "m.yaml", items)
    entries = load_matrix(path)
    assert [e.name for e in entries] == ["toy/a", "toy/b"]
    assert entries[0].requires == Requirements(datasets=("toy",), modules=("json",))
    assert entries[0].result == ResultKey("fake", "toy", "nDCG@10")
    assert entries[1].expected is None and entries[1].requires == Requirements()
    second = path.read_text().splitlines().index("- name: toy/b") + 1
    assert entries[1].where == f"{path}:{second}"


MATRIX_TEXT = """\
- name: toy/a
  command: python -c pass {out}
  result: {model: fake, dataset: toy, measure: nDCG@10}
  expected: 0.5
  tolerance: 0.01
  source: a test
- name: toy/b
  command: python -c pass {out}
  result: {model: fake, dataset: toy, measure: nDCG@10}
  expcted: 0.5
  tolerance: 0.01
  source: a test
"""


def test_unknown_key_names_file_line_entry_and_key(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX_TEXT)
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    message = str(err.value)
    assert message.startswith(f"{path}:10: entry 2 (toy/b): unknown key(s) expcted")
    assert "allowed:" in message


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"expected": 0.5, "tolerance": None}, "tolerance is required"),
        ({"tolerance": -0.1}, "tolerance must be >= 0"),
        ({"expected": True}, "expected must be a finite number"),
        ({"expected": float("nan")}, "expected must be a finite number"),
        ({"command": "python -c pass"}, "must contain {out}"),
        ({"command": "python -c 'pass {out}"}, "cannot be split"),
        ({"result": {"model": "fake", "dataset": "toy"}}, "exactly the keys model, dataset, measure"),
        ({"result": {"model": "fake", "dataset": "", "measure": "nDCG@10"}}, "result.dataset must be a non-empty"),
        ({"source": ""}, "source must be a non-empty string"),
        ({"requires": {"dataset": ["toy"]}}, "unknown key(s) requires.dataset"),
        ({"requires": {"modules": "json"}}, "requires.modules must be a list"),
        ({"name": 3}, "name must be a non-empty string"),
    ],
)
def test_invalid_values_are_errors_naming_the_entry(tmp_path: Path, change: dict, fragment: str) -> None:
    item = raw("toy/bad", writes(0.5))
    item.update(change)
    path = write_matrix(tmp_path / "m.yaml", [raw("toy/fine", writes(0.5)), item])
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    message = str(err.value)
    assert message.startswith(f"{path}:"), message
    assert "entry 2" in message, message
    assert fragment in message, message


def test_missing_key_is_an_error(tmp_path: Path) -> None:
    item = raw("toy/a", writes(0.5))
    del item["expected"]
    with pytest.raises(MatrixError, match=r"m\.yaml:1: entry 1 \(toy/a\): missing key\(s\) expected"):
        load_matrix(write_matrix(tmp_path / "m.yaml", [item]))


def test_duplicate_names_and_slug_clashes_are_errors(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match=r"entry 2 \(toy/a\): name 'toy/a' clashes with entry 1"):
        load_matrix(write_matrix(tmp_path / "m.yaml", [raw("toy/a", writes(0.5)), raw("toy/a", writes(0.5))]))
    with pytest.raises(MatrixError, match="clashes"):
        load_matrix(write_matrix(tmp_path / "n.yaml", [raw("toy/a", writes(0.5)), raw("toy__a", writes(0.5))]))


@pytest.mark.parametrize("name", ["..", "../x", "toy/../..", ".hidden", "a//b", "toy/."])
def test_names_that_would_escape_the_output_folder_are_errors(tmp_path: Path, name: str) -> None:
    with pytest.raises(MatrixError, match=r"may not start with '\.' or have an empty, '\.' or '\.\.' part"):
        load_matrix(write_matrix(tmp_path / "m.yaml", [raw(name, writes(0.5))]))


def test_bad_documents_are_errors(tmp_path: Path) -> None:
    (tmp_path / "map.yaml").write_text("name: toy/a\n")
    with pytest.raises(MatrixError, match="non-empty YAML list"):
        load_matrix(tmp_path / "map.yaml")
    (tmp_path / "broken.yaml").write_text("- name: toy/a\n  command: [unclosed\n")
    with pytest.raises(MatrixError, match=r"broken\.yaml:\d+: invalid YAML"):
        load_matrix(tmp_path / "broken.yaml")
    (tmp_path / "scalar.yaml").write_text("- just a string\n")
    with pytest.raises(MatrixError, match=r"scalar\.yaml:1: entry 1: expected a mapping"):
        load_matrix(tmp_path / "scalar.yaml")
    with pytest.raises(FileNotFoundError, match="no such matrix file"):
        load_matrix(tmp_path / "absent.yaml")


def test_select_by_substring_and_reject_filters_that_match_nothing() -> None:
    entries = [entry(writes(0.5), name=n) for n in ("scifact/a", "scifact/b", "nfcorpus/a")]
    assert [e.name for e in select(entries, ["scifact"])] == ["scifact/a", "scifact/b"]
    assert [e.name for e in select(entries, ["/a", "nf"])] == ["scifact/a", "nfcorpus/a"]
    assert len(select(entries, None)) == 3
    with pytest.raises(ValueError, match="no entry name contains 'fiqa'"):
        select(entries, ["fiqa"])


# --------------------------------------------------------------------------------- benchmarks/beir.yaml


def test_the_beir_matrix_loads_and_is_consistent() -> None:
    entries = load_matrix(REPO / "benchmarks" / "beir.yaml")
    by_name = {e.name: e for e in entries}
    assert by_name["scifact/minilm-l6-v2/dense"].expected == 0.6451
    assert by_name["scifact/bm25-flat/pyserini"].expected == 0.6789
    assert "pyserini" in by_name["scifact/bm25-flat/pyserini"].requires.modules
    assert by_name["scifact/bm25/bm25s"].expected == 0.6762
    for e in entries:
        args = shlex.split(e.command)
        assert args[:2] == ["retrodistill", "evaluate"], e.name
        options = dict(zip(args[2::2], args[3::2], strict=True))
        assert options["--out"] == "{out}", e.name
        assert options["--model"] == e.result.model, e.name
        source = options.get("--beir") or options["--dataset"]
        assert Path(source).name == e.result.dataset, e.name
        assert e.requires.datasets == (source,), e.name
        assert e.name.split("/")[0] == e.result.dataset, e.name
        assert e.result.measure == "nDCG@10", e.name
        if e.result.model == "pyserini-bm25":
            assert e.requires.modules == ("pyserini",), e.name
        if e.expected is not None:
            assert 0 < e.expected < 1 and e.tolerance is not None and 0 < e.tolerance <= 0.005, e.name


# ----------------------------------------------------------------------------------------------- CLI


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # keep "reproduce" a sub-command, as in the real app
    app.command("reproduce")(reproduce)
    return app


def test_cli_dry_run_lists_without_running(cli: typer.Typer, tmp_path: Path) -> None:
    matrix = write_matrix(
        tmp_path / "m.yaml",
        [raw("toy/a", writes(0.5)), raw("toy/b", writes(0.5), requires={"modules": ["no_such_module_xyz"]})],
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["reproduce", str(matrix), "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "toy/a" in result.output and "toy/b" in result.output
    assert "run" in result.output and "skip" in result.output and "no_such_module_xyz" in result.output
    assert not out.exists()


def test_cli_exit_status_follows_failures(cli: typer.Typer, tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path / "m.yaml", [raw("toy/good", writes(0.5)), raw("toy/bad", writes(0.9))])
    runner = CliRunner()
    out = tmp_path / "out"
    good = runner.invoke(cli, ["reproduce", str(matrix), "--out", str(out), "--filter", "good"])
    assert good.exit_code == 0, good.output
    assert "OK" in good.output
    assert json.loads((out / "reproduce.json").read_text())["counts"]["OK"] == 1

    both = runner.invoke(cli, ["reproduce", str(matrix), "--out", str(out)])
    assert both.exit_code == 1, both.output
    assert "FAIL" in both.output and "0.9000" in both.output
    report = json.loads((out / "reproduce.json").read_text())
    assert [o["status"] for o in report["outcomes"]] == ["OK", "FAIL"]
    assert (out / "reproduce.md").is_file()


def test_cli_user_errors_exit_2(cli: typer.Typer, tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path / "m.yaml", [raw("toy/a", writes(0.5), extra_key=1)])
    runner = CliRunner()
    bad = runner.invoke(cli, ["reproduce", str(matrix), "--out", str(tmp_path / "out")])
    assert bad.exit_code == 2
    assert "error:" in bad.output and "extra_key" in bad.output
    good = write_matrix(tmp_path / "g.yaml", [raw("toy/a", writes(0.5))])
    typo = runner.invoke(cli, ["reproduce", str(good), "--filter", "scifcat", "--dry-run"])
    assert typo.exit_code == 2 and "scifcat" in typo.output
