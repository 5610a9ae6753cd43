"""results.tex: the results table as booktabs LaTeX."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from retrodistill.evaluate.latex import escape_latex, results_latex

RESULTS = {
    "measures": ["nDCG@10", "R@100"],
    "baseline": "bm25s",
    "rules": "",
    "models": {"bm25s": {}, "my_model & co": {}},
    "datasets": {"scifact": {}, "nf_corpus": {}},
    "results": {
        "bm25s": {
            "scifact": {"nDCG@10": 0.6647, "R@100": 0.9},
            "nf_corpus": {"nDCG@10": 0.32, "R@100": 0.25},
            "mean": {"nDCG@10": 0.49235, "R@100": 0.575},
        },
        "my_model & co": {
            "scifact": {"nDCG@10": 0.70001, "R@100": 0.95},
            "nf_corpus": {"nDCG@10": 0.30, "R@100": 0.28},
            "mean": {"nDCG@10": 0.500005, "R@100": 0.615},
        },
    },
    "significance": [
        {"model": "my_model & co", "dataset": "scifact", "measure": "nDCG@10", "mark": "▲"},
        {"model": "my_model & co", "dataset": "nf_corpus", "measure": "nDCG@10", "mark": "▼"},
    ],
}


def test_every_value_best_in_bold_marks_and_escaped_names() -> None:
    tex = results_latex(RESULTS)
    assert tex.count(r"\begin{table}") == 2 and tex.count(r"\toprule") == 2 and tex.count(r"\bottomrule") == 2
    assert r"Dataset & bm25s & my\_model \& co \\" in tex
    assert r"scifact & 0.6647 & \textbf{0.7000}$^{\blacktriangle}$ \\" in tex
    assert r"nf\_corpus & \textbf{0.3200} & 0.3000$^{\blacktriangledown}$ \\" in tex
    assert r"Mean & 0.4924 & \textbf{0.5000} \\" in tex  # the mean row is never marked
    assert r"\midrule" + "\nMean" in tex
    assert "significantly better/worse than bm25s" in tex


def test_escape_latex_covers_the_special_characters() -> None:
    assert escape_latex(r"a\b{c}~d^e#f$g%h&i_j") == (
        r"a\textbackslash{}b\{c\}\textasciitilde{}d\textasciicircum{}e\#f\$g\%h\&i\_j"
    )


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex here")
def test_it_compiles(tmp_path: Path) -> None:
    body = results_latex(RESULTS)
    doc = "\\documentclass{article}\\usepackage{booktabs}\\usepackage{amssymb}\\usepackage[utf8]{inputenc}"
    (tmp_path / "t.tex").write_text(doc + "\\begin{document}\n" + body + "\n\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True)
    assert run.returncode == 0, run.stdout[-2000:]
