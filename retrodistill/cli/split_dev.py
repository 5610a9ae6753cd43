"""``retrodistill split-dev``: a seeded dev split out of a training split, written as a dataset folder."""

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


def split_dev(
    dataset: Annotated[
        str | None, typer.Option(help="BEIR name (downloaded if missing) or a BEIR-layout folder (default: scifact).")
    ] = None,
    data_dir: DataDirOption = None,
    split: Annotated[str | None, typer.Option(help="The training split to carve from (default: train).")] = None,
    dev_queries: Annotated[int | None, typer.Option(help="Judged queries drawn into dev (default 100).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the draw (default 42).")] = None,
    out: Annotated[str | None, typer.Option(help="Dataset folder to write (default: runs/dev-split).")] = None,
    overwrite: OverwriteOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Carve a dev split out of a training split: choose settings on dev, evaluate test once.

    OUT is a dataset folder: its train split is the rest of the training queries, its dev split the
    drawn ones; corpus and queries are links to the source. Train with --dataset OUT, choose with
    `evaluate --dataset OUT --split dev`, and evaluate the final student on the source's test split.

    Example: retrodistill split-dev --dataset scifact --dev-queries 100 --out runs/scifact-dev
    """
    from retrodistill.config import SplitDevConfig
    from retrodistill.stages import split_dev as stage

    with user_errors():
        cfg = resolve(
            SplitDevConfig,
            config,
            set_,
            {
                "data": {"dataset": dataset, "data_dir": data_dir, "split": split},
                "dev_queries": dev_queries,
                "seed": seed,
                "out": out,
            },
        )
        with guarded_output(
            cfg.out, inputs={"--dataset": cfg.data.dataset, "--data-dir": cfg.data.data_dir}, overwrite=overwrite
        ):
            path = stage.run(cfg)
    import json

    counts = json.loads((path / "manifest.json").read_text())["counts"]
    console.print(
        f"[green]wrote[/] {path}: dev {counts['dev_queries']} queries ({counts['dev_judgments']} judgments), "
        f"train {counts['train_queries']} queries ({counts['train_judgments']} judgments)"
    )
