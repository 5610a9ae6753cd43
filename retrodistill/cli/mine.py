"""``retrodistill mine-negatives``: top-k of one or more retrievers per query → candidates artifact."""

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
    retriever: Annotated[
        list[str] | None,
        typer.Option(
            help="Candidate source, repeatable (merged, the source column says which found each): bm25s (default), "
            "pyserini-bm25, run:FILE (a TREC run) or a dense model (hub id or folder) searching its corpus embeddings.",
        ),
    ] = None,
    index: Annotated[
        str | None,
        typer.Option(help="Dense retrievers' index: faiss-flat-ip (exact, default) or faiss-factory:FACTORY."),
    ] = None,
    index_param: Annotated[
        list[str] | None,
        typer.Option("--index-param", help="A parameter of the index, KEY=VALUE, repeatable (as evaluate)."),
    ] = None,
    index_dir: Annotated[
        str | None,
        typer.Option(
            help="A saved faiss-factory index (evaluate --index-dir): reused when built for the model and corpus."
        ),
    ] = None,
    from_candidates: Annotated[
        str | None,
        typer.Option(help="Filter this candidates artifact with the rules below instead of retrieving."),
    ] = None,
    teacher_scores: Annotated[
        str | None,
        typer.Option(
            help="With --from-candidates: its teacher-score store, for --teacher-max-score / --teacher-margin."
        ),
    ] = None,
    rank_min: Annotated[
        int | None, typer.Option(help="Drop negatives ranked above this by their source (default 1: none).")
    ] = None,
    rank_max: Annotated[int | None, typer.Option(help="Drop negatives ranked below this (default: k).")] = None,
    absolute_margin: Annotated[
        float | None,
        typer.Option(help="Drop negatives scoring above the query's positive minus this (the source's scale)."),
    ] = None,
    relative_margin: Annotated[
        float | None,
        typer.Option(help="Drop negatives scoring above (1 - this) x the positive's score (0.05: NV-Retriever)."),
    ] = None,
    teacher_max_score: Annotated[
        float | None, typer.Option(help="Drop negatives the teacher scores above this (RocketQA denoising).")
    ] = None,
    teacher_margin: Annotated[
        float | None, typer.Option(help="Drop negatives the teacher scores above its positive's score minus this.")
    ] = None,
    overwrite: OverwriteOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Retrieve candidates per query; judged documents keep their grade, the rest are negatives.

    False-negative rules (rank range, margins to the positive, the teacher's scores) drop suspect
    negatives; the manifest records each rule and how many it removed.

    Examples:
      retrodistill mine-negatives --dataset scifact --split train --out runs/scifact/candidates
      retrodistill mine-negatives --retriever bm25s --retriever sentence-transformers/all-MiniLM-L6-v2 \\
          --relative-margin 0.05
      retrodistill mine-negatives --from-candidates runs/candidates --teacher-scores runs/teacher-scores \\
          --teacher-margin 0.1
    """
    from retrodistill.cli.evaluate import index_options
    from retrodistill.config import MineConfig
    from retrodistill.stages import mine_negatives as stage

    with user_errors():
        data = {"dataset": dataset, "data_dir": data_dir, "split": split}
        given = {
            "data": data,
            "out": out,
            "k": k,
            "ties": ties,
            "retrievers": retriever or None,
            "index_dir": index_dir,
            "from_candidates": from_candidates,
            "teacher_scores": teacher_scores,
            "rank_min": rank_min,
            "rank_max": rank_max,
            "absolute_margin": absolute_margin,
            "relative_margin": relative_margin,
            "teacher_max_score": teacher_max_score,
            "teacher_margin": teacher_margin,
            **index_options(index, index_param),
        }
        cfg = resolve(MineConfig, config, set_, given)
        stage.rules_of(cfg)  # a bad threshold is refused before the output folder is touched
        inputs = {
            "--dataset": cfg.data.dataset,
            "--data-dir": cfg.data.data_dir,
            "--index-dir": cfg.index_dir,
            "--from-candidates": cfg.from_candidates,
            "--teacher-scores": cfg.teacher_scores,
            **{f"--retriever {r}": r[4:] for r in cfg.retrievers if r.startswith("run:")},
        }
        with guarded_output(cfg.out, inputs=inputs, overwrite=overwrite):
            result = stage.run(cfg)
    unknown = result.manifest.get("unknown_judgments", {})
    if any(unknown.values()):
        console.print(
            f"[yellow]note:[/] {sum(unknown.values()):,} qrels lines were skipped: "
            f"{unknown.get('queries', 0)} name unknown query ids, {unknown.get('documents', 0)} unknown document ids"
        )
    removed = result.manifest.get("false_negative_control", {}).get("removed", {})
    if removed:
        listed = ", ".join(f"{name} {count:,}" for name, count in removed.items())
        console.print(f"false-negative rules removed: {listed}")
    counts = result.manifest["counts"]
    console.print(
        f"[green]wrote[/] {result.path}: {counts['queries']:,} queries, {counts['positives']:,} judged, "
        f"{counts['negatives']:,} negatives"
    )
