"""``retrodistill score-teacher``: teacher scores for every distinct candidate pair → store."""

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
from retrodistill.outputs import check_output, guarded_output, output_lock


def score_teacher(
    model: Annotated[str | None, typer.Option(help="Teacher model: hub id or path.")] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="Teacher plug-in: cross-encoder, bi-encoder, colbert or bm25 (default: cross-encoder)."),
    ] = None,
    candidates: Annotated[str | None, typer.Option(help="Candidates artifact (default: runs/candidates).")] = None,
    triples: Annotated[str | None, typer.Option(help="MS MARCO id-triples TSV, instead of candidates.")] = None,
    dataset: Annotated[str | None, typer.Option(help="BEIR name or folder the candidates belong to.")] = None,
    data_dir: DataDirOption = None,
    split: Annotated[str | None, typer.Option(help="Qrels split of the queries (default: train).")] = None,
    out: Annotated[str | None, typer.Option(help="Store directory (default: runs/teacher-scores).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs (or texts) per forward pass.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Truncate teacher inputs to this many tokens.")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp32 (default), bf16 or fp16.")] = None,
    part_size: Annotated[int | None, typer.Option(help="Pairs per part file, the unit of resumption.")] = None,
    prepare: Annotated[
        str,
        typer.Option(
            help="Texts each process prepares (encodes up front): 'all' (bit-identical stores) or 'shard' "
            "(only its parts'; with several processes, bi-encoder scores may differ in the last bit)."
        ),
    ] = "all",
    overwrite: OverwriteOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Score every distinct (query, document) candidate once with the teacher; resumable.

    Re-running the same command after an interruption continues from the last complete part.
    Under `torchrun --nproc_per_node N -m retrodistill score-teacher ...` (or `accelerate launch
    --multi_gpu --num_processes N -m retrodistill score-teacher ...`) the N processes share the parts
    and rank 0 merges them; only rank 0 shows progress bars and prints the summary.

    Example: retrodistill score-teacher --teacher cross-encoder --model cross-encoder/ms-marco-MiniLM-L6-v2
    --dataset scifact --candidates runs/scifact/candidates --out runs/scifact/ce-scores
    """
    from retrodistill.config import ScoreTeacherConfig
    from retrodistill.data.store import STAGE as STORE_STAGE
    from retrodistill.stages import score_teacher as stage

    params = {"model": model, "batch_size": batch_size, "max_length": max_length, "dtype": dtype}
    with user_errors():
        cfg = resolve(
            ScoreTeacherConfig,
            config,
            set_,
            {
                "data": {"dataset": dataset, "data_dir": data_dir, "split": split},
                "candidates": candidates,
                "triples": triples,
                "out": out,
                "part_size": part_size,
                "teacher": {"name": teacher},
            },
        )
        cfg.teacher.params.update({k: v for k, v in params.items() if v is not None})
        if "model" not in cfg.teacher.params and cfg.teacher.name != "bm25":  # BM25 has a corpus, no model
            raise ValueError("no teacher model: pass --model or set teacher.params.model in the config")
        inputs = {
            "--candidates": cfg.candidates,
            "--triples": cfg.triples,
            "--model": cfg.teacher.params.get("model"),
            "--dataset": cfg.data.dataset,
            "--data-dir": cfg.data.data_dir,
        }
        me = stage.scoring_rank()
        if me.world_size > 1:  # ranks share the store: none may move it aside; a stale one is refused
            check_output(cfg.out, inputs=inputs, resumable={STORE_STAGE})
            store = stage.run(cfg, prepare=prepare)
        else:
            # One writer per store: a second run on it refuses while the first lives (a stale lock is taken over).
            with (
                output_lock(cfg.out, "score-teacher"),
                guarded_output(cfg.out, inputs=inputs, resumable={STORE_STAGE}, overwrite=overwrite),
            ):
                store = stage.run(cfg, prepare=prepare)
        rank = me.rank
    if rank == 0:
        console.print(f"[green]wrote[/] {store.path}: {store.manifest.get('num_pairs', 0):,} scored pairs")
