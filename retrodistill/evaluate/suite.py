"""Evaluate several models on several datasets into one table, with a run cache and significance tests.

A *model* is named by a string:

=====================  ===============================================================================
``bm25s``              BM25 through bm25s (k1 = 0.9, b = 0.4, English stemming and stopwords)
``pyserini-bm25``      BM25 through Pyserini / Lucene, BEIR "flat" (k1 = 0.9, b = 0.4); the
                       ``pyserini`` extra
``pyserini-bm25-multifield``  the same, BEIR "multifield": the title as its own field, searched
                       beside the text with weight 1.0 each (Pyserini 2CR ``bm25-multifield``)
anything else          a sentence-transformers model: hub id or directory, dense retrieval through
                       FAISS (:mod:`retrodistill.evaluate.retrieval`)
=====================  ===============================================================================

With ``rerank``, each model's top ``rerank_depth`` documents per query are also rescored by a
cross-encoder, which adds a column labelled ``MODEL>>rerank:RERANKER@DEPTH`` beside the model's own.
The reranked documents come first, ordered by the cross-encoder's score; the documents below the
depth keep their first-stage order beneath them, so recall at depths past ``rerank_depth`` is the first stage's.

A *dataset* is a :class:`~retrodistill.data.registry.SuiteEntry`: one collection, or a group
(CQADupStack's 12 forums) whose row is the unweighted mean over its members, with the
identical-id rule and the relevance threshold of that dataset.

Output folder (``out_dir``)::

    results.md / results.csv / results.tex / results.json / manifest.json   (results.tex: booktabs LaTeX)
    runs/<model_slug>/<dataset_slug>/run.trec       the run (a group: one file per member, merged ids)
    runs/<model_slug>/<dataset_slug>/metrics.json   aggregate and per-query scores

A slug is the name made file-safe and followed by a short hash of the exact name
(``bm25s__92a562``, :func:`~retrodistill.evaluate.output_names.slug`), so two names never share a
folder and none reaches outside ``out_dir``; ``results.json`` gives each model's slug and the path
of every ``metrics.json``. Names are escaped in ``results.md`` (Markdown and HTML) and in the
terminal tables.

Caches: a dense model's corpus embeddings are kept in the corpus-embedding cache
(``embedding_cache_dir``, :mod:`retrodistill.data.embeddings`), keyed by the model and the corpus
alone, so another ``k`` or another split of the same corpus encodes only queries. Every run is
also kept under ``cache_dir/<key>/run.trec``, where the key is a sha256 over the model's identity
(kind, id, revision or weight hash, the settings that change its ranking, the reranker's identity
and depth), the collection's corpus and queries fingerprints and the ids of the split's queries.
The run is cached before its post-filters, at depth ``k + 1``: the identical-id rule, the cut to
``k`` and the relevance threshold are applied on read (:func:`~retrodistill.evaluate.runs.post_filter`),
so changing any of them, or the measures, never re-encodes a corpus nor recomputes a run.

Dense models search exactly (``faiss-flat-ip``) unless ``index`` names another backend, e.g.
``faiss-factory`` with ``index_params={"factory": "HNSW32,Flat", "efSearch": 128}``
(:mod:`retrodistill.index.faiss_factory`); its name and parameters then join the run cache's key
(not the embedding cache's: the vectors are the same). ``index_dir`` keeps that index on disk for
one dense model on one collection: a later evaluation of the same model and corpus loads it and
encodes only the queries; an index built for another model or corpus is refused. It is built when
a run is computed (a run the run cache holds needs no index).

Scoring follows trec_eval given the full qrels: every judged query is retrieved for and averaged,
judgments to documents absent from the corpus included
(:meth:`~retrodistill.data.collections.Collection.for_evaluation`). ``runs`` adds TREC run files as
columns (``FILE`` or ``NAME=FILE``), scored and tested like the models' runs. ``warnings`` of the
result name what may make a figure mislead: queries that retrieve themselves while identical ids
are kept, graded qrels scored at a threshold nobody chose (:func:`~retrodistill.data.registry.check_entry`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrodistill.artifacts import write_json_atomic, write_manifest, write_text_atomic
from retrodistill.evaluate.latex import results_latex
from retrodistill.evaluate.metrics import DEFAULT_MEASURES, Run, compute_metrics, parse_measures
from retrodistill.evaluate.output_names import check_distinct_slugs, run_tag, slug
from retrodistill.evaluate.results import SuiteResult
from retrodistill.evaluate.run_files import read_run, write_metrics_json, write_run
from retrodistill.evaluate.runs import (
    CACHE_ENV,
    CACHE_VERSION,
    LEXICAL,
    ModelSpec,
    Retrievers,
    RunCache,
    cache_key,
    default_cache_dir,
    file_run,
    lexical_run,
    model_identity,
    parse_model,
    post_filtered_run,
    rerank_run,
    run_file_identity,
    run_file_spec,
    spec_identity,
)

if TYPE_CHECKING:
    from retrodistill.data.collections import Collection
    from retrodistill.data.registry import SuiteEntry

__all__ = [  # the run machinery lived here before retrodistill.evaluate.runs; its names stay importable
    "CACHE_ENV",
    "CACHE_VERSION",
    "LEXICAL",
    "ModelSpec",
    "SuiteResult",
    "cache_key",
    "default_cache_dir",
    "evaluate_suite",
    "lexical_run",
    "model_identity",
    "rerank_run",
    "slug",
]


def collection_entry(
    collection: Collection, *, ignore_identical_ids: bool = False, rel_threshold: int = 1, name: str | None = None
) -> SuiteEntry:
    """A table row for a collection already loaded (a subset, a collection built in code), with its rules."""
    from retrodistill.data.registry import SuiteEntry

    return SuiteEntry(
        name=name or collection.name,
        collections=[collection],
        ignore_identical_ids=ignore_identical_ids,
        rel_threshold=rel_threshold,
        split=collection.split,
    )


def _mean(values: Sequence[Mapping[str, float]], measures: Sequence[str]) -> dict[str, float]:
    return {m: sum(v[m] for v in values) / len(values) for m in measures}


#: The share of queries that retrieve their own id at rank 1 from which a run draws a warning.
SELF_HIT_SHARE = 0.1


def self_hit_warning(label: str, dataset: str, self_hits: int, queries: int) -> str | None:
    """A warning when many queries retrieved their own id at rank 1 and identical ids are kept, else None."""
    if self_hits < 2 or self_hits < SELF_HIT_SHARE * queries:
        return None
    return (
        f"{label} on {dataset}: {self_hits:,} of {queries:,} queries retrieved a document with their own id at "
        "rank 1; if these queries are these documents (as in ArguAna and Quora) pass --ignore-identical-ids "
        "(BEIR's rule), or --keep-identical-ids to keep them and silence this warning"
    )


#: The exact search every dense run used before other backends existed: it adds nothing to a run's cache key.
DEFAULT_INDEX = "faiss-flat-ip"


def _check_index(
    index: str,
    params: Mapping[str, Any] | None,
    index_dir: str | os.PathLike[str] | None,
    dense_names: Sequence[str],
    entries: Sequence[SuiteEntry],
) -> dict[str, Any] | None:
    """Refuse a bad index setting before any work; return what it adds to a dense run's identity.

    ``None`` for the default exact index (run cache keys stay those of earlier versions).
    """
    if not dense_names:
        return None
    from retrodistill.evaluate.retrieval import savable_index
    from retrodistill.index.base import INDEXES

    INDEXES.build(index, dict(params or {}))  # an unknown backend, parameter or factory string fails here
    if index_dir is not None:
        collections = sum(len(e.collections) for e in entries)
        if len(dense_names) * collections != 1:
            raise ValueError(
                f"--index-dir holds one index: evaluate one dense model on one dataset with it "
                f"(given {len(dense_names)} dense model(s) and {collections} collection(s))"
            )
        savable_index(index)
    if index == DEFAULT_INDEX:
        return None
    return {"name": index, **dict(params or {})}


def evaluate_suite(
    models: Sequence[str],
    entries: Sequence[SuiteEntry],
    measures: Sequence[str] = DEFAULT_MEASURES,
    out_dir: str | os.PathLike[str] = "runs/eval",
    k: int = 1000,
    *,
    baseline: str | None = None,
    rerank: str | None = None,
    rerank_depth: int = 100,
    batch_size: int = 64,
    device: str | None = None,
    cache_folder: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    embedding_cache_dir: str | os.PathLike[str] | None = None,
    embedding_dtype: str = "float32",
    encoders: Mapping[str, Any] | None = None,
    index: str = "faiss-flat-ip",
    index_params: Mapping[str, Any] | None = None,
    index_dir: str | os.PathLike[str] | None = None,
    runs: Sequence[str] = (),
    alpha: float = 0.05,
    permutations: int = 10_000,
    seed: int = 0,
    show_progress: bool = True,
) -> SuiteResult:
    """Run every model on every dataset, score the runs, test against a baseline and write the tables.

    Args:
        models: model names (see the module docstring), in column order; unique. ``NAME=MODEL``
            labels the column ``NAME`` (tables, figures, folders, run tags) and records ``MODEL``.
        entries: datasets (:func:`retrodistill.data.registry.load_entry`), in row order; unique names.
        measures: ir-measures strings; binary ones use each entry's ``rel_threshold``.
        out_dir: where the files listed in the module docstring go.
        k: documents retrieved per query.
        baseline: a column label (a model name, or a reranked label); ``None`` for no tests.
        rerank: a cross-encoder to rerank every model's run with, adding a column per model;
            ``rerank_depth`` its depth.
        batch_size: texts per dense encoding batch.
        device: torch device for dense models and the reranker.
        cache_folder: the Hugging Face hub cache to load hub ids from.
        cache_dir: the run cache (default :func:`default_cache_dir`); ``use_cache=False`` ignores it.
        embedding_cache_dir: the corpus-embedding cache of dense models (default
            :func:`~retrodistill.data.embeddings.default_embedding_dir`); ``use_cache=False`` ignores
            it too. ``embedding_dtype``: ``"float32"`` or ``"float16"`` (half the disk, rounded vectors).
        runs: TREC run files to score as columns of their own, after the models: ``FILE`` (the column
            is named after the file, without its suffix) or ``NAME=FILE``. A run file answers one
            dataset: with ``runs``, ``entries`` holds one collection. Its run is scored as it is,
            the identical-id rule applied, not cut to ``k``.
        encoders: dense models already loaded, by model name (e.g. a teacher that holds its own
            embeddings, :class:`~retrodistill.teachers.bi_encoder.CachedTeacherEncoder`): used instead
            of loading that name; its runs are cached under the name's identity like any other.
        index, index_params: the dense index backend (an :data:`~retrodistill.index.base.INDEXES`
            name) and its parameters; checked before any work.
        index_dir: where the dense index is saved and reused (see the module docstring): one dense
            model, one collection.
        alpha, permutations, seed: significance level, randomization-test samples and its seed.
        show_progress: progress bars.
    """
    from retrodistill.evaluate.significance import compare_to_baseline

    if not models and not runs:
        raise ValueError("no models and no run files to evaluate")
    if not entries:
        raise ValueError("no datasets to evaluate")
    if runs and sum(len(e.collections) for e in entries) != 1:
        raise ValueError(
            f"a run file answers one dataset, but {sum(len(e.collections) for e in entries)} collections are "
            "given: pass one --beir, --dataset or --qrels with --run"
        )
    if models:
        no_corpus = [c.name for e in entries for c in e.collections if not len(c.corpus)]
        if no_corpus:
            raise ValueError(
                f"{', '.join(no_corpus)}: qrels without a corpus score run files only; "
                "to retrieve with a model pass a dataset (--beir or --dataset)"
            )
    for what, names in (("model", list(models)), ("dataset", [e.name for e in entries])):
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"{what} names must be unique; repeated: {', '.join(repeated)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    measures = tuple(measures)
    for entry in entries:
        parse_measures(measures, entry.rel_threshold)  # fail on a bad measure before any work
    parsed = [parse_model(m) for m in models]
    names = [name for _, name in parsed]
    specs = [ModelSpec(name, alias=alias) for alias, name in parsed]
    if rerank is not None:
        specs += [ModelSpec(name, rerank, rerank_depth, alias) for alias, name in parsed]
    specs += [run_file_spec(r) for r in runs]
    labels = [s.label for s in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"column names must be unique; repeated: {', '.join(repeated)} (name a run file NAME=FILE)")
    check_distinct_slugs(labels, "model")
    # A model's folder holds one folder per collection, and one per group for its pooled scores.
    folders = [c.name for e in entries for c in e.collections] + [e.name for e in entries if len(e.collections) > 1]
    check_distinct_slugs(folders, "dataset")
    if baseline is not None and baseline not in labels:
        raise ValueError(f"baseline {baseline!r} is not one of the models: {', '.join(labels)}")
    dense_names = [name for name in names if ModelSpec(name).kind == "dense"]
    index_identity = _check_index(index, index_params, index_dir, dense_names, entries)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = Path(out_dir)
    started = time.perf_counter()
    from retrodistill.data.embeddings import DTYPES, default_embedding_dir
    from retrodistill.data.registry import describe_rules

    if embedding_dtype not in DTYPES:
        raise ValueError(f"embedding_dtype must be one of {', '.join(DTYPES)}; got {embedding_dtype!r}")
    embedding_root = None
    if use_cache:
        embedding_root = Path(embedding_cache_dir) if embedding_cache_dir is not None else default_embedding_dir()
    result = SuiteResult(models={}, datasets={}, measures=measures, out_dir=out, rules=describe_rules(entries))
    result.warnings = [w for e in entries for w in e.warnings]
    identities = {name: model_identity(name, cache_folder) for name in {*names, *([rerank] if rerank else [])}}
    retrievers = Retrievers(
        batch_size=batch_size,
        device=device,
        cache_folder=cache_folder,
        show_progress=show_progress,
        embeddings=embedding_root,
        embedding_dtype=embedding_dtype,
        identities=identities,
        loaded=encoders,
        index=index,
        index_params=index_params,
        index_dir=None if index_dir is None else Path(index_dir),
    )
    if index_identity is not None:  # the run cache's key; Retrievers keeps the embedding cache's, without it
        for name in dense_names:
            identities[name] = {**identities[name], "index": index_identity}
    file_runs: dict[str, Run] = {}
    for spec in specs:
        if spec.run_file is not None:  # read before any retrieval: a bad line fails at once
            file_runs[spec.name] = read_run(spec.run_file)
            identities[spec.name] = run_file_identity(spec.run_file)
    evaluated = {c.name: c.for_evaluation() for e in entries for c in e.collections}

    for entry in entries:
        result.datasets[entry.name] = {
            "split": entry.split,
            "queries": sum(len(evaluated[c.name].queries) for c in entry.collections),
            "documents": sum(len(c.corpus) for c in entry.collections),
            "ignore_identical_ids": entry.ignore_identical_ids,
            "rel_threshold": entry.rel_threshold,
            "members": [c.name for c in entry.collections] if len(entry.collections) > 1 else None,
            "note": entry.note,
            "unknown_judgments": {c.name: c.unknown_judgments for c in entry.collections},
            "fingerprints": {c.name: c.fingerprints for c in entry.collections},
        }

    cache = RunCache(cache_root if use_cache else None)

    for spec in specs:
        result.models[spec.label] = {
            **spec_identity(spec, identities),
            "id": spec.name,
            "kind": spec.kind,
            "rerank": None if spec.rerank is None else {"model": spec.rerank, "depth": spec.rerank_depth},
            "slug": slug(spec.label),
        }
        result.results[spec.label] = {}
        result.per_query[spec.label] = {}
        result.per_query_paths[spec.label] = {}
        for entry in entries:
            member_scores = []
            pooled: dict[str, dict[str, float]] = {}
            for member in entry.collections:
                collection = evaluated[member.name]  # every judged query, judgments to absent documents too
                if spec.run_file is not None:
                    run, self_hits = file_run(
                        file_runs[spec.name], spec.run_file, collection, entry.ignore_identical_ids
                    )
                else:
                    run, self_hits = post_filtered_run(
                        spec, collection, entry.ignore_identical_ids, k, retrievers, cache, identities
                    )
                if not entry.identical_ids_given and not entry.ignore_identical_ids:
                    warning = self_hit_warning(spec.label, collection.name, self_hits, len(collection.queries))
                    if warning is not None:
                        result.warnings.append(warning)
                metrics = compute_metrics(collection.qrels, run, measures, rel_threshold=entry.rel_threshold)
                member_scores.append(metrics.aggregate)
                prefix = f"{collection.name.split('/', 1)[1]}/" if len(entry.collections) > 1 else ""
                pooled.update({prefix + qid: values for qid, values in metrics.per_query.items()})
                folder = out / "runs" / slug(spec.label) / slug(collection.name)
                write_run(folder / "run.trec", run, tag=run_tag(spec.alias or spec.name))
                write_metrics_json(
                    folder / "metrics.json",
                    metrics,
                    {"dataset": collection.name, "split": collection.split, "model": spec.label, "k": k},
                )
            aggregate = _mean(member_scores, measures)
            result.results[spec.label][entry.name] = aggregate
            result.per_query[spec.label][entry.name] = pooled
            if len(entry.collections) > 1:  # the group row's pooled per-query scores, for tests and plots
                from retrodistill.evaluate.metrics import MetricResult

                path = out / "runs" / slug(spec.label) / slug(entry.name) / "metrics.json"
                write_metrics_json(
                    path,
                    MetricResult(aggregate, pooled, measures),
                    {"dataset": entry.name, "split": entry.split, "model": spec.label, "members": len(member_scores)},
                )
            rel = (
                Path("runs")
                / slug(spec.label)
                / slug(entry.name if len(entry.collections) > 1 else entry.collections[0].name)
            )
            result.per_query_paths[spec.label][entry.name] = (rel / "metrics.json").as_posix()
        result.results[spec.label]["mean"] = _mean([result.results[spec.label][e.name] for e in entries], measures)

    for spec in specs:  # what each dense model loaded here ran with (none when every run was cached)
        if spec.name in retrievers.facts:
            result.models[spec.label]["loaded"] = retrievers.facts[spec.name]
    result.cache_hits, result.cache_misses = cache.hits, cache.misses
    result.embedding_shards = {"read": retrievers.shards_read, "encoded": retrievers.shards_encoded}
    if baseline is not None:
        result.baseline = baseline
        result.alpha = alpha
        result.significance = compare_to_baseline(
            result.per_query, baseline, measures, alpha=alpha, n_samples=permutations, seed=seed
        )

    result.wall_time_s = time.perf_counter() - started
    write_text_atomic(out / "results.md", result.to_markdown())
    write_text_atomic(out / "results.csv", result.to_csv())
    write_text_atomic(out / "results.tex", results_latex(result.to_json()))
    write_json_atomic(out / "results.json", result.to_json())
    write_manifest(
        out,
        {
            "stage": "evaluate",
            "config": {
                "models": list(models),
                "k": k,
                "batch_size": batch_size,
                "device": device,
                "baseline": baseline,
                "rerank": rerank,
                "rerank_depth": rerank_depth,
                "index": {"name": index, "params": dict(index_params or {})},
                "index_dir": None if index_dir is None else str(index_dir),
                "alpha": alpha,
                "permutations": permutations,
                "seed": seed,
            },
            "models": result.models,
            "measures": list(measures),
            "inputs": {
                f"{c.name}/{key}": fp for e in entries for c in e.collections for key, fp in c.fingerprints.items()
            },
            "datasets": {
                name: {k_: v for k_, v in d.items() if k_ != "fingerprints"} for name, d in result.datasets.items()
            },
            "cache": {
                "dir": str(cache_root) if use_cache else None,
                "hits": result.cache_hits,
                "misses": result.cache_misses,
                "embeddings": {
                    "dir": None if embedding_root is None else str(embedding_root),
                    "dtype": embedding_dtype,
                    "shards": result.embedding_shards,
                },
            },
            "wall_time_s": round(result.wall_time_s, 3),
        },
    )
    return result
