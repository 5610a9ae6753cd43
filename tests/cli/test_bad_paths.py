"""Every command, given a path that does not exist or cannot be written: one line, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app

runner = CliRunner()
MISSING = "/no/such/place/input"


def _fails_in_one_line(args: list[str]) -> str:
    result = runner.invoke(app, args)
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def _commands_with_a_missing_input(toy: str) -> dict[str, list[str]]:
    return {
        "mine-negatives": ["mine-negatives", "--dataset", MISSING, "--out", "{tmp}/cand"],
        "split-dev": ["split-dev", "--dataset", MISSING, "--out", "{tmp}/dev"],
        "score-teacher": [
            "score-teacher", "--model", "m", "--dataset", toy, "--candidates", MISSING, "--out", "{tmp}/s",
        ],
        "import-scores": [
            "import-scores", MISSING, "--format", "hofstaetter-tsv", "--dataset", toy, "--out", "{tmp}/s",
        ],
        "score-pairwise": [
            "score-pairwise", "--model", "m", "--dataset", toy, "--candidates", MISSING, "--out", "{tmp}/p",
        ],
        "ensemble-teachers": ["ensemble-teachers", MISSING, MISSING + "2", "--out", "{tmp}/e"],
        "inspect-teacher": ["inspect-teacher", MISSING],
        "train-student": ["train-student", "--store", MISSING, "--dataset", toy, "--out", "{tmp}/st"],
        "evaluate": ["evaluate", "--dataset", MISSING, "--model", "bm25s", "--out", "{tmp}/ev"],
        "report": ["report", MISSING],
        "reproduce": ["reproduce", MISSING, "--out", "{tmp}/r"],
    }


@pytest.mark.parametrize(
    "command",
    [
        "mine-negatives",
        "split-dev",
        "score-teacher",
        "import-scores",
        "score-pairwise",
        "ensemble-teachers",
        "inspect-teacher",
        "train-student",
        "evaluate",
        "report",
        "reproduce",
    ],
)
def test_every_command_names_a_missing_input(command: str, toy_dir: Path, tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in _commands_with_a_missing_input(str(toy_dir))[command]]
    line = _fails_in_one_line(args)
    assert MISSING in line, line


def test_an_output_that_cannot_be_a_folder_is_one_line(toy_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _fails_in_one_line(
        ["mine-negatives", "--dataset", str(toy_dir), "--split", "train", "--out", str(blocker / "cand")]
    )
    assert str(blocker) in line, line
    assert blocker.read_text() == "not a folder"


def test_an_unexpected_error_is_one_line_without_v_and_a_traceback_with_it(tmp_path: Path) -> None:
    # The guard under test is main()'s; a bug is stood in for by a store opener that raises what nothing expects.
    script = (
        "import sys\n"
        "import retrodistill.data.store as store\n"
        "from retrodistill.cli.app import main\n"
        "def broken(cls, path):\n    raise KeyError('a bug')\n"
        "store.TeacherStore.open = classmethod(broken)\n"
        "sys.argv = ['retrodistill', *sys.argv[1:]]\n"
        "main()\n"
    )
    command = [sys.executable, "-c", script]
    quiet = subprocess.run([*command, "inspect-teacher", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 2, quiet.stderr
    assert "Traceback" not in quiet.stderr
    errors = [line for line in quiet.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "KeyError; run with -v for the traceback" in errors[0], quiet.stderr
    loud = subprocess.run(
        [*command, "-v", "inspect-teacher", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "a bug" in loud.stderr


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("[1, 2]", "expected a JSON object, got a list"),
        ('{"stage": "score-teacher", "complete": true, "fingerprint": "sha256:x"}', "no 'parts' mapping"),
        ('{"stage": "score-teacher", "complete": true, "parts": [], "num_parts": 0}', "no 'parts' mapping"),
    ],
)
def test_a_store_manifest_of_the_wrong_shape_is_one_line(tmp_path: Path, manifest: str, message: str) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text(manifest)
    line = _fails_in_one_line(["inspect-teacher", str(store)])
    assert message in line and "Error;" not in line, line
