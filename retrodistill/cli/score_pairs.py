"""``retrodistill score-pairwise``: a pairwise teacher's p_ij for the top-m pairs of each query → pair store."""

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


def score_pairwise(
    model: Annotated[str | None, typer.Option(help="Pairwise cross-encoder (1 or 2 logits): hub id or path.")] = None,
    teacher_scores: Annotated[
        str | None, typer.Option(help="Teacher-score store: rank each query's candidates by its scores.")
    ] = None,
    candidates: Annotated[
        str | None, typer.Option(help="Candidates artifact: rank by mining rank (or check the store's).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="BEIR name or folder the candidates belong to.")] = None,
    data_dir: DataDirOption = None,
    split: Annotated[str | None, typer.Option(help="Qrels split of the queries (default: train).")] = None,
    out: Annotated[str | None, typer.Option(help="Pair store directory (default: runs/pair-scores).")] = None,
    m: Annotated[int | None, typer.Option("--m", "-m", help="Compare the top-m documents of each query.")] = None,
    max_rank_gap: Annotated[int | None, typer.Option(help="Only pair documents at most this many ranks apart.")] = None,
    orders: Annotated[
        str | None,
        typer.Option(help="symmetrised (both orders, averaged; default), both (raw) or ranked (one order)."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Triples per forward pass.")] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Truncate each (q, d_i, d_j) input to this many tokens.")
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="fp32 (default), bf16 or fp16.")] = None,
    part_size: Annotated[int | None, typer.Option(help="Comparisons per part file, the unit of resumption.")] = None,
    overwrite: OverwriteOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Score the pairs among each query's top-m candidates with a pairwise teacher (PairDistill); resumable.

    Re-running the same command after an interruption continues from the last complete part.

    Example: retrodistill score-pairwise --model runs/duo-ce --teacher-scores runs/scifact/ce-scores
    --dataset scifact -m 10 --out runs/scifact/pair-scores
    """
    from retrodistill.data.pair_store import STAGE as PAIR_STAGE
    from retrodistill.stages import score_pairwise as stage

    params = {"model": model, "batch_size": batch_size, "max_length": max_length, "dtype": dtype}
    with user_errors():
        cfg = resolve(
            stage.ScorePairwiseConfig,
            config,
            set_,
            {
                "data": {"dataset": dataset, "data_dir": data_dir, "split": split},
                "teacher_scores": teacher_scores,
                "candidates": candidates,
                "out": out,
                "m": m,
                "max_rank_gap": max_rank_gap,
                "orders": orders,
                "part_size": part_size,
            },
        )
        cfg.teacher.params.update({k: v for k, v in params.items() if v is not None})
        if "model" not in cfg.teacher.params:
            raise ValueError("no pairwise teacher model: pass --model or set teacher.params.model in the config")
        inputs = {
            "--teacher-scores": cfg.teacher_scores,
            "--candidates": cfg.candidates,
            "--model": cfg.teacher.params.get("model"),
            "--dataset": cfg.data.dataset,
            "--data-dir": cfg.data.data_dir,
        }
        with guarded_output(cfg.out, inputs=inputs, resumable={PAIR_STAGE}, overwrite=overwrite):
            store = stage.run(cfg)
    counts = store.manifest.get("counts", {})
    console.print(
        f"[green]wrote[/] {store.path}: {counts.get('rows', 0):,} pair probabilities "
        f"({counts.get('comparisons', 0):,} comparisons, {counts.get('queries', 0):,} queries)"
    )
