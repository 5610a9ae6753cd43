"""The results table as LaTeX (booktabs), for pasting into a paper: ``results.tex`` beside results.md.

Written from the ``results.json`` contract (:meth:`retrodistill.evaluate.suite.SuiteResult.to_json`), so
the ``report`` command can also write it for an evaluation folder made before this existed. One
``table`` per measure, datasets as rows and models as columns, as in ``results.md``; the best value of
each row in bold; ▲/▼ (significantly better/worse than the baseline, the same tests as results.md) as
``$^{\\blacktriangle}$`` / ``$^{\\blacktriangledown}$``. The preamble needs ``booktabs`` and ``amssymb``
(said in a comment at the top). pandas' ``Styler.to_latex`` could draw the grid, but not the marks, the
bold best value beside them or the escaping of model names as we need it, hence this short writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_MARKS = {"▲": r"$^{\blacktriangle}$", "▼": r"$^{\blacktriangledown}$"}


def escape_latex(text: str) -> str:
    r"""``text`` with LaTeX's special characters escaped.

    Example:
        >>> escape_latex("runs/my_model@100 & 50%")
        'runs/my\\_model@100 \\& 50\\%'
    """
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


def results_latex(results: Mapping[str, Any], digits: int = 4) -> str:
    """Every measure of ``results`` (results.json's content) as booktabs tables, one per measure."""
    models = list(results["models"])
    datasets = list(results["datasets"])
    rows = [*datasets, "mean"] if len(datasets) > 1 else datasets
    marks = {(c["model"], c["dataset"], c["measure"]): c.get("mark", "") for c in results.get("significance") or []}
    baseline = results.get("baseline")
    lines = ["% retrodistill results; preamble: \\usepackage{booktabs} \\usepackage{amssymb}"]
    for measure in results["measures"]:
        caption = f"{escape_latex(str(measure))}."
        if baseline is not None and marks:
            caption += (
                rf" $^{{\blacktriangle}}$/$^{{\blacktriangledown}}$: significantly better/worse than "
                f"{escape_latex(str(baseline))} (paired t-test and randomization test, Holm-corrected)."
            )
        if results.get("rules"):
            caption += f" {escape_latex(str(results['rules']))}"
        lines += [
            r"\begin{table}[t]",
            r"\centering",
            r"\begin{tabular}{l" + "r" * len(models) + "}",
            r"\toprule",
            " & ".join(["Dataset", *(escape_latex(str(m)) for m in models)]) + r" \\",
            r"\midrule",
        ]
        for dataset in rows:
            if dataset == "mean" and len(rows) > 1:
                lines.append(r"\midrule")
            values = {m: _value(results, m, dataset, measure) for m in models}
            present = [v for v in values.values() if v is not None]
            best = max(present) if present else None
            cells = [escape_latex(str(dataset)) if dataset != "mean" else "Mean"]
            for model in models:
                value = values[model]
                if value is None:
                    cells.append("--")
                    continue
                text = f"{value:.{digits}f}"
                if value == best and len(present) > 1:
                    text = rf"\textbf{{{text}}}"
                cells.append(text + _MARKS.get(marks.get((model, dataset, measure), ""), ""))
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}", ""]
    return "\n".join(lines)


def _value(results: Mapping[str, Any], model: str, dataset: str, measure: str) -> float | None:
    value = ((results["results"].get(model) or {}).get(dataset) or {}).get(measure)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
