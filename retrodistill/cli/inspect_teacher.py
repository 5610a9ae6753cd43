"""``retrodistill inspect-teacher``: score distributions, nDCG, label noise and agreement of a store."""

from __future__ import annotations

from typing import Annotated

import typer

from retrodistill.cli.common import DataDirOption, console, out_console, user_errors
from retrodistill.outputs import check_output


def inspect_teacher(
    store: Annotated[str, typer.Argument(help="Teacher-score store (plain or ensemble).", show_default=False)],
    qrels: Annotated[
        str | None, typer.Option(help="Qrels file (BEIR TSV or TREC) to judge the teacher against.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="... or the qrels of this dataset (BEIR name or folder) and --split.")
    ] = None,
    data_dir: DataDirOption = None,
    split: Annotated[str, typer.Option(help="Qrels split for --dataset.")] = "train",
    out: Annotated[
        str | None, typer.Option(help="Write inspect.json, score_hist.png and agreement.png into this folder.")
    ] = None,
    rel_threshold: Annotated[int, typer.Option(help="Minimum grade of a positive.")] = 1,
    k: Annotated[int, typer.Option(help="nDCG cutoff.")] = 10,
    max_queries: Annotated[int, typer.Option(help="Most queries sampled for nDCG and Kendall τ (0: all).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of that sample.")] = 0,
) -> None:
    """Print a teacher's score distribution, nDCG on its judged candidates, label noise and agreement.

    An ensemble store is shown with each of its members. Without --qrels / --dataset only the
    distributions and agreement are computed.

    Example: retrodistill inspect-teacher runs/scifact/ce-scores --dataset scifact --split train
    --out runs/scifact/ce-inspect
    """
    from retrodistill.data.store import TeacherStore
    from retrodistill.stages.ensemble_calibration import load_judgments
    from retrodistill.stages.inspect_teacher import inspect_store, summary_tables

    with user_errors():
        if out is not None:
            check_output(out, inputs={"STORE": store, "--qrels": qrels, "--dataset": dataset}, overwrite=True)
        opened = TeacherStore.open(store)
        judgments = None
        if qrels is not None or dataset is not None:
            judgments = load_judgments(
                qrels, dataset=dataset, data_dir=data_dir, split=split, store_inputs=opened.inputs
            )
        report = inspect_store(
            opened,
            judgments,
            out=out,
            rel_threshold=rel_threshold,
            k=k,
            max_queries=max_queries or None,
            seed=seed,
        )
    for table in summary_tables(report):
        out_console.print(table)
    if out is not None:
        console.print(f"[green]wrote[/] {', '.join(report['files'])}", highlight=False)
