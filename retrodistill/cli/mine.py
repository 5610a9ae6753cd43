"""``retrodistill mine-negatives``: BM25 top-k per query → candidates artifact."""

from __future__ import annotations

from typing import Annotated

import typer

from retrodistill.cli.common import (
    ConfigOption,
    DataDirOption,
    OverwriteOption,
    SetOption,
    console,
    resolve,
    user_errors,
)
from retrodistill.outputs import guarded_output


def mine_negatives(
    dataset: Annotated[
        str | None, typer.Option(help="BEIR name (downloaded if missing) or a BEIR-layout folder (default: scifact).")
    ] = None,
    data_dir: DataDirOption = None,
    split: Annotated[
        str | None, typer.Option(help="Qrels split whose queries get candidates (default: train).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Output directory (default runs/candidates).")] = None,
    k: Annotated[int | None, typer.Option(help="Documents retrieved per query (default 100).")] = None,
    ties: Annotated[
        str | None,
        typer.Option(
            help="Order of equal BM25 scores: 'bm25s' (default; bm25s' order, as earlier versions) or 'row' "
            "(corpus order, ~10x faster per query at MS MARCO size; other candidates among ties)."
        ),
    ] = None,
    overwrite: OverwriteOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Retrieve BM25 candidates per query; judged documents keep their grade, the rest are negatives.

    Example: retrodistill mine-negatives --dataset scifact --split train --out runs/scifact/candidates
    """
    from retrodistill.config import MineConfig
    from retrodistill.stages import mine_negatives as stage

    with user_errors():
        data = {"dataset": dataset, "data_dir": data_dir, "split": split}
        cfg = resolve(MineConfig, config, set_, {"data": data, "out": out, "k": k, "ties": ties})
        inputs = {"--dataset": cfg.data.dataset, "--data-dir": cfg.data.data_dir}
        with guarded_output(cfg.out, inputs=inputs, overwrite=overwrite):
            result = stage.run(cfg)
    unknown = result.manifest.get("unknown_judgments", {})
    if any(unknown.values()):
        console.print(
            f"[yellow]note:[/] {sum(unknown.values()):,} qrels lines were skipped: "
            f"{unknown.get('queries', 0)} name unknown query ids, {unknown.get('documents', 0)} unknown document ids"
        )
    counts = result.manifest["counts"]
    console.print(
        f"[green]wrote[/] {result.path}: {counts['queries']:,} queries, {counts['positives']:,} judged, "
        f"{counts['negatives']:,} negatives"
    )
