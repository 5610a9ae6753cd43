"""The README's "From Python" example runs as written (names swapped for the toy set and a tiny model)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_python_example_runs(toy_dir: Path, tiny_st_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    section = README.read_text(encoding="utf-8").split("## From Python", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    # The toy set has too few BM25 hits for 7 negatives; everything else runs as the README shows it.
    code = code.replace('["scifact"]["nDCG@10"]', '["toy"]["nDCG@10"]')  # a folder's row is named after it
    code = code.replace('"scifact"', repr(str(toy_dir)))
    code = code.replace("sentence-transformers/all-MiniLM-L6-v2", str(tiny_st_dir))
    code = code.replace("layers=2)", "layers=1), negatives=2, max_steps=2")
    assert "scifact" not in code
    monkeypatch.chdir(tmp_path)  # the example writes under runs/py/
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README's example
    assert (tmp_path / "runs" / "py" / "eval" / "results.json").is_file()
    assert os.path.isdir(tmp_path / "runs" / "py" / "student")
