"""``retrodistill ensemble-teachers``: member teacher-score stores → one ensemble store."""

from __future__ import annotations

from typing import Annotated

import typer

from retrodistill.cli.common import ConfigOption, DataDirOption, SetOption, console, resolve, user_errors


def ensemble_teachers(
    members: Annotated[
        list[str] | None,
        typer.Argument(
            help="Member teacher-score stores (two or more), scored from the same candidates.", show_default=False
        ),
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="Comma-separated weights, one per member (default: equal, i.e. the mean).")
    ] = None,
    normalization: Annotated[
        str | None,
        typer.Option(help="Per-query normalisation before weighting: none (default), zscore, minmax or rank."),
    ] = None,
    pairs: Annotated[
        str | None,
        typer.Option(help="exact (default): members must hold the same pairs; intersection: keep the pairs all hold."),
    ] = None,
    calibrate_qrels: Annotated[
        str | None, typer.Option(help="Fit a temperature per member on these training qrels (BEIR TSV or TREC).")
    ] = None,
    calibrate_dataset: Annotated[
        str | None, typer.Option(help="... or on the qrels of this dataset (BEIR name or folder).")
    ] = None,
    calibrate_split: Annotated[
        str | None, typer.Option(help="Qrels split for --calibrate-dataset (default: train).")
    ] = None,
    data_dir: DataDirOption = None,
    out: Annotated[str | None, typer.Option(help="Ensemble store directory (default: runs/ensemble-scores).")] = None,
    part_size: Annotated[int | None, typer.Option(help="Pairs per part file (default: the first member's).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Combine the stored scores of several teachers into one store that train-student accepts.

    score = Σ_k w_k · norm_q(s_k / T_k), per query; T_k = 1 unless calibrated on training qrels.

    Example (Hofstätter et al.'s T2, the mean of three BERT_CAT teachers):
    retrodistill ensemble-teachers runs/bert-base-scores runs/bert-large-scores runs/albert-large-scores
    --out runs/t2-scores
    """
    from retrodistill.stages.ensemble import EnsembleConfig, run

    with user_errors():
        cfg = resolve(
            EnsembleConfig,
            config,
            set_,
            {
                "members": members or None,
                "weights": weights,
                "normalization": normalization,
                "pairs": pairs,
                "calibrate": {
                    "qrels": calibrate_qrels,
                    "dataset": calibrate_dataset,
                    "split": calibrate_split,
                    "data_dir": data_dir,
                },
                "out": out,
                "part_size": part_size,
                "overwrite": overwrite or None,
            },
        )
        store = run(cfg)
    teacher = store.manifest["teacher"]
    calibration = teacher.get("calibration")
    temperatures = "" if calibration is None else f", temperatures {[round(t, 4) for t in calibration['temperatures']]}"
    console.print(
        f"[green]wrote[/] {store.path}: {store.manifest['num_pairs']:,} pairs, {len(teacher['members'])} members, "
        f"weights {[round(w, 4) for w in teacher['weights']]}, normalization {teacher['normalization']}{temperatures}",
        highlight=False,
    )
