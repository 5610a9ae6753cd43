"""``retrodistill evaluate``: models × datasets → one table, with a run cache and significance tests."""

from __future__ import annotations

from typing import Annotated

import typer

from retrodistill.artifacts import guarded_output
from retrodistill.cli.common import (
    ConfigOption,
    DataDirOption,
    OverwriteOption,
    SetOption,
    console,
    out_console,
    resolve,
    user_errors,
)


def _split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def evaluate(
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="Model(s), repeatable or comma-separated: a sentence-transformers hub id or directory, "
            "'bm25s', or 'pyserini-bm25' (the pyserini extra). Default: all-MiniLM-L6-v2."
        ),
    ] = None,
    beir: Annotated[
        list[str] | None,
        typer.Option(
            help="Registered dataset name(s), comma-separated or repeated: scifact,nfcorpus, cqadupstack, "
            "msmarco-dev-small, trec-dl-2019 … (see `retrodistill datasets`)."
        ),
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="BEIR-layout dataset folder(s), repeatable.")
    ] = None,
    data_dir: DataDirOption = None,
    split: Annotated[str | None, typer.Option(help="Qrels split (default: each dataset's test split).")] = None,
    measures: Annotated[
        str | None, typer.Option(help="ir-measures strings, comma-separated (default: nDCG@10,RR@10,R@100,R@1000).")
    ] = None,
    rel_threshold: Annotated[
        int | None,
        typer.Option(help="Minimum grade that binary measures count as relevant (default: 1; 2 for TREC DL)."),
    ] = None,
    k: Annotated[int | None, typer.Option(help="Documents retrieved per query (default: 1000).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Texts per encoding batch (default: 64).")] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Column to test every other against (paired t-test + randomization, Holm).")
    ] = None,
    rerank: Annotated[
        str | None, typer.Option(help="Cross-encoder that reranks each model's run (adds a column per model).")
    ] = None,
    rerank_depth: Annotated[int | None, typer.Option(help="Documents reranked per query (default: 100).")] = None,
    cache_dir: Annotated[
        str | None, typer.Option(help="Run cache (default: $RETRODISTILL_CACHE/runs or ~/.cache/retrodistill/runs).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute every run; write no cache.")] = False,
    embedding_cache_dir: Annotated[
        str | None,
        typer.Option(
            help="Corpus-embedding cache, shared with dense mining (default: $RETRODISTILL_CACHE/embeddings "
            "or ~/.cache/retrodistill/embeddings); an interrupted encoding resumes from its finished shards."
        ),
    ] = None,
    embedding_dtype: Annotated[
        str | None, typer.Option(help="Stored corpus embeddings: float32 (default) or float16 (half the disk).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Output directory (default: runs/eval).")] = None,
    overwrite: OverwriteOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Retrieve with each model on each dataset, score the runs and write one table.

    Writes OUT/results.md, OUT/results.csv, OUT/results.json, OUT/manifest.json and, per model and
    dataset, OUT/runs/MODEL/DATASET/run.trec and metrics.json (aggregate and per query). Runs are
    cached by model and dataset fingerprints, so a re-run only computes what is new.

    Example: retrodistill evaluate --beir scifact --model sentence-transformers/all-MiniLM-L6-v2 --model bm25s
    --baseline bm25s
    """
    from retrodistill.config import EvaluateConfig
    from retrodistill.data.registry import load_entry
    from retrodistill.evaluate.suite import evaluate_suite

    models = _split_list(model)
    with user_errors():
        cfg = resolve(
            EvaluateConfig,
            config,
            set_,
            {
                "models": models or None,
                "beir": _split_list(beir) or None,
                "datasets": list(dataset) if dataset else None,
                "data_dir": data_dir,
                "split": split,
                "measures": _split_list([measures]) if measures else None,
                "rel_threshold": rel_threshold,
                "k": k,
                "batch_size": batch_size,
                "baseline": baseline,
                "rerank": rerank,
                "rerank_depth": rerank_depth,
                "cache_dir": cache_dir,
                "use_cache": False if no_cache else None,
                "embedding_cache_dir": embedding_cache_dir,
                "embedding_dtype": embedding_dtype,
                "out": out,
            },
        )
        sources = [*cfg.beir, *cfg.datasets]
        if not sources:
            raise ValueError("nothing to evaluate: pass --beir NAME and/or --dataset DIR")
        entries = []
        for source in sources:
            entry = load_entry(source, cfg.split, cfg.data_dir, rel_threshold=cfg.rel_threshold)
            for collection in entry.collections:
                console.print(collection.describe(), highlight=False)
            entries.append(entry)
        inputs: dict[str, str | None] = {f"--dataset {d}": d for d in cfg.datasets}
        inputs |= {f"--model {m}": m for m in cfg.models or [cfg.model]}
        inputs |= {"--data-dir": cfg.data_dir, "--cache-dir": cfg.cache_dir}
        with guarded_output(cfg.out, inputs=inputs, overwrite=overwrite):
            result = evaluate_suite(
                cfg.models or [cfg.model],
                entries,
                cfg.measures,
                cfg.out,
                cfg.k,
                baseline=cfg.baseline,
                rerank=cfg.rerank,
                rerank_depth=cfg.rerank_depth,
                batch_size=cfg.batch_size,
                cache_dir=cfg.cache_dir,
                use_cache=cfg.use_cache,
                embedding_cache_dir=cfg.embedding_cache_dir,
                embedding_dtype=cfg.embedding_dtype,
                alpha=cfg.alpha,
                permutations=cfg.permutations,
                seed=cfg.seed,
            )
    for table in result.to_rich_tables():
        out_console.print(table)
    cache = f"{result.cache_hits} cached, {result.cache_misses} computed"
    console.print(f"[green]wrote[/] {result.out_dir}  ({result.wall_time_s:.0f} s; runs: {cache})")
