"""``retrodistill import-scores``: a published teacher-score file → store + candidates, no rescoring."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retrodistill.cli.common import DataDirOption, console, user_errors

_FORMATS = (
    "hofstaetter-tsv, st-mse, st-margin-mse (refused), st-scores-pickle, tevatron, colbert, flagembedding, trec-run"
)


def import_scores(
    source: Annotated[Path, typer.Argument(help="The score file to import (.gz text files are read as they are).")],
    format: Annotated[str, typer.Option("--format", "-f", help=f"Its format: {_FORMATS}.")],
    dataset: Annotated[str, typer.Option(help="BEIR name or folder the scores belong to; every id is checked.")],
    out: Annotated[str, typer.Option(help="Teacher-score store directory to write.")],
    candidates_out: Annotated[
        str | None, typer.Option(help="Candidates directory to write (default: OUT-candidates).")
    ] = None,
    data_dir: DataDirOption = None,
    split: Annotated[str, typer.Option(help="Qrels split of the queries (labels come from its qrels).")] = "train",
    model: Annotated[
        str, typer.Option(help="What produced the scores, recorded as teacher.model (e.g. bert-ensemble).")
    ] = "unknown",
    qrels: Annotated[Path | None, typer.Option(help="Qrels file for the labels instead of the split's qrels.")] = None,
    rank: Annotated[
        str,
        typer.Option(help="Candidate ranks: file (run rank / file order), score (best first) or none (all 0)."),
    ] = "file",
    on_conflict: Annotated[
        str, typer.Option(help="A pair given two different scores: first (keep it, count) or error.")
    ] = "first",
    skip_unknown: Annotated[
        bool, typer.Option("--skip-unknown", help="Drop and count pairs whose ids the dataset lacks.")
    ] = False,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle",
            help="Permit st-scores-pickle. Only for files you trust; read with a restricted unpickler.",
        ),
    ] = False,
    part_size: Annotated[int, typer.Option(help="Pairs per store part file.")] = 50_000,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output directories.")] = False,
) -> None:
    """Import teacher scores someone published as a store and candidates that train-student accepts.

    Example: retrodistill import-scores bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv
    --format hofstaetter-tsv --model bert-ensemble --dataset msmarco --out runs/msmarco/ensemble-scores
    """
    from retrodistill.data.download import load_dataset
    from retrodistill.stages.import_scores import import_scores as run_import

    with user_errors():
        collection = load_dataset(dataset, split, data_dir)
        result = run_import(
            source,
            format,
            collection=collection,
            out=out,
            candidates_out=candidates_out,
            model=model,
            qrels=qrels,
            rank=rank,
            on_conflict=on_conflict,
            skip_unknown=skip_unknown,
            allow_pickle=allow_pickle,
            part_size=part_size,
            overwrite=overwrite,
        )
    report = result.report
    if report["conflicts"]:
        console.print(
            f"[yellow]note:[/] {report['conflicts']:,} pairs were given two different scores; the first was kept:\n  "
            + "\n  ".join(report["conflict_examples"]),
            highlight=False,
        )
    skipped = report["skipped_unknown"]
    if skipped["pairs"]:
        console.print(
            f"[yellow]note:[/] skipped {skipped['pairs']:,} pairs naming {skipped['query_ids']:,} unknown query ids "
            f"and {skipped['doc_ids']:,} unknown document ids"
        )
    if report["queries_without_positive"]:
        console.print(
            f"[yellow]note:[/] {report['queries_without_positive']:,} queries have no positive (no qrels judgment "
            "and none named by the file); train-student skips them"
        )
    counts = result.candidates.manifest["counts"]
    console.print(
        f"[green]wrote[/] {result.store.path}: {report['pairs']:,} scored pairs; {result.candidates.path}: "
        f"{counts['queries']:,} queries, {counts['positives']:,} positives, {counts['negatives']:,} negatives"
    )
