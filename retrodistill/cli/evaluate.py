"""``retrodistill evaluate``: dense retrieval + ir-measures metrics on BEIR names or dataset folders."""

from __future__ import annotations

from typing import Annotated

import typer

from retrodistill.cli.common import ConfigOption, DataDirOption, SetOption, console, out_console, resolve, user_errors


def evaluate(
    model: Annotated[str | None, typer.Option(help="Model to evaluate: hub id or sentence-transformers dir.")] = None,
    beir: Annotated[
        list[str] | None, typer.Option(help="BEIR dataset name(s), comma-separated or repeated: scifact,nfcorpus.")
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="BEIR-layout dataset folder(s), repeatable.")
    ] = None,
    data_dir: DataDirOption = None,
    split: Annotated[str | None, typer.Option(help="Qrels split (default: test).")] = None,
    measures: Annotated[
        str | None, typer.Option(help="ir-measures strings, comma-separated (default: nDCG@10,RR@10,R@100,R@1000).")
    ] = None,
    k: Annotated[int | None, typer.Option(help="Documents retrieved per query (default: 1000).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Texts per encoding batch (default: 64).")] = None,
    out: Annotated[str | None, typer.Option(help="Output directory (default: runs/eval).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Encode corpus and queries, search a FAISS inner-product index, and score the run.

    Writes OUT/<dataset>/run.trec, OUT/<dataset>/metrics.json (aggregate and per query),
    OUT/results.md, OUT/results.json and OUT/manifest.json.

    Example: retrodistill evaluate --beir scifact --model sentence-transformers/all-MiniLM-L6-v2
    """
    from retrodistill.config import EvaluateConfig
    from retrodistill.data.collections import load_beir
    from retrodistill.data.download import resolve_dataset
    from retrodistill.evaluate.beir import evaluate_collections

    names = [n.strip() for item in beir or [] for n in item.split(",") if n.strip()]
    with user_errors():
        cfg = resolve(
            EvaluateConfig,
            config,
            set_,
            {
                "model": model,
                "beir": names or None,
                "datasets": list(dataset) if dataset else None,
                "data_dir": data_dir,
                "split": split,
                "measures": [m.strip() for m in measures.split(",") if m.strip()] if measures else None,
                "k": k,
                "batch_size": batch_size,
                "out": out,
            },
        )
        sources = [*cfg.beir, *cfg.datasets]
        if not sources:
            raise ValueError("nothing to evaluate: pass --beir NAME and/or --dataset DIR")
        collections = []
        for source in sources:
            collection = load_beir(resolve_dataset(source, cfg.data_dir), cfg.split)
            console.print(collection.describe(), highlight=False)
            collections.append(collection)
        report = evaluate_collections(
            cfg.model, collections, cfg.measures, cfg.out, cfg.k, batch_size=cfg.batch_size
        )
    out_console.print(report.to_rich_table())
    console.print(f"[green]wrote[/] {report.out_dir}  ({report.wall_time_s:.0f} s)")
