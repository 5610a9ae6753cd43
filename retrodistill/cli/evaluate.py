"""``retrodistill evaluate``: models × datasets → one table, with a run cache and significance tests."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

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
from retrodistill.outputs import guarded_output


def _split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def index_options(index: str | None, params: list[str] | None) -> dict[str, object]:
    """``--index NAME[:FACTORY]`` and ``--index-param KEY=VALUE`` as config keys ``index.name``, ``index.params.KEY``.

    Each value is read as YAML (``64`` → int, ``false`` → bool); a factory string stays a string.

    Example:
        >>> index_options("faiss-factory:IVF1024,PQ32", ["nprobe=64"])
        {'index.name': 'faiss-factory', 'index.params.factory': 'IVF1024,PQ32', 'index.params.nprobe': 64}
    """
    import yaml

    options: dict[str, object] = {}
    if index is not None:
        name, _, factory = index.partition(":")
        options["index.name"] = name.strip()
        if factory:
            options["index.params.factory"] = factory.strip()
    for text in params or []:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip() or "." in key:
            raise ValueError(f"--index-param {text!r}: expected KEY=VALUE, e.g. nprobe=64")
        try:
            options[f"index.params.{key.strip()}"] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ValueError(f"--index-param {text!r}: the value is not valid YAML") from None
    return options


def evaluate(
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="Model(s), repeatable or comma-separated: a sentence-transformers hub id or directory, "
            "'bm25s', 'pyserini-bm25' or 'pyserini-bm25-multifield' (the pyserini extra); NAME=MODEL labels "
            "its column. Default: all-MiniLM-L6-v2, unless --run is given."
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
    measure: Annotated[
        list[str] | None,
        typer.Option(
            "--measure",
            help="An ir-measures string, repeatable, written as ir-measures writes it: nDCG@10, RR@10, "
            "'P(rel=2,judged_only=True)@10' … (default: nDCG@10, RR@10, R@100, R@1000).",
        ),
    ] = None,
    measures: Annotated[
        list[str] | None,
        typer.Option(
            "--measures",
            hidden=True,
            help="Deprecated: use --measure. Comma-separated; commas inside parentheses do not split.",
        ),
    ] = None,
    rel_threshold: Annotated[
        int | None,
        typer.Option(help="Minimum grade that binary measures count as relevant (default: 1; 2 for TREC DL)."),
    ] = None,
    ignore_identical_ids: Annotated[
        bool | None,
        typer.Option(
            "--ignore-identical-ids/--keep-identical-ids",
            help="Drop a retrieved document whose id is the query's (BEIR's rule where queries are also documents, "
            "as in ArguAna and Quora), or keep it. Default: the registered dataset's rule (also for its folder, "
            "recognised by fingerprint), else keep.",
            show_default=False,
        ),
    ] = None,
    run: Annotated[
        list[str] | None,
        typer.Option(
            "--run",
            help="A TREC run file to score as a column of its own (repeatable): FILE, named after the file, or "
            "NAME=FILE. Scored as it is (not cut to --k; the identical-id rule applies) on the one dataset "
            "given (--beir, --dataset or --qrels), with the same tests (--baseline).",
        ),
    ] = None,
    qrels: Annotated[
        str | None,
        typer.Option(
            help="Score --run files against this qrels file alone (BEIR or TREC form; NAME=FILE names the row), "
            "instead of a dataset."
        ),
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
    index: Annotated[
        str | None,
        typer.Option(
            help="Dense index: faiss-flat-ip (exact, default) or faiss-factory:FACTORY, any FAISS index_factory "
            "string, e.g. 'faiss-factory:HNSW32,Flat', 'faiss-factory:IVF1024,PQ32'."
        ),
    ] = None,
    index_param: Annotated[
        list[str] | None,
        typer.Option(
            "--index-param",
            help="A parameter of the index, KEY=VALUE, repeatable: nprobe=64 (IVF), efSearch=128 (HNSW), "
            "efConstruction=200 (HNSW, when built), "
            "train_size=100000, use_gpu=false (see `retrodistill plugins`).",
        ),
    ] = None,
    index_dir: Annotated[
        str | None,
        typer.Option(
            help="Keep the faiss-factory index here: reused (only queries are encoded) when it was built for the "
            "same model, corpus and factory, refused when built for others, built and saved when absent. "
            "One dense model and one dataset."
        ),
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

    Score runs you already have, in the same table and tests: retrodistill evaluate --qrels qrels.txt
    --run bm25=bm25.trec --run mine.trec --baseline bm25 (or --run with --beir/--dataset).
    """
    from retrodistill.config import EvaluateConfig
    from retrodistill.data.registry import load_entry, qrels_entry
    from retrodistill.evaluate.metrics import split_measures
    from retrodistill.evaluate.runs import parse_model
    from retrodistill.evaluate.suite import evaluate_suite

    models = _split_list(model)
    with user_errors():
        measure_list = [*(measure or []), *(m for item in measures or [] for m in split_measures(item))]
        index_given = index_options(index, index_param)
        if measures:
            console.print("[yellow]--measures is deprecated: repeat --measure instead[/]", highlight=False)
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
                "measures": measure_list or None,
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
                "runs": list(run) if run else None,
                "qrels": qrels,
                "ignore_identical_ids": ignore_identical_ids,
                "index_dir": index_dir,
                **index_given,
            },
        )
        qrels, ignore_identical_ids = cfg.qrels, cfg.ignore_identical_ids
        sources = [*cfg.beir, *cfg.datasets]
        if not sources and qrels is None:
            raise ValueError("nothing to evaluate: pass --beir NAME and/or --dataset DIR (or --qrels FILE with --run)")
        if qrels is not None and sources:
            raise ValueError("--qrels scores run files without a dataset: pass it without --beir and --dataset")
        entries = []
        for source in sources:
            entries.append(
                load_entry(
                    source,
                    cfg.split,
                    cfg.data_dir,
                    rel_threshold=cfg.rel_threshold,
                    ignore_identical_ids=ignore_identical_ids,
                )
            )
        if qrels is not None:
            name, path = parse_model(qrels)
            entries.append(
                qrels_entry(path, name, rel_threshold=cfg.rel_threshold, ignore_identical_ids=ignore_identical_ids)
            )
        for entry in entries:
            for collection in entry.collections:
                console.print(collection.describe(), highlight=False)
            for line in entry.info:
                console.print(line, highlight=False, markup=False)
            for line in entry.warnings:
                console.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False)
        runs = list(cfg.runs)
        models = cfg.models or ([] if runs else [cfg.model])
        inputs: dict[str, str | None] = {f"--dataset {d}": d for d in cfg.datasets}
        inputs |= {f"--run {r}": parse_model(r)[1] for r in runs}
        inputs |= {"--qrels": None if qrels is None else parse_model(qrels)[1]}
        inputs |= {f"--model {m}": m for m in models}
        inputs |= {"--data-dir": cfg.data_dir, "--cache-dir": cfg.cache_dir, "--index-dir": cfg.index_dir}
        with guarded_output(cfg.out, inputs=inputs, overwrite=overwrite):
            result = evaluate_suite(
                models,
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
                index=cfg.index.name,
                index_params=cfg.index.params,
                index_dir=cfg.index_dir,
                alpha=cfg.alpha,
                permutations=cfg.permutations,
                seed=cfg.seed,
                runs=runs,
            )
    for table in result.to_rich_tables():
        out_console.print(table)
    for line in result.warnings[sum(len(e.warnings) for e in entries) :]:  # the entries' were printed above
        console.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False)
    cache = f"{result.cache_hits} cached, {result.cache_misses} computed"
    console.print(f"[green]wrote[/] {result.out_dir}  ({result.wall_time_s:.0f} s; runs: {cache})")
