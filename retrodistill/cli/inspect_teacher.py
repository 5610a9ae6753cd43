"""``retrodistill inspect-teacher``: score distributions, nDCG, label noise and agreement of a store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    candidates: Annotated[
        str | None,
        typer.Option(help="Candidates the store was scored from (default: the store's), for the rules below."),
    ] = None,
    teacher_max_score: Annotated[
        float | None, typer.Option(help="Count the negatives the teacher scores above this (mine-negatives' rule).")
    ] = None,
    teacher_margin: Annotated[
        float | None,
        typer.Option(help="Count the negatives the teacher scores above its query's positive minus this."),
    ] = None,
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
        control = None
        if candidates is not None or teacher_max_score is not None or teacher_margin is not None:
            control = _false_negatives(opened, candidates, teacher_max_score, teacher_margin)
            report["false_negative_control"] = control
            if out is not None:
                from retrodistill.artifacts import write_json_atomic
                from retrodistill.stages.inspect_teacher import REPORT_FILE

                write_json_atomic(Path(out) / REPORT_FILE, report)
    for table in summary_tables(report):
        out_console.print(table)
    if control is not None:
        out_console.print(_false_negative_table(control))
    if out is not None:
        console.print(f"[green]wrote[/] {', '.join(report['files'])}", highlight=False)


def _false_negatives(
    store: Any, candidates: str | None, max_score: float | None, margin: float | None
) -> dict[str, Any]:
    """The false-negative rules' counts on the store's candidates (``filters.teacher_rule_report``)."""
    from retrodistill.data.candidates import read_candidates
    from retrodistill.mining.filters import Rules, teacher_rule_report

    path = candidates or store.manifest.get("config", {}).get("candidates")
    if not path:
        raise ValueError(f"{store.path} does not name its candidates: give --candidates")
    rules = Rules(teacher_max_score=max_score, teacher_margin=margin)
    return teacher_rule_report(store, read_candidates(path), rules)


def _false_negative_table(control: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"false-negative rules on {control['candidates']}", title_justify="left")
    for column in ("rule", "threshold", "negatives removed", "share"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    recorded = control.get("recorded") or {}
    rules = recorded.get("rules") or {}
    for name, count in (recorded.get("removed") or {}).items():
        threshold = rules.get(name, f"{rules.get('rank_min', 1)}-{rules.get('rank_max', 'k')}")
        table.add_row(f"{name} (applied when mined)", str(threshold), f"{count:,}", "")
    negatives = max(control["negatives"], 1)
    for name, count in control["removed"].items():
        table.add_row(name, str(control["rules"][name]), f"{count:,}", f"{count / negatives:.2%}")
    if control.get("positives_above_max_score") is not None:
        table.caption = (
            f"{control['positives_above_max_score']:,} of {control['positives']:,} judged positives score above "
            f"teacher_max_score; {control['negatives']:,} negatives"
        )
    return table
