"""Evaluate one model on a suite of collections and write the table.

Output directory::

    OUT/
      DATASET/run.trec        the top-k run (see :mod:`retrodistill.evaluate.run_files`)
      DATASET/metrics.json    dataset, split, counts, aggregate and per-query metrics
      results.md              one row per dataset and a "mean" row; one column per measure, 4 decimals
      results.json            the same numbers, unrounded
      manifest.json           model id and revision, dataset fingerprints, measures, k, wall time

``DATASET`` is the dataset's slug (``scifact__1a2b3c``, :func:`~retrodistill.evaluate.output_names.slug`):
readable, one folder that no two names share and that stays inside ``OUT``. Dataset and model
names are escaped in ``results.md`` and in the terminal table.

The "mean" row is the unweighted mean over datasets of each dataset's mean over its queries
(the BEIR convention), not a mean over the pooled queries.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrodistill.artifacts import model_revision, write_json_atomic, write_manifest, write_text_atomic
from retrodistill.evaluate.metrics import DEFAULT_MEASURES, MetricResult, compute_metrics, parse_measures
from retrodistill.evaluate.output_names import check_distinct_slugs, escape_markdown, escape_rich, slug
from retrodistill.evaluate.retrieval import encode_and_search, load_model, open_embedding_cache
from retrodistill.evaluate.run_files import write_metrics_json, write_run

if TYPE_CHECKING:
    from rich.table import Table

    from retrodistill.data.collections import Collection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetResult:
    """One collection's scores and where its files are."""

    name: str
    split: str
    metrics: MetricResult
    num_queries: int
    num_documents: int
    wall_time_s: float
    run_path: Path
    metrics_path: Path


@dataclass
class Report:
    """What :func:`evaluate_collections` computed; print it with :meth:`to_rich_table`."""

    model: str
    revision: str | None
    measures: tuple[str, ...]
    datasets: list[DatasetResult] = field(default_factory=list)
    out_dir: Path | None = None
    wall_time_s: float = 0.0

    def mean(self) -> dict[str, float]:
        """Each measure averaged over datasets (unweighted)."""
        if not self.datasets:
            return {}
        return {m: sum(d.metrics.aggregate[m] for d in self.datasets) / len(self.datasets) for m in self.measures}

    def rows(self) -> list[tuple[str, ...]]:
        """Table rows, the header first: ``("dataset", *measures)``, one per dataset, then ``"mean"``.

        Values are formatted with 4 decimals; the mean row is left out while there are no datasets.
        """
        rows: list[tuple[str, ...]] = [("dataset", *self.measures)]
        for d in self.datasets:
            rows.append((d.name, *(f"{d.metrics.aggregate[m]:.4f}" for m in self.measures)))
        if self.datasets:
            mean = self.mean()
            rows.append(("mean", *(f"{mean[m]:.4f}" for m in self.measures)))
        return rows

    def to_markdown(self) -> str:
        header, *body = self.rows()
        lines = [  # names are the user's: escaped, so "|" cannot split a cell nor "<script>" become HTML
            "| " + " | ".join(escape_markdown(cell) for cell in header) + " |",
            "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(escape_markdown(cell) for cell in row) + " |" for row in body]
        return "\n".join(lines) + "\n"

    def to_rich_table(self) -> Table:
        from rich.table import Table

        header, *body = self.rows()
        title = self.model if self.revision is None else f"{self.model} @ {self.revision[:12]}"
        table = Table(title=escape_rich(title))
        table.add_column(escape_rich(header[0]))
        for name in header[1:]:
            table.add_column(escape_rich(name), justify="right")
        for i, row in enumerate(body):
            table.add_row(*(escape_rich(c) for c in row), end_section=i == len(body) - 2)  # a rule above the mean row
        return table

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "revision": self.revision,
            "measures": list(self.measures),
            "datasets": {
                d.name: {
                    "split": d.split,
                    "queries": d.num_queries,
                    "documents": d.num_documents,
                    "wall_time_s": round(d.wall_time_s, 3),
                    **d.metrics.aggregate,
                }
                for d in self.datasets
            },
            "mean": self.mean(),
        }


def _model_facts(model: Any) -> dict[str, Any]:
    """The settings of a loaded model that change its scores, for the manifest."""
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return {
        "max_seq_length": getattr(model, "max_seq_length", None),
        "similarity_fn_name": getattr(model, "similarity_fn_name", None),
        "embedding_dimension": dimension(),
        "prompts": dict(getattr(model, "prompts", {}) or {}),
    }


