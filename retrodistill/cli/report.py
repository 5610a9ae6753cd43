"""``retrodistill report``: one self-contained HTML page (table, significance, figures) from an evaluation folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retrodistill.cli.common import console, out_console, user_errors
from retrodistill.outputs import check_output


def report(
    results_dir: Annotated[
        Path, typer.Argument(help="The --out folder of `retrodistill evaluate` (holds results.json).")
    ],
    baseline: Annotated[
        str | None,
        typer.Option(help="Model label to compare against per query (default: the baseline in results.json)."),
    ] = None,
    train_log: Annotated[
        list[Path] | None,
        typer.Option(
            "--train-log",
            help="Plot the loss, its terms and the eval figures of a training run: its train_log.json, its "
            "student folder or a TensorBoard folder (OUT/logs, or .OUT.training/logs while it trains); repeatable.",
        ),
    ] = None,
    measure: Annotated[str, typer.Option(help="Measure of the figures; the table shows all.")] = "nDCG@10",
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RESULTS_DIR/report).")] = None,
) -> None:
    """Write report.html (PNG figures embedded, no external files or URLs) and the PNGs beside it.

    Example: retrodistill report runs/eval --baseline bm25s --train-log runs/student/train_log.json
    """
    from retrodistill.report import build_report

    with user_errors():
        if out is not None:
            inputs = {"RESULTS_DIR": results_dir, **{f"--train-log {p}": p for p in train_log or ()}}
            check_output(out, inputs=inputs, overwrite=True)
        page = build_report(results_dir, out, baseline=baseline, train_logs=train_log or (), measure=measure)
    out_console.print(str(page), highlight=False)
    console.print(f"[green]wrote[/] {page} and its PNG figures in {page.parent}", highlight=False)
