"""``retrodistill quickstart``: the whole pipeline on BEIR SciFact with laptop-sized defaults."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from retrodistill.cli.common import DataDirOption, console, out_console, user_errors


def quickstart(
    dataset: Annotated[
        str | None,
        typer.Option(help="Registered dataset or BEIR-layout folder with train and test qrels (default: scifact)."),
    ] = None,
    data_dir: DataDirOption = None,
    out: Annotated[
        str | None, typer.Option(help="Where every artifact of the run goes (default: runs/quickstart).")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="Bi-encoder teacher, hub id or path (default: sentence-transformers/all-MiniLM-L6-v2)."),
    ] = None,
    layers: Annotated[int | None, typer.Option(help="Student = the teacher's first k layers (default: 2).")] = None,
    loss: Annotated[str | None, typer.Option(help="Distillation loss plug-in (default: margin-mse).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training positives (default: 2).")] = None,
    negatives: Annotated[int | None, typer.Option(help="Negatives per training example (default: 7).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop training after this many steps (-1: no limit).")] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Write into an existing --out that is not an earlier quickstart's; only the quickstart's own "
            "subfolders there are replaced.",
        ),
    ] = False,
) -> None:
    """Mine BM25 negatives, score them with the teacher, distil a 2-layer student, evaluate all three.

    Prints nDCG@10 on SciFact test for the teacher, the student before distillation and after,
    and writes OUT/summary.json.

    Example: retrodistill quickstart --data-dir ../shared/data/beir
    """
    from rich.table import Table

    from retrodistill.quickstart import QuickstartConfig, run

    given: dict[str, Any] = {
        "dataset": dataset,
        "data_dir": data_dir,
        "out": out,
        "teacher": teacher,
        "layers": layers,
        "loss": loss,
        "epochs": epochs,
        "negatives": negatives,
        "max_steps": max_steps,
    }
    config = QuickstartConfig(**{k: v for k, v in given.items() if v is not None})
    with user_errors():
        progress = lambda msg: console.print(f"[bold]{msg}[/]", highlight=False)  # noqa: E731
        result = run(config, log=progress, overwrite=overwrite)
    table = Table(title=f"{config.dataset} test, nDCG@10", title_justify="left")
    table.add_column("model")
    table.add_column("nDCG@10", justify="right")
    labels = {
        "teacher": f"teacher ({config.teacher})",
        "student-before": f"student before distillation (first {config.layers} layers)",
        "student-after": f"student after distillation ({config.loss})",
    }
    for key, label in labels.items():
        table.add_row(label, f"{result.ndcg10[key]:.4f}")
    out_console.print(table)
    console.print(f"wall time {result.wall_time_s / 60:.1f} min; artifacts and summary.json in {result.out}")
    evaluation = result.out / "eval"
    console.print(f"the same table with every measure: {evaluation}; draw it: retrodistill report {evaluation}")