def evaluate_collections(
    model_name_or_path: str | os.PathLike[str] | Any,
    collections: Sequence[Collection],
    measures: Sequence[str] = DEFAULT_MEASURES,
    out_dir: str | os.PathLike[str] = "runs/evaluate",
    k: int = 1000,
    *,
    batch_size: int = 64,
    device: str | None = None,
    cache_folder: str | None = None,
    index: str = "faiss-flat-ip",
    index_params: dict[str, Any] | None = None,
    ignore_identical_ids: bool = False,
    rel_threshold: int = 1,
    run_tag: str | None = None,
    show_progress: bool = True,
    embedding_cache_dir: str | os.PathLike[str] | None = None,
    embedding_dtype: str = "float32",
) -> Report:
    """Retrieve with one model on each collection, score the runs and write the report files.

    Args:
        model_name_or_path: a sentence-transformers hub id or directory, or a loaded encoder (anything
            with ``encode_query``/``encode_document`` and ``get_embedding_dimension``; its
            ``model_id`` and ``revision`` attributes, if any, go into the manifest).
        collections: the datasets, each with the split to evaluate loaded; names must be unique.
        measures: ir-measures strings (see :mod:`retrodistill.evaluate.metrics`).
        out_dir: where the files listed in the module docstring go.
        k: documents retrieved per query (and written to each run file).
        batch_size: texts per forward pass.
        device: torch device for the model; ``None`` lets sentence-transformers pick.
        cache_folder: the Hugging Face hub cache to load a hub id from; ``None`` for the default.
        index: an index backend name; ``index_params`` its keyword arguments.
        ignore_identical_ids: drop a retrieved document whose id equals the query id (BEIR's rule
            for ArguAna and Quora).
        rel_threshold: minimum grade counted as relevant by binary measures.
        run_tag: the run files' tag column; defaults to the model's directory or repository name.
        show_progress: show encoding progress bars.
        embedding_cache_dir: keep the corpus embeddings in this corpus-embedding cache
            (:mod:`retrodistill.data.embeddings`; e.g. :func:`~retrodistill.data.embeddings.default_embedding_dir`)
            and reuse what it holds; ``None`` encodes without keeping them. A loaded encoder is cached
            only when it has a ``revision``. ``embedding_dtype``: ``"float32"`` or ``"float16"``.

    Returns:
        A :class:`Report` with per-dataset and mean scores.
    """
    names = [c.name for c in collections]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"dataset names must be unique; repeated: {', '.join(duplicates)}")
    if not collections:
        raise ValueError("no collections to evaluate")
    check_distinct_slugs(names, "dataset")
    measures = tuple(measures)
    parse_measures(measures, rel_threshold)  # fail on a bad measure before encoding anything
    out = Path(out_dir)
    started = time.perf_counter()
    if isinstance(model_name_or_path, (str, os.PathLike)):
        model_id = str(model_name_or_path)
        model = load_model(model_name_or_path, device=device, cache_folder=cache_folder)
        revision: str | None = model_revision(str(model_name_or_path), cache_dir=cache_folder)
    else:  # an already-loaded encoder, e.g. a teacher whose embeddings are cached from scoring
        model = model_name_or_path
        model_id = str(getattr(model, "model_id", type(model).__name__))
        revision = getattr(model, "revision", None)
    identity: dict[str, Any] | None = None
    if embedding_cache_dir is not None:
        if isinstance(model_name_or_path, (str, os.PathLike)):
            from retrodistill.evaluate.runs import model_identity

            identity = model_identity(model_id, cache_folder)
        elif revision is not None:
            identity = {"kind": "dense", "id": model_id, "revision": revision}
        else:
            logger.warning("%s has no revision to key its embeddings by: they are not cached", model_id)
    tag = run_tag or re.sub(r"\s+", "_", Path(model_id).name) or "retrodistill"
    report = Report(model_id, revision, measures, out_dir=out)

    for collection in collections:
        t0 = time.perf_counter()
        cache = None
        if identity is not None and embedding_cache_dir is not None:
            cache = open_embedding_cache(model, collection, embedding_cache_dir, identity, dtype=embedding_dtype)
        run = encode_and_search(
            model,
            collection,
            k=k,
            batch_size=batch_size,
            index=index,
            show_progress=show_progress,
            index_params=index_params,
            ignore_identical_ids=ignore_identical_ids,
            embedding_cache=cache,
        )
        result = compute_metrics(collection.qrels, run, measures, rel_threshold=rel_threshold)
        wall = time.perf_counter() - t0
        run_path = write_run(out / slug(collection.name) / "run.trec", run, tag=tag)
        metrics_path = write_metrics_json(
            out / slug(collection.name) / "metrics.json",
            result,
            {
                "dataset": collection.name,
                "split": collection.split,
                "model": model_id,
                "revision": report.revision,
                "k": k,
                "queries": len(collection.queries),
                "documents": len(collection.corpus),
                "fingerprints": collection.fingerprints,
            },
        )
        report.datasets.append(
            DatasetResult(
                collection.name,
                collection.split,
                result,
                len(collection.queries),
                len(collection.corpus),
                wall,
                run_path,
                metrics_path,
            )
        )

    report.wall_time_s = time.perf_counter() - started
    write_text_atomic(out / "results.md", report.to_markdown())
    write_json_atomic(out / "results.json", report.to_json())
    write_manifest(
        out,
        {
            "stage": "evaluate",
            "config": {
                "k": k,
                "batch_size": batch_size,
                "device": device,
                "index": index,
                "index_params": index_params or {},
                "ignore_identical_ids": ignore_identical_ids,
                "rel_threshold": rel_threshold,
            },
            "model": {"id": model_id, "revision": report.revision, **_model_facts(model)},
            "measures": list(measures),
            "inputs": {
                f"{c.name}/{key}": fingerprint for c in collections for key, fingerprint in c.fingerprints.items()
            },
            "datasets": {c.name: {"split": c.split} for c in collections},
            "counts": {c.name: {"queries": len(c.queries), "documents": len(c.corpus)} for c in collections},
            "wall_time_s": round(report.wall_time_s, 3),
        },
    )
    return report
