"""``retrodistill embed-teacher``: a bi-encoder teacher's query and document vectors → teacher-embedding store."""

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


def embed_teacher(
    model: Annotated[str | None, typer.Option(help="Bi-encoder teacher: hub id or path.")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="BEIR name (downloaded if missing) or a BEIR-layout folder (default: scifact).")
    ] = None,
    data_dir: DataDirOption = None,
    split: Annotated[str | None, typer.Option(help="Qrels split whose queries are embedded (default: train).")] = None,
    candidates: Annotated[
        str | None,
        typer.Option(help="Candidates artifact: embed its queries and the documents their negatives come from."),
    ] = None,
    negative_pool: Annotated[
        int | None, typer.Option(help="With --candidates: negatives of rank up to this (default 30, as training).")
    ] = None,
    similarity: Annotated[
        str | None, typer.Option(help="cosine (default; stores unit vectors) or dot: as the teacher scores.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Texts per forward pass (default 64).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Truncate texts to this many tokens.")] = None,
    embedding_cache_dir: Annotated[
        str | None,
        typer.Option(help="Corpus-embedding cache shared with evaluate (default: $RETRODISTILL_CACHE/embeddings)."),
    ] = None,
    out: Annotated[str | None, typer.Option(help="Store directory (default: runs/teacher-embeddings).")] = None,
    overwrite: OverwriteOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Embed the training queries and documents with a bi-encoder teacher, for the `embedding` loss.

    Documents are encoded through the corpus-embedding cache that `evaluate` uses, so evaluating the
    same model afterwards (or before) encodes the corpus once. Point train-student's
    teacher_embeddings.path at the store.

    Example: retrodistill embed-teacher --model sentence-transformers/all-MiniLM-L6-v2 --dataset scifact
    --candidates runs/scifact/candidates --out runs/scifact/teacher-embeddings
    """
    from retrodistill.config import EmbedTeacherConfig
    from retrodistill.stages import embed_teacher as stage

    with user_errors():
        cfg = resolve(
            EmbedTeacherConfig,
            config,
            set_,
            {
                "data": {"dataset": dataset, "data_dir": data_dir, "split": split},
                "candidates": candidates,
                "negative_pool": negative_pool,
                "model": model,
                "similarity": similarity,
                "batch_size": batch_size,
                "max_length": max_length,
                "embedding_cache_dir": embedding_cache_dir,
                "out": out,
            },
        )
        inputs = {
            "--candidates": cfg.candidates,
            "--model": cfg.model,
            "--dataset": cfg.data.dataset,
            "--data-dir": cfg.data.data_dir,
            "--embedding-cache-dir": cfg.embedding_cache_dir,
        }
        with guarded_output(cfg.out, inputs=inputs, overwrite=overwrite):
            store = stage.run(cfg)
    counts, cache = store.manifest["counts"], store.manifest.get("corpus_embeddings", {})
    console.print(
        f"[green]wrote[/] {store.path}: {counts['queries']:,} queries, {counts['documents']:,} documents "
        f"(dim {store.manifest['dim']}); corpus shards encoded {cache.get('shards_encoded', 0)}, "
        f"read from the cache {_shards_read(cache)}"
    )


def _shards_read(cache: dict[str, int]) -> int:
    """Corpus shards the stage read from the cache without encoding them."""
    return max(0, int(cache.get("shards_needed", 0)) - int(cache.get("shards_encoded", 0)))
